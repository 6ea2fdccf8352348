"""mini-MIAS mammograms from a user folder (paper §V-A, docs/design.md#data).

The folder holds 322 PGM (P5, 1024x1024, 8-bit) images ``mdbNNN.pgm`` and ``Info.txt``, whose rows
``mdbNNN <tissue> <class> [<severity> [<x> <y> <radius>]]`` list one abnormality each. Quirks we
tolerate: free text before and after the table (rows are found with ``^mdb\\d{3}``), NORM rows with
trailing spaces, abnormality rows without coordinates, ``*NOTE 3*`` in place of coordinates, and
images listed on several rows. As in the paper, a *row* is a sample (330 rows: 54 malignant,
69 benign, 207 normal) and the paper's split is 42/57/181 train, 12/12/26 test
(malignant/benign/normal). Rows of the same image always stay on the same side of the split, so no
image is in both.

The protocol of record is patient-grouped, stratified k-fold cross-validation (:func:`assign_folds`):
the database lists films in pairs, the right (odd number) and left (even number) breast of one woman
(Info.txt's note 1; in the public copy all 161 pairs share their tissue type and show opposite
breasts), so ``mdb(2k-1)`` and ``mdb(2k)`` are patient ``k`` and stay in one fold. The clinical task
(:data:`pgsl.config.TASKS`) sets the labels: ``three-class``, ``abnormal`` (normal vs any
abnormality) or ``malignant`` (benign vs malignant, abnormal rows only). Each film may be prepared
first (:mod:`pgsl.data.mammo`: background and label removal, orientation, CLAHE).
"""

from __future__ import annotations

import random
import re
from collections import defaultdict
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from pgsl.config import TASKS, DataConfig
from pgsl.data import mammo
from pgsl.data.base import DataError, Dataset, ImageSet
from pgsl.data.imageops import square_resize

CLASSES = TASKS["three-class"]
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


def find_info(folder: Path) -> Path:
    """The folder's ``Info.txt``, whatever its case."""
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


def task_label(row: InfoRow, task: str) -> int | None:
    """The row's label index in ``TASKS[task]``; None when the row is not a sample of the task
    (a normal row under ``malignant``)."""
    label = row.label
    if task == "three-class":
        return CLASSES.index(label)
    if task == "abnormal":
        return 0 if label == "normal" else 1
    if task == "malignant":
        return None if label == "normal" else TASKS[task].index(label)
    raise DataError(f"unknown MIAS task {task!r}; choose one of {', '.join(TASKS)}")


def patient(ref: str) -> int:
    """The woman a film belongs to: ``mdb001`` and ``mdb002`` are patient 1 (right and left
    breast), ``mdb003`` and ``mdb004`` patient 2, and so on."""
    return (int(ref[3:]) + 1) // 2


def assign_folds(rows: list[InfoRow], labels: list[int], folds: int, seed: int) -> list[int]:
    """The fold (0..folds-1) of each row: patient-grouped (:func:`patient`) and stratified by
    ``labels``, scikit-learn's ``StratifiedGroupKFold`` shuffled with ``seed``."""
    import warnings

    from sklearn.model_selection import StratifiedGroupKFold

    groups = [patient(r.ref) for r in rows]
    if len(set(groups)) < folds:
        raise DataError(f"{len(set(groups))} patients cannot fill {folds} folds")
    fold_of = np.zeros(len(rows), dtype=np.int64)
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():  # a class rarer than `folds` patients: said in the fold counts
        warnings.filterwarnings("ignore", message="The least populated class")
        for k, (_, test) in enumerate(splitter.split(np.zeros(len(rows)), labels, groups)):
            fold_of[test] = k
    return [int(f) for f in fold_of]


