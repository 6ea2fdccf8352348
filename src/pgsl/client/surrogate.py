"""The client-owned classifier whose saliency drives the intentional pixel attack
(docs/design.md#the-pgsl-pipeline).

It never leaves the client. Small on purpose: it only has to rank pixels by their influence.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pgsl.data.base import ImageSet, batches

log = logging.getLogger(__name__)


class Surrogate(nn.Module):
    """conv(16) -> pool -> conv(2*16) -> adaptive pool 4x4 -> linear; any even image size."""

    def __init__(self, channels: int, num_classes: int, width: int = 16) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4),
        )
        self.head = nn.Linear(2 * width * 16, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x).flatten(1))


def train_surrogate(
    model: Surrogate,
    data: ImageSet,
    *,
    epochs: int,
    batch_size: int,
    seed: int,
    device: torch.device | str = "cpu",
    progress: Callable[[int], None] | None = None,
) -> float:
    """Train on the client's own data with Adam; returns the last epoch's training accuracy."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    acc = 0.0
    for epoch in range(epochs):
        correct = 0
        for x, y in batches(data, batch_size, device=device, shuffle_seed=seed * 1000 + epoch):
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            correct += int((logits.argmax(1) == y).sum())
            if progress:
                progress(len(y))
        acc = correct / max(1, len(data))
        log.info("surrogate epoch %d: train accuracy %.4f", epoch + 1, acc)
    model.eval()
    return acc
