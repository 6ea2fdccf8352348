"""Split training and evaluation: the two parties, a channel between them, epochs of batches."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from pgsl.client.party import ClientParty
from pgsl.data.base import ImageSet, batches
from pgsl.split.channel import Channel
from pgsl.split.messages import Scores

log = logging.getLogger(__name__)

STREAMS = ("S_a", "S_f", "S_r", "S_awa")
Progress = Callable[[int], None]


@dataclass(frozen=True)
class EpochStats:
    """Training loss (mean per sample) of each stream and training accuracy incl. the fusion."""

    loss: dict[str, float]
    accuracy: dict[str, float]
    samples: int
    seconds: float


def train_epoch(
    client: ClientParty,
    channel: Channel,
    data: ImageSet,
    *,
    batch_size: int,
    shuffle_seed: int,
    progress: Progress | None = None,
) -> EpochStats:
    """One pass over ``data`` in a seeded order; the client and server step on every batch."""
    loss = {"S_a": 0.0, "S_f": 0.0, "S_r": 0.0}
    correct = dict.fromkeys(STREAMS, 0)
    n = 0
    t0 = time.perf_counter()
    for x, y in batches(data, batch_size, device=client.device, shuffle_seed=shuffle_seed):
        s = client.train_step(x, y, channel).stats
        for key, value in zip(loss, (s.loss_a, s.loss_f, s.loss_r), strict=True):
            loss[key] += value * s.count
        for key, value in zip(STREAMS, (s.correct_a, s.correct_f, s.correct_r, s.correct_awa), strict=True):
            correct[key] += value
        n += s.count
        if progress:
            progress(s.count)
    return EpochStats(
        loss={k: v / max(n, 1) for k, v in loss.items()},
        accuracy={k: v / max(n, 1) for k, v in correct.items()},
        samples=n,
        seconds=time.perf_counter() - t0,
    )


def stream_hits(scores: Scores, y: Tensor) -> dict[str, int]:
    """How many of ``y`` each stream and the fused decision got right."""
    return {key: int((s.argmax(1).to(y.device) == y).sum())
            for key, s in zip(STREAMS, (scores.s_a, scores.s_f, scores.s_r, scores.s_awa), strict=True)}


@torch.no_grad()
def evaluate(
    client: ClientParty,
    channel: Channel,
    data: ImageSet,
    *,
    batch_size: int,
    progress: Progress | None = None,
) -> dict[str, float]:
    """Accuracy of each stream and of the fused decision on ``data`` (fractions in [0, 1])."""
    correct = dict.fromkeys(STREAMS, 0)
    n = 0
    for x, y in batches(data, batch_size, device=client.device):
        for key, hits in stream_hits(client.predict(x, channel), y).items():
            correct[key] += hits
        n += len(y)
        if progress:
            progress(len(y))
    if n == 0:
        raise ValueError("cannot evaluate on an empty test split")
    return {k: v / n for k, v in correct.items()}
