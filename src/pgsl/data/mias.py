"""mini-MIAS mammograms from a user folder (paper §V-A, DESIGN §4).

The folder holds 322 PGM (P5, 1024x1024, 8-bit) images ``mdbNNN.pgm`` and ``Info.txt``, whose rows
``mdbNNN <tissue> <class> [<severity> [<x> <y> <radius>]]`` list one abnormality each. Quirks we
tolerate: free text before and after the table (rows are found with ``^mdb\\d{3}``), NORM rows with
trailing spaces, abnormality rows without coordinates, ``*NOTE 3*`` in place of coordinates, and
images listed on several rows. As in the paper, a *row* is a sample (330 rows: 54 malignant,
69 benign, 207 normal) and the split is 42/57/181 train, 12/12/26 test (malignant/benign/normal).
Rows of the same image always stay on the same side of the split, so no image is in both.
"""

from __future__ import annotations

import random
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from pgsl.data.base import DataError, Dataset, ImageSet
from pgsl.data.imageops import square_resize

CLASSES = ("normal", "benign", "malignant")
# the paper's per-row counts (train, test) for each class
PAPER_SPLIT = {"malignant": (42, 12), "benign": (57, 12), "normal": (181, 26)}
_ROW = re.compile(r"^(mdb\d{3})\s+([FGD])\s+([A-Z]+)(?:\s+([BM]))?(.*)$")


@dataclass(frozen=True)
class InfoRow:
    ref: str
    tissue: str
    abnormality: str
    severity: str | None
    rest: str

    @property
    def label(self) -> str:
        if self.abnormality == "NORM":
            return "normal"
        if self.severity == "B":
            return "benign"
        if self.severity == "M":
            return "malignant"
        raise DataError(f"Info.txt row {self.ref}: abnormality {self.abnormality} without B/M severity")


def parse_info(path: Path) -> list[InfoRow]:
    """Parse Info.txt; every line starting with ``mdbNNN`` must be a valid row."""
    try:
        text = path.read_text(encoding="latin-1")
    except FileNotFoundError as e:
        raise DataError(f"MIAS index file {path} is missing") from e
    rows = []
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not re.match(r"^mdb\d{3}", line):
            continue
        m = _ROW.match(line)
        if not m:
            raise DataError(f"{path}:{lineno}: cannot parse MIAS row {line!r}")
        rows.append(InfoRow(m[1], m[2], m[3], m[4], m[5].strip()))
    if not rows:
        raise DataError(f"{path}: no rows starting with mdbNNN found; is this the MIAS Info.txt?")
    return rows


def _find_info(folder: Path) -> Path:
    for candidate in folder.iterdir():
        if candidate.name.lower() == "info.txt":
            return candidate
    raise DataError(f"MIAS index file {folder / 'Info.txt'} is missing")


def read_pgm(path: Path) -> np.ndarray:
    """One 8-bit grey PGM as a (H, W) uint8 array; a clear error if missing or corrupt."""
    if not path.is_file():
        raise DataError(f"MIAS image {path} is missing")
    try:
        with Image.open(path) as im:
            if im.format != "PPM" or im.mode not in ("L", "I", "I;16", "I;16B"):
                raise DataError(f"{path}: expected a grey PGM image, got {im.format} {im.mode}")
            im.load()
            arr = np.asarray(im)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        if isinstance(e, DataError):
            raise
        raise DataError(f"{path}: corrupt or unreadable PGM ({e})") from e
    if arr.dtype != np.uint8:  # 16-bit PGM: rescale to 8 bits
        arr = (arr.astype(np.float64) / max(1, int(arr.max())) * 255).astype(np.uint8)
    return arr


def split_rows(rows: list[InfoRow], seed: int = 0) -> tuple[list[InfoRow], list[InfoRow]]:
    """Seeded split with the paper's per-row test counts, keeping each image's rows together."""
    by_image: dict[str, list[InfoRow]] = defaultdict(list)
    for row in rows:
        by_image[row.ref].append(row)
    per_class: dict[str, int] = defaultdict(int)
    for row in rows:
        per_class[row.label] += 1
    paper_total = {k: a + b for k, (a, b) in PAPER_SPLIT.items()}
    target = {k: round(n * PAPER_SPLIT[k][1] / paper_total[k]) for k, n in per_class.items()}
    images = sorted(by_image)
    random.Random(seed).shuffle(images)
    test_counts: dict[str, int] = defaultdict(int)
    train, test = [], []
    for ref in images:
        group = by_image[ref]
        need: dict[str, int] = defaultdict(int)
        for row in group:
            need[row.label] += 1
        if all(test_counts[k] + v <= target[k] for k, v in need.items()):
            test.extend(group)
            for k, v in need.items():
                test_counts[k] += v
        else:
            train.extend(group)
    return train, test


def abnormality(row: InfoRow) -> tuple[int, int, int] | None:
    """The row's ``(x, y, radius)`` as Info.txt gives them (pixels of the 1024x1024 image, origin
    at the bottom-left corner); None for a normal row or one without coordinates."""
    parts = row.rest.split()
    if row.abnormality == "NORM" or len(parts) < 3 or not all(p.isdigit() for p in parts[:3]):
        return None
    x, y, radius = (int(p) for p in parts[:3])
    return x, y, radius


def array_index(x: int, y: int, height: int) -> tuple[int, int]:
    """Info.txt's ``(x, y)`` as ``(row, column)`` of the image array. The MIAS documentation puts
    the origin at the bottom-left corner; array rows count from the top."""
    return height - 1 - y, x