def task_split(rows: list[InfoRow], *, task: str, folds: int, fold: int, cv_seed: int, seed: int,
               localised: bool) -> tuple[list[InfoRow], list[InfoRow]]:
    """(train, test) rows of the task. ``folds`` 0: the paper's seeded split (:func:`split_rows`)
    with the task's rows kept; else fold ``fold`` of the patient-grouped stratified k-fold as test.
    ``localised``: only normal rows and abnormal rows with coordinates are samples (ROI protocol)."""
    if folds == 0:
        train, test = split_rows(rows, seed)
        keep = [r for r in rows if task_label(r, task) is not None]
        train = [r for r in train if r in keep]
        test = [r for r in test if r in keep]
        return train, test
    usable = [r for r in rows if task_label(r, task) is not None
              and (not localised or r.abnormality == "NORM" or abnormality(r) is not None)]
    where = assign_folds(usable, [task_label(r, task) for r in usable], folds, cv_seed)  # type: ignore[misc]
    return ([r for r, f in zip(usable, where, strict=True) if f != fold],
            [r for r, f in zip(usable, where, strict=True) if f == fold])


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
                   ref: str, mask: np.ndarray | None = None, *, scan: bool = False) -> list[tuple[int, int]]:
    """``n`` window centres drawn uniformly among the positions whose ``size`` window lies in the
    image and whose neighbourhood (8x8 blocks) is breast tissue: inside ``mask`` (the segmented
    breast, :func:`pgsl.data.mammo.breast_mask`) where given, else brighter than the background.
    With a mask, centres whose whole window is breast are preferred when there are any; with
    ``scan``, every centre whose window is at least half breast (as ``pgsl predict`` scans)."""
    h, w = image.shape
    b = 8
    if mask is not None:
        from scipy import ndimage

        fraction = mask[: h - h % b, : w - w % b].reshape(h // b, b, w // b, b).mean(axis=(1, 3))
        if scan:
            tissue = ndimage.uniform_filter(fraction, size=max(1, size // b), mode="constant") >= 0.5
        else:
            blocks = fraction > 0.99
            inner = ndimage.binary_erosion(blocks, np.ones((2 * (size // (2 * b)) + 1,) * 2, dtype=bool))
            tissue = inner if inner.any() else blocks
    else:
        means = image[: h - h % b, : w - w % b].reshape(h // b, b, w // b, b).mean(axis=(1, 3))
        threshold = max(20.0, 0.5 * float(np.median(means[means > 10]))) if (means > 10).any() else 20.0
        tissue = means > threshold
    rows, cols = np.nonzero(tissue)
    centres = [(int(r) * b + b // 2, int(c) * b + b // 2) for r, c in zip(rows, cols, strict=True)]
    half = size // 2
    inside = [(r, c) for r, c in centres if half <= r < h - half and half <= c < w - half]
    if not inside:
        raise DataError(f"MIAS image {ref}: no breast tissue found for a {size}-pixel patch")
    picks = rng.choice(len(inside), size=n, replace=len(inside) < n)
    return [inside[int(i)] for i in picks]


@dataclass(frozen=True)
class Preparation:
    """How each film is prepared before sampling (:func:`pgsl.data.mammo.prepare`)."""

    segment: bool = False
    orient: bool = False
    clahe: float = 0.0

    @classmethod
    def of(cls, data: DataConfig) -> Preparation:
        return cls(data.segment, data.orient, data.clahe)

    def apply(self, image: np.ndarray) -> mammo.Prepared:
        """One ``(H, W)`` uint8 film prepared (unchanged, mask all True, when every step is off)."""
        return mammo.prepare(image, segment=self.segment, orient=self.orient, clahe=self.clahe)


def whole_image(film: mammo.Prepared, size: int, crop_breast: bool) -> np.ndarray:
    """A whole-protocol sample: the prepared film (its breast's bounding box with ``crop_breast``)
    zero-padded to a square and resized to ``size``."""
    image = film.image
    if crop_breast:
        top, bottom, left, right = mammo.bounding_box(film.mask)
        image = image[top:bottom, left:right]
    return square_resize(image, size)


@lru_cache(maxsize=2)
def _films(folder: str, refs: tuple[str, ...], prep: Preparation) -> dict[str, mammo.Prepared]:
    """Every film of ``refs`` read and prepared once per process (a CV's folds share them)."""
    return {ref: prep.apply(read_pgm(Path(folder) / f"{ref}.pgm")) for ref in refs}


def lesion_centre(row: InfoRow, film: mammo.Prepared) -> tuple[int, int] | None:
    """The row's abnormality centre as ``(row, column)`` of the prepared film; None without one."""
    found = abnormality(row)
    if found is None:
        return None
    r, c = array_index(found[0], found[1], film.image.shape[0])
    return r, mammo.flip_column(c, film.image.shape[1], film.flipped)


def _roi_samples(rows: list[InfoRow], films: dict[str, mammo.Prepared], *, train: bool, size: int,
                 patches: int, jitter: int, image_size: int, seed: int,
                 task: str, scan: bool = False) -> tuple[list[np.ndarray], list[int]]:
    out, labels = [], []
    for row in rows:
        film = films[row.ref]
        label = task_label(row, task)
        if label is None:
            continue
        rng = np.random.default_rng([seed, int(row.ref[3:]), 1 if train else 0])
        centre = lesion_centre(row, film)
        if row.abnormality == "NORM":
            mask = film.mask if not film.mask.all() else None
            centres = tissue_centres(film.image, patches if train else 1, size, rng, row.ref, mask,
                                     scan=scan and mask is not None)
        elif centre is None:
            continue  # an abnormality without coordinates cannot be localised
        else:
            r, c = centre
            if train:
                shifts = rng.integers(-jitter, jitter + 1, size=(patches, 2))
                centres = [(r + int(dr), c + int(dc)) for dr, dc in shifts]
            else:
                centres = [(r, c)]
        for r, c in centres:
            out.append(square_resize(crop(film.image, r, c, size), image_size))
            labels.append(label)
    return out, labels


def _stack(arrays: list[np.ndarray], labels: list[int], image_size: int) -> ImageSet:
    x = (torch.from_numpy(np.stack(arrays)).unsqueeze(1) if arrays
         else torch.zeros(0, 1, image_size, image_size, dtype=torch.uint8))
    return ImageSet(x, torch.tensor(labels, dtype=torch.int64))


def load(data_dir: str | None = None, image_size: int = 256, seed: int = 0, *, protocol: str = "whole",
         roi_size: int = 128, roi_patches: int = 8, roi_jitter: int = 16, task: str = "three-class",
         folds: int = 0, fold: int = 0, cv_seed: int = 0, prep: Preparation = Preparation(),
         crop_breast: bool = False, roi_normal: str = "interior") -> Dataset:
    """Load MIAS from ``data_dir`` for ``task`` (classes ``TASKS[task]``).

    ``protocol="whole"``: one sample per Info.txt row, the whole film (its breast's bounding box
    with ``crop_breast``) resized to ``image_size`` (the paper's). ``"roi"``: patches of
    ``roi_size`` original pixels resized to ``image_size``: around each abnormality's centre
    (``roi_patches`` crops jittered by up to ``roi_jitter`` pixels per training row, the centred
    crop per test row; rows without coordinates are left out) and of breast tissue from the normal
    images (``roi_patches`` per training image, one seeded crop per test image; with a segmented
    film, ``roi_normal`` "interior" windows wholly inside the breast, "scan" any window at least
    half breast).

    The split: ``folds`` 0, the paper's seeded split; else fold ``fold`` of ``folds`` (drawn with
    ``cv_seed``, patient-grouped and stratified, :func:`task_split`) is the test split. An image's
    patches never straddle it. ``prep``: how each film is prepared first."""
    if not data_dir:
        raise DataError("MIAS is not redistributable: pass --data-dir to your mini-MIAS folder")
    folder = Path(data_dir)
    if not folder.is_dir():
        raise DataError(f"MIAS folder {folder} not found")
    if protocol not in ("whole", "roi"):
        raise DataError(f"unknown MIAS protocol {protocol!r}; choose whole or roi")
    if task not in TASKS:
        raise DataError(f"unknown MIAS task {task!r}; choose one of {', '.join(TASKS)}")
    rows = parse_info(find_info(folder))
    train_rows, test_rows = task_split(rows, task=task, folds=folds, fold=fold, cv_seed=cv_seed, seed=seed,
                                       localised=protocol == "roi")
    films = _films(str(folder.resolve()), tuple(sorted({r.ref for r in train_rows + test_rows})), prep)
    classes = TASKS[task]
    if protocol == "roi":
        sets = []
        for part, is_train in ((train_rows, True), (test_rows, False)):
            arrays, labels = _roi_samples(part, films, train=is_train, size=roi_size, patches=roi_patches,
                                          jitter=roi_jitter, image_size=image_size, seed=seed, task=task,
                                          scan=roi_normal == "scan")
            sets.append(_stack(arrays, labels, image_size))
        return Dataset("mias", classes, sets[0], sets[1])

    cache: dict[str, np.ndarray] = {}

    def image_set(part: list[InfoRow]) -> ImageSet:
        arrays = []
        for row in part:
            if row.ref not in cache:
                cache[row.ref] = whole_image(films[row.ref], image_size, crop_breast)
            arrays.append(cache[row.ref])
        return _stack(arrays, [task_label(r, task) for r in part], image_size)  # type: ignore[misc]

    return Dataset("mias", classes, image_set(train_rows), image_set(test_rows))
