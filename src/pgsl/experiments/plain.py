"""The plain centralised CNN of Table II: the same 7 conv + 2 FC layers, trained in one place on raw
images (no cut, no defence), with the same optimiser and settings as the split runs.

Also trains it on a set of *reconstructed* images (the paper's DLG / iDLG / DCGAN rows of Table II:
how useful is what an inversion attack recovered to someone who wants to learn the task).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pgsl.checkpoint import load_checkpoint, save_checkpoint
from pgsl.client.segment import ClientSegment
from pgsl.config import Config
from pgsl.data import Dataset, ImageSet, to_float
from pgsl.data.augment import augment
from pgsl.data.base import epoch_order
from pgsl.experiments.cache import check
from pgsl.server.streams import StreamTail

log = logging.getLogger(__name__)


class PlainCNN(nn.Module):
    """conv1-2 (the client segment's layers) followed by conv3-7 + 2 FC (a stream's layers)."""

    def __init__(self, cfg: Config, channels: int, num_classes: int) -> None:
        super().__init__()
        m = cfg.model
        self.head = ClientSegment(channels, m.width)
        self.tail = StreamTail(m.width, num_classes, width=m.width, dropout=m.dropout, pool=m.pool,
                               hidden=m.hidden)

    def forward(self, x: Tensor) -> Tensor:
        return self.tail(self.head(x))


def fit(model: nn.Module, images: Tensor, labels: Tensor, cfg: Config, *, epochs: int | None = None,
        seed: int = 0) -> None:
    """Adam with the run's learning rate and weight decay, on float images ``(N, C, H, W)``; with
    the run's ``train.balanced`` sampling and ``train.augment`` augmentation, as a split run."""
    t = cfg.train
    opt = torch.optim.Adam(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(t.epochs if epochs is None else epochs):
        for idx in epoch_order(labels.cpu(), g, balanced=t.balanced).split(t.batch_size):
            if len(idx) < 2:  # BatchNorm needs two samples
                continue
            idx = idx.to(images.device)
            x = augment(images[idx], g) if t.augment else images[idx]
            loss = F.cross_entropy(model(x), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    model.eval()


@torch.no_grad()
def accuracy(model: nn.Module, images: Tensor, labels: Tensor, batch_size: int = 500) -> float:
    model.eval()
    correct = sum(int((model(x).argmax(1) == y).sum())
                  for x, y in zip(images.split(batch_size), labels.split(batch_size), strict=True))
    return correct / max(1, len(labels))


def scored_on_test(cfg: Config, dataset: Dataset, path: Path, device: torch.device) -> dict[str, Any]:
    """The plain CNN trained on ``dataset.train`` (cached in ``path``, :func:`plain_cnn`) and its
    :func:`pgsl.metrics.classification_metrics` on ``dataset.test``."""
    from pgsl.metrics import classification_metrics

    model = plain_cnn(cfg, dataset.train, dataset.channels, len(dataset.classes), path, device)
    with torch.no_grad():
        x = to_float(dataset.test.images, device)
        scores = torch.cat([model(b).softmax(1).cpu() for b in x.split(cfg.train.eval_batch_size)])
    return classification_metrics(scores, dataset.test.labels, dataset.classes)


def plain_cnn(cfg: Config, train: ImageSet, channels: int, num_classes: int, path: Path,
              device: torch.device) -> PlainCNN:
    """The plain CNN trained on ``train`` with ``cfg``; cached in ``path`` (written atomically)
    with the key of what trained it: a file trained otherwise is refused
    (:class:`~pgsl.experiments.cache.StaleResult`)."""
    torch.manual_seed(cfg.train.seed)
    model = PlainCNN(cfg, channels, num_classes).to(device)
    key = {"config": cfg.key(), "train_images": len(train)}
    if path.is_file():
        state = load_checkpoint(path, device)
        check(state.get("key"), key, f"the plain CNN in {path}")
        model.load_state_dict(state["model"])
        model.eval()
        return model
    t0 = time.perf_counter()
    fit(model, to_float(train.images, device), train.labels.to(device), cfg, seed=cfg.train.seed)
    save_checkpoint(path, {"model": model.state_dict(), "key": key, "seconds": time.perf_counter() - t0})
    log.info("plain CNN: trained on %d images in %.0f s", len(train), time.perf_counter() - t0)
    return model
