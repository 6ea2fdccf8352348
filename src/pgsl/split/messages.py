"""Typed messages exchanged at the cut (docs/design.md#running-across-machines).

Client -> server: :class:`Activations` (the client segment's output and, in training, the labels).
Server -> client: :class:`Gradient` in training (the gradient, with respect to the activations, of
the loss of the stream that trains the client -- PGSL's ``S_f``; nothing from ``S_a`` or ``S_r``),
:class:`Scores` at inference. Raw images never appear in any message.

The server model decides how many streams it has (PGSL: ``S_a, S_f, S_r``; a plain split: one);
per-stream fields are tuples in the model's stream order, and ``decision`` is the model's final
answer (PGSL: the adaptive weighted fusion ``S_awa``, paper eqs. 9-11).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

__all__ = ["Activations", "Gradient", "Scores", "StreamStats"]


@dataclass(frozen=True)
class Activations:
    """``activations``: ``(B, width, H/2, W/2)`` float; ``labels``: ``(B,)`` int64 or None."""

    step: int
    activations: Tensor
    labels: Tensor | None = None


@dataclass(frozen=True)
class StreamStats:
    """A training batch's result: each stream's mean cross-entropy (``losses``), how many samples
    each stream and then the decision got right (``correct``, one longer than ``losses``)."""

    losses: tuple[float, ...]
    correct: tuple[int, ...]
    count: int

    def __post_init__(self) -> None:
        if len(self.correct) != len(self.losses) + 1:
            raise ValueError(f"{len(self.losses)} stream losses need {len(self.losses) + 1} counts "
                             f"(streams, then the decision), got {len(self.correct)}")


@dataclass(frozen=True)
class Gradient:
    """``grad``: ``d loss / d activations`` of the stream that trains the client, their shape."""

    step: int
    grad: Tensor
    stats: StreamStats


@dataclass(frozen=True)
class Scores:
    """``streams``: ``(B, K)`` softmax scores per stream; ``decision``: the model's ``(B, K)``."""

    step: int
    streams: tuple[Tensor, ...]
    decision: Tensor
