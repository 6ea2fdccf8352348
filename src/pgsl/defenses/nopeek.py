"""NoPeek (Vepakomma, Gupta, Dubey, Raskar 2019): penalise the distance correlation between the raw
input and what crosses the cut.

The sample distance correlation of Szekely, Rizzo & Bakirov (2007), vectorised over the batch on the
tensors' device: Euclidean distance matrices of the flattened samples, double-centred, then
``dCor^2 = dCov^2(X, Y) / sqrt(dVar^2(X) dVar^2(Y))``. Differentiable in both arguments.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from pgsl.defenses.base import Defense, Setting

__all__ = ["NoPeek", "distance_correlation"]


def _centred_distances(x: Tensor) -> Tensor:
    flat = x.reshape(x.shape[0], -1).float()
    # cdist's matmul path is fast but loses accuracy for close points; the direct one is exact
    d = torch.cdist(flat, flat, compute_mode="donot_use_mm_for_euclid_dist")
    return d - d.mean(0, keepdim=True) - d.mean(1, keepdim=True) + d.mean()


def distance_correlation(x: Tensor, y: Tensor) -> Tensor:
    """Sample distance correlation in [0, 1] between two batches with the same first dimension.

    0 when either batch is constant (no dependence can be measured), like the reference definition.
    """
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"batches differ in size: {x.shape[0]} and {y.shape[0]}")
    if x.shape[0] < 2:
        raise ValueError("distance correlation needs at least 2 samples")
    a, b = _centred_distances(x), _centred_distances(y)
    dcov2_xy = (a * b).mean()
    denom = torch.sqrt((a * a).mean() * (b * b).mean())
    ratio = torch.where(denom > 0, dcov2_xy / denom.clamp(min=torch.finfo(denom.dtype).tiny), 0.0)
    return torch.sqrt(torch.clamp(ratio, min=0.0))


@dataclass(frozen=True)
class NoPeekParams:
    weight: float = 0.5  # alpha: client loss = alpha * dCor(x, sent) + the server's gradient

    def __post_init__(self) -> None:
        if not self.weight >= 0:
            raise ValueError(f"NoPeek weight must be >= 0, got {self.weight}")


class NoPeek(Defense):
    """The vanilla split trained with ``weight * dCor(x, a)`` added on the client."""

    Params = NoPeekParams
    settings = tuple(Setting.option("weight", a) for a in (0.5, 1.0, 3.0))
    title = "NoPeek"
    summary = "split + NoPeek distance-correlation loss (Vepakomma et al. 2019), option weight (alpha)"

    def extra_loss(self, x: Tensor, sent: Tensor) -> Tensor | None:
        # a batch of one sample has no distance correlation (e.g. a data set's last batch)
        if self.params.weight == 0 or len(x) < 2:
            return None
        return self.params.weight * distance_correlation(x, sent)
