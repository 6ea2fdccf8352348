"""Building blocks shared by both sides of the cut (no party logic here)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


def conv_block(c_in: int, c_out: int) -> nn.Sequential:
    """Conv3x3 -> ReLU -> BatchNorm, the paper's layer (§IV-F), in that order."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(c_out))


def upsample(maps: Tensor) -> Tensor:
    """``pixel_shuffle`` by 2 (§IV-B): ``(B, 4k, h, w)`` -> ``(B, k, 2h, 2w)``.

    The exact inverse of the client's ``pixel_unshuffle``; on the server it lifts the activations
    and the recovered maps back to image resolution.
    """
    if maps.ndim != 4 or maps.shape[1] % 4:
        raise ValueError(f"expected (B, 4k, h, w) maps, got {tuple(maps.shape)}")
    return F.pixel_shuffle(maps, 2)
