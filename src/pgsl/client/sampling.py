"""Reversible down-/up-sampling (paper §IV-B, after Khowaja et al.'s CRCNN, ref. [29]).

Down-sampling splits an image into its four 2x2 polyphase sub-images (``pixel_unshuffle``), which is
exactly invertible by ``pixel_shuffle``, and concatenates the 2x2-pooled saliency map.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def downsample(x_hat: Tensor, saliency: Tensor) -> Tensor:
    """``(B, C, H, W)`` image + ``(B, 1, H, W)`` saliency -> ``(B, 4C + 1, H/2, W/2)``."""
    if x_hat.ndim != 4 or saliency.ndim != 4 or saliency.shape[1] != 1:
        raise ValueError(
            f"expected x_hat (B, C, H, W) and saliency (B, 1, H, W), got {tuple(x_hat.shape)} "
            f"and {tuple(saliency.shape)}"
        )
    if x_hat.shape[0] != saliency.shape[0] or x_hat.shape[-2:] != saliency.shape[-2:]:
        raise ValueError(f"saliency {tuple(saliency.shape)} does not match image {tuple(x_hat.shape)}")
    h, w = x_hat.shape[-2:]
    if h % 2 or w % 2:
        raise ValueError(f"image height and width must be even for 2x down-sampling, got {h}x{w}")
    return torch.cat([F.pixel_unshuffle(x_hat, 2), F.avg_pool2d(saliency, 2)], dim=1)
