"""Fashion-MNIST from Debian's ``dataset-fashion-mnist`` package (IDX files), docs/design.md#data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pgsl.data.base import DataError, Dataset, ImageSet
from pgsl.data.idx import read_idx

DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")
CLASSES = ("t-shirt/top", "trouser", "pullover", "dress", "coat",
           "sandal", "shirt", "sneaker", "bag", "ankle boot")
FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}


def _find(folder: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem):
        if (folder / name).is_file():
            return folder / name
    raise DataError(f"Fashion-MNIST file {folder / (stem + '.gz')} is missing")


def load(data_dir: str | None = None, image_size: int | None = None) -> Dataset:
    folder = Path(data_dir) if data_dir else DEFAULT_DIR
    if not folder.is_dir():
        raise DataError(
            f"Fashion-MNIST folder {folder} not found. Install it with "
            "`apt-get install dataset-fashion-mnist`, or pass --data-dir to a folder of the IDX files."
        )
    arrays = {key: read_idx(_find(folder, stem)) for key, stem in FILES.items()}
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise DataError(f"{folder}: {split} images {x.shape} and labels {y.shape} do not match")
        if y.max(initial=0) >= len(CLASSES):
            raise DataError(f"{folder}: {split} labels go up to {y.max()}, expected 0..9")

    def image_set(split: str) -> ImageSet:
        x = torch.from_numpy(arrays[f"x_{split}"].astype(np.uint8, copy=True))
        return ImageSet(x.unsqueeze(1), torch.from_numpy(arrays[f"y_{split}"].astype(np.int64)))

    return Dataset("fashion-mnist", CLASSES, image_set("train"), image_set("test"))
