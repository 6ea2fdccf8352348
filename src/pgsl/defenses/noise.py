"""Laplacian noise on the activations (Titcombe, Hall, Papadopoulos, Romanini 2021).

The client adds i.i.d. Laplace(0, b) noise to what it sends, in training and in inference, so the
server (and any eavesdropper) only ever sees noisy activations.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from pgsl.defenses.base import Defense, Setting

__all__ = ["LaplaceNoise", "laplace_noise"]


def laplace_noise(a: Tensor, scale: float, generator: torch.Generator | None = None) -> Tensor:
    """``a + Laplace(0, scale)`` elementwise; ``scale = 0`` returns ``a`` unchanged."""
    if scale < 0:
        raise ValueError(f"noise scale must be >= 0, got {scale}")
    if scale == 0:
        return a
    u = torch.rand(a.shape, generator=generator, device=a.device, dtype=a.dtype) - 0.5
    # inverse CDF of the Laplace distribution; u = -0.5 exactly would give -inf
    u = u.clamp(min=-0.5 + torch.finfo(a.dtype).eps)
    return a - scale * torch.sign(u) * torch.log1p(-2.0 * u.abs())


@dataclass(frozen=True)
class NoiseParams:
    scale: float = 0.5  # Laplace scale b, in units of the (BatchNorm-ed) activations

    def __post_init__(self) -> None:
        if not self.scale >= 0:
            raise ValueError(f"noise scale must be >= 0, got {self.scale}")


class LaplaceNoise(Defense):
    """The vanilla split plus Laplace(0, b) noise on every activation sent."""

    Params = NoiseParams
    settings = tuple(Setting.option("scale", b) for b in (0.5, 1.0, 2.0))
    title = "Laplacian noise"
    summary = "split + Laplacian noise on the activations (Titcombe et al. 2021), option scale (b)"

    def perturb(self, a: Tensor) -> Tensor:
        return laplace_noise(a, self.params.scale)
