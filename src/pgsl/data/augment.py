"""Training-time augmentation suited to mammograms, on the client, before the defence sees the image.

Per image, drawn from a seeded generator (so an epoch's draws are reproducible and a resumed run
repeats them): a horizontal flip (left and right breasts) with probability 1/2, a rotation of up to
``degrees`` and a shift of up to ``shift`` of the side (background, 0, fills in), and an intensity
jitter ``x * gain + offset`` with ``gain`` in ``1 +- contrast`` and ``offset`` in ``+-brightness``,
clipped to [0, 1]. No vertical flip: the nipple-to-chest orientation carries meaning.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["augment"]


def augment(x: Tensor, generator: torch.Generator, *, degrees: float = 10.0, shift: float = 0.06,
            contrast: float = 0.1, brightness: float = 0.05) -> Tensor:
    """``(B, C, H, W)`` in [0, 1] -> the same shape, each image transformed independently."""
    b = x.shape[0]

    def uniform(low: float, high: float) -> Tensor:
        return (low + (high - low) * torch.rand(b, generator=generator)).to(x.device, x.dtype)

    flip = (torch.rand(b, generator=generator) < 0.5).to(x.device)
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    angle = uniform(-degrees, degrees) * (math.pi / 180)
    tx, ty = uniform(-2 * shift, 2 * shift), uniform(-2 * shift, 2 * shift)  # grid units: the side is 2
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    gain, offset = uniform(1 - contrast, 1 + contrast), uniform(-brightness, brightness)
    return (x * gain[:, None, None, None] + offset[:, None, None, None]).clamp(0, 1)
