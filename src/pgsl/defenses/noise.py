"""Laplacian noise on the activations (Titcombe, Hall, Papadopoulos, Romanini 2021).

The client adds i.i.d. Laplace(0, b) noise to what it sends, in training and in inference, so the
server (and any eavesdropper) only ever sees noisy activations.
"""

from __future__ import annotations

import torch
from torch import Tensor


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
