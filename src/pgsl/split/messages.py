"""Typed messages exchanged at the cut (DESIGN §5).

Client -> server: :class:`Activations` (the client segment's output and, in training, the labels).
Server -> client: :class:`Gradient` in training (the gradient of ``S_f``'s loss with respect to the
activations, and nothing from ``S_a`` or ``S_r``), :class:`Scores` at inference.
Raw images never appear in any message.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass(frozen=True)
class Activations:
    """``activations``: ``(B, width, H/2, W/2)`` float; ``labels``: ``(B,)`` int64 or None."""

    step: int
    activations: Tensor
    labels: Tensor | None = None


@dataclass(frozen=True)
class StreamStats:
    """Per-stream mean cross-entropy of a batch and how many of its samples each got right."""

    loss_a: float
    loss_f: float
    loss_r: float
    correct_a: int
    correct_f: int
    correct_r: int
    correct_awa: int
    count: int


@dataclass(frozen=True)
class Gradient:
    """``grad``: ``d loss(S_f) / d activations``, the activations' shape."""

    step: int
    grad: Tensor
    stats: StreamStats


@dataclass(frozen=True)
class Scores:
    """``(B, K)`` softmax scores of each stream and the fused decision ``S_awa``."""

    step: int
    s_a: Tensor
    s_f: Tensor
    s_r: Tensor
    s_awa: Tensor
