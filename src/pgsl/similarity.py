"""Differentiable image similarity, shared by the attacks that train on it and the defences that
train against it."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics.functional.image import structural_similarity_index_measure

__all__ = ["ssim"]


def ssim(recon: Tensor, clean: Tensor) -> Tensor:
    """Mean SSIM of a batch ``(B, C, H, W)`` (images in [0, 1]), differentiable: torchmetrics'
    Gaussian-window SSIM (window 11, sigma 1.5, as :func:`pgsl.attacks.view.reconstruction_scores`
    reports it), the window shrunk to fit images smaller than 11 pixels."""
    size = min(11, *clean.shape[-2:])
    size -= 1 - size % 2  # odd
    return torch.as_tensor(structural_similarity_index_measure(
        recon, clean, data_range=1.0, kernel_size=size, sigma=1.5 * size / 11))