def crop(image: np.ndarray, row: int, col: int, size: int) -> np.ndarray:
    """The ``size x size`` window centred on ``(row, col)`` (moved into the image if outside it);
    what falls outside the image is background (0)."""
    row, col = min(max(row, 0), image.shape[0] - 1), min(max(col, 0), image.shape[1] - 1)
    padded = np.pad(image, size)
    top, left = row + size - size // 2, col + size - size // 2
    return padded[top:top + size, left:left + size]


def tissue_centres(image: np.ndarray, n: int, size: int, rng: np.random.Generator,
                   ref: str) -> list[tuple[int, int]]:
    """``n`` window centres drawn uniformly among the positions whose ``size`` window lies in the
    image and whose neighbourhood (8x8 blocks) is breast tissue, not the dark background."""
    h, w = image.shape
    b = 8
    blocks = image[: h - h % b, : w - w % b].reshape(h // b, b, w // b, b).mean(axis=(1, 3))
    threshold = max(20.0, 0.5 * float(np.median(blocks[blocks > 10]))) if (blocks > 10).any() else 20.0
    rows, cols = np.nonzero(blocks > threshold)
    centres = [(int(r) * b + b // 2, int(c) * b + b // 2) for r, c in zip(rows, cols, strict=True)]
    half = size // 2
    inside = [(r, c) for r, c in centres if half <= r < h - half and half <= c < w - half]
    if not inside:
        raise DataError(f"MIAS image {ref}: no breast tissue found for a {size}-pixel patch")
    picks = rng.choice(len(inside), size=n, replace=len(inside) < n)
    return [inside[int(i)] for i in picks]


def _roi_samples(rows: list[InfoRow], images: dict[str, np.ndarray], *, train: bool, size: int,
                 patches: int, jitter: int, image_size: int, seed: int) -> tuple[list[np.ndarray], list[int]]:
    out, labels = [], []
    for row in rows:
        image = images[row.ref]
        rng = np.random.default_rng([seed, int(row.ref[3:]), 1 if train else 0])
        found = abnormality(row)
        if row.abnormality == "NORM":
            centres = tissue_centres(image, patches if train else 1, size, rng, row.ref)
        elif found is None:
            continue  # an abnormality without coordinates cannot be localised
        else:
            r, c = array_index(found[0], found[1], image.shape[0])
            if train:
                shifts = rng.integers(-jitter, jitter + 1, size=(patches, 2))
                centres = [(r + int(dr), c + int(dc)) for dr, dc in shifts]
            else:
                centres = [(r, c)]
        for r, c in centres:
            out.append(square_resize(crop(image, r, c, size), image_size))
            labels.append(CLASSES.index(row.label))
    return out, labels


def load(data_dir: str | None = None, image_size: int = 256, seed: int = 0, *, protocol: str = "whole",
         roi_size: int = 128, roi_patches: int = 8, roi_jitter: int = 16) -> Dataset:
    """Load MIAS from ``data_dir``. ``protocol="whole"``: one sample per Info.txt row, the whole
    image resized to ``image_size`` (the paper's). ``"roi"``: patches of ``roi_size`` original
    pixels resized to ``image_size``: around each abnormality's centre (``roi_patches`` crops
    jittered by up to ``roi_jitter`` pixels per training row, the centred crop per test row; rows
    without coordinates are left out) and of breast tissue from the normal images (``roi_patches``
    per training image, one seeded crop per test image). The split is the same in both: an image's
    patches never straddle it."""
    if not data_dir:
        raise DataError("MIAS is not redistributable: pass --data-dir to your mini-MIAS folder")
    folder = Path(data_dir)
    if not folder.is_dir():
        raise DataError(f"MIAS folder {folder} not found")
    if protocol not in ("whole", "roi"):
        raise DataError(f"unknown MIAS protocol {protocol!r}; choose whole or roi")
    rows = parse_info(_find_info(folder))
    if protocol == "roi":
        train_rows, test_rows = split_rows(rows, seed)
        originals = {r.ref: read_pgm(folder / f"{r.ref}.pgm") for r in rows}
        sets = []
        for part, is_train in ((train_rows, True), (test_rows, False)):
            arrays, labels = _roi_samples(part, originals, train=is_train, size=roi_size, patches=roi_patches,
                                          jitter=roi_jitter, image_size=image_size, seed=seed)
            x = (torch.from_numpy(np.stack(arrays)).unsqueeze(1) if arrays
                 else torch.zeros(0, 1, image_size, image_size, dtype=torch.uint8))
            sets.append(ImageSet(x, torch.tensor(labels, dtype=torch.int64)))
        return Dataset("mias", CLASSES, sets[0], sets[1])
    cache: dict[str, np.ndarray] = {}

    def image_set(part: list[InfoRow]) -> ImageSet:
        arrays = []
        for row in part:
            if row.ref not in cache:
                cache[row.ref] = square_resize(read_pgm(folder / f"{row.ref}.pgm"), image_size)
            arrays.append(cache[row.ref])
        x = torch.from_numpy(np.stack(arrays)).unsqueeze(1) if arrays else torch.zeros(
            0, 1, image_size, image_size, dtype=torch.uint8)
        y = torch.tensor([CLASSES.index(r.label) for r in part], dtype=torch.int64)
        return ImageSet(x, y)

    train, test = split_rows(rows, seed)
    return Dataset("mias", CLASSES, image_set(train), image_set(test))
