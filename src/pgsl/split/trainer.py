"""Split training and evaluation: the two parties, a channel between them, epochs of batches.

Statistics are keyed by the server model's stream names (the defence declares them; PGSL:
``S_a, S_f, S_r``) and :data:`DECISION`, the model's final answer (PGSL: the fusion ``S_awa``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from pgsl.data.augment import augment as augment_batch
from pgsl.data.base import ImageSet, batches
from pgsl.split.channel import Channel
from pgsl.split.messages import Gradient, Scores

log = logging.getLogger(__name__)

__all__ = ["DECISION", "EpochStats", "Learner", "accuracies", "collect_scores", "evaluate", "train_epoch"]

DECISION = "decision"
Progress = Callable[[int], None]


class Learner(Protocol):
    """What the trainer needs of a client: its device, its stream names and the two steps
    (:class:`pgsl.client.party.ClientParty` is one; this module never imports it)."""

    @property
    def device(self) -> torch.device: ...

    @property
    def streams(self) -> tuple[str, ...]: ...

    def train_step(self, x: Tensor, y: Tensor, channel: Channel) -> Gradient: ...

    def predict(self, x: Tensor, channel: Channel) -> Scores: ...


@dataclass(frozen=True)
class EpochStats:
    """Training loss (mean per sample) of each stream, training accuracy incl. the decision."""

    loss: dict[str, float]
    accuracy: dict[str, float]
    samples: int
    seconds: float


def train_epoch(
    client: Learner,
    channel: Channel,
    data: ImageSet,
    *,
    batch_size: int,
    shuffle_seed: int,
    progress: Progress | None = None,
    augment: bool = False,
    balanced: bool = False,
) -> EpochStats:
    """One pass over ``data`` in a seeded order (``balanced``: classes sampled equally often);
    the client and server step on every batch. ``augment``: each batch is augmented on the client
    (:func:`pgsl.data.augment.augment`, draws seeded by ``shuffle_seed``)."""
    names = client.streams
    loss = dict.fromkeys(names, 0.0)
    correct = dict.fromkeys((*names, DECISION), 0)
    n = 0
    t0 = time.perf_counter()
    draws = torch.Generator().manual_seed(shuffle_seed + 1)
    for x, y in batches(data, batch_size, device=client.device, shuffle_seed=shuffle_seed, balanced=balanced):
        if augment:
            x = augment_batch(x, draws)
        s = client.train_step(x, y, channel).stats
        if len(s.losses) != len(names):
            raise ValueError(f"the server trains {len(s.losses)} stream(s), this client's defence "
                               f"expects {len(names)} ({', '.join(names)}): do their configs match?")
        for key, value in zip(names, s.losses, strict=True):
            loss[key] += value * s.count
        for key, hits in zip(correct, s.correct, strict=True):
            correct[key] += hits
        n += s.count
        if progress:
            progress(s.count)
    return EpochStats(
        loss={k: v / max(n, 1) for k, v in loss.items()},
        accuracy={k: v / max(n, 1) for k, v in correct.items()},
        samples=n,
        seconds=time.perf_counter() - t0,
    )


@torch.no_grad()
def collect_scores(
    client: Learner,
    channel: Channel,
    data: ImageSet | tuple[Tensor, Tensor],
    *,
    batch_size: int,
    progress: Progress | None = None,
) -> tuple[dict[str, Tensor], Tensor]:
    """Each stream's and the decision's scores ``(N, K)`` (by name) and the labels ``(N,)``, on
    the CPU, for an image set or float images ``(N, C, H, W)`` in [0, 1] with their labels."""
    pairs: Iterable[tuple[Tensor, Tensor]]
    if isinstance(data, tuple):
        x, y = data
        pairs = zip(x.split(batch_size), y.split(batch_size), strict=True)
    else:
        pairs = batches(data, batch_size, device=client.device)
    names = (*client.streams, DECISION)
    parts: dict[str, list[Tensor]] = {k: [] for k in names}
    labels: list[Tensor] = []
    for xb, yb in pairs:
        scores = client.predict(xb, channel)
        if len(scores.streams) != len(client.streams):
            raise ValueError(f"the server answered with {len(scores.streams)} stream(s), expected "
                             f"{len(client.streams)} ({', '.join(client.streams)})")
        for key, sc in zip(names, (*scores.streams, scores.decision), strict=True):
            parts[key].append(sc.detach().float().cpu())
        labels.append(yb.cpu())
        if progress:
            progress(len(yb))
    if not labels:
        raise ValueError("cannot evaluate on an empty test split")
    return {k: torch.cat(v) for k, v in parts.items()}, torch.cat(labels)


def accuracies(scores: dict[str, Tensor], labels: Tensor) -> dict[str, float]:
    """Accuracy (a fraction) of each named ``(N, K)`` score tensor."""
    return {k: int((s.argmax(1) == labels).sum()) / len(labels) for k, s in scores.items()}


@torch.no_grad()
def evaluate(
    client: Learner,
    channel: Channel,
    data: ImageSet | tuple[Tensor, Tensor],
    *,
    batch_size: int,
    progress: Progress | None = None,
) -> dict[str, float]:
    """Accuracy of each stream and of the decision (fractions in [0, 1]) on an image set, or on
    float images ``(N, C, H, W)`` in [0, 1] with their labels."""
    return accuracies(*collect_scores(client, channel, data, batch_size=batch_size, progress=progress))
