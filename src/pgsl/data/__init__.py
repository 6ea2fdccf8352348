"""Datasets: one module per source, all returning :class:`pgsl.data.base.Dataset`.

:data:`LOADERS` is the registry of dataset names. Importing this package loads no dataset module
and no torch (``pgsl --help`` lists the names without them): each loader imports its module when
called, and the tensor types (:class:`Dataset`, :class:`ImageSet`, ...) load on first use.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pgsl.config import DataConfig

if TYPE_CHECKING:
    from pgsl.data.base import DataError, Dataset, ImageSet, batches, to_float


def _mnist(cfg: DataConfig) -> Dataset:
    from pgsl.data import mnist

    return mnist.load(cfg.data_dir)


def _fashion(cfg: DataConfig) -> Dataset:
    from pgsl.data import fashion

    return fashion.load(cfg.data_dir)


def _mias(cfg: DataConfig) -> Dataset:
    from pgsl.data import mias

    return mias.load(cfg.data_dir, cfg.image_size, protocol=cfg.protocol, roi_size=cfg.roi_size,
                     roi_patches=cfg.roi_patches, roi_jitter=cfg.roi_jitter, task=cfg.task,
                     folds=cfg.folds, fold=cfg.fold, cv_seed=cfg.cv_seed, prep=mias.Preparation.of(cfg),
                     crop_breast=cfg.crop_breast, roi_normal=cfg.roi_normal)


def _dicom(cfg: DataConfig) -> Dataset:
    from pgsl.data import dicom

    return dicom.load(cfg.data_dir, cfg.image_size)


LOADERS: dict[str, Callable[[DataConfig], Dataset]] = {
    "mnist": _mnist,
    "fashion-mnist": _fashion,
    "mias": _mias,
    "cbis-ddsm-sample": _dicom,
}

# datasets of large images that the loader zero-pads to a square and resizes to ``data.image_size``
# (:func:`pgsl.data.imageops.square_resize`); the others are used at their native size
RESIZED = frozenset({"mias", "cbis-ddsm-sample"})

_BASE = ("DataError", "Dataset", "ImageSet", "batches", "to_float")


def __getattr__(name: str) -> Any:
    if name in _BASE:
        from pgsl.data import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load_dataset(cfg: DataConfig, *, seed: int = 0) -> Dataset:
    """Load ``cfg.dataset`` and apply the subset limits (a seeded train subset, the first N test)."""
    import torch

    from pgsl.data.base import DataError, Dataset

    if cfg.dataset not in LOADERS:
        raise DataError(f"unknown dataset {cfg.dataset!r}; choose one of {', '.join(LOADERS)}")
    ds = LOADERS[cfg.dataset](cfg)
    train, test = ds.train, ds.test
    if cfg.limit_train is not None and cfg.limit_train < len(train):
        g = torch.Generator().manual_seed(seed)
        train = train.subset(torch.randperm(len(train), generator=g)[: cfg.limit_train])
    if cfg.limit_test is not None and cfg.limit_test < len(test):
        test = test.subset(slice(0, cfg.limit_test))
    return Dataset(ds.name, ds.classes, train, test)


__all__ = ["LOADERS", "RESIZED", "DataError", "Dataset", "ImageSet", "batches", "load_dataset", "to_float"]
