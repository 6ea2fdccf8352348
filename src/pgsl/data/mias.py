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


def load(data_dir: str | None = None, image_size: int = 256, seed: int = 0) -> Dataset:
    """Load MIAS from ``data_dir``, resized to ``image_size`` (the paper clips to 1024)."""
    if not data_dir:
        raise DataError("MIAS is not redistributable: pass --data-dir to your mini-MIAS folder")
    folder = Path(data_dir)
    if not folder.is_dir():
        raise DataError(f"MIAS folder {folder} not found")
    rows = parse_info(_find_info(folder))
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
