"""Datasets: one module per source, all returning :class:`pgsl.data.base.Dataset`."""

from __future__ import annotations

from collections.abc import Callable

import torch

from pgsl.config import DataConfig
from pgsl.data import dicom, fashion, mias, mnist
from pgsl.data.base import DataError, Dataset, ImageSet, batches, to_float

LOADERS: dict[str, Callable[..., Dataset]] = {
    "mnist": lambda cfg: mnist.load(cfg.data_dir),
    "fashion-mnist": lambda cfg: fashion.load(cfg.data_dir),
    "mias": lambda cfg: mias.load(
        cfg.data_dir, cfg.image_size, protocol=cfg.protocol, roi_size=cfg.roi_size,
        roi_patches=cfg.roi_patches, roi_jitter=cfg.roi_jitter, task=cfg.task, folds=cfg.folds,
        fold=cfg.fold, cv_seed=cfg.cv_seed,
        prep=mias.Preparation.of(cfg), crop_breast=cfg.crop_breast,
        roi_normal=cfg.roi_normal),
    "cbis-ddsm-sample": lambda cfg: dicom.load(cfg.data_dir, cfg.image_size),
}

# datasets of large images that the loader zero-pads to a square and resizes to ``data.image_size``
# (:func:`pgsl.data.imageops.square_resize`); the others are used at their native size
RESIZED = frozenset({"mias", "cbis-ddsm-sample"})


def load_dataset(cfg: DataConfig, *, seed: int = 0) -> Dataset:
    """Load ``cfg.dataset`` and apply the subset limits (a seeded train subset, the first N test)."""
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
