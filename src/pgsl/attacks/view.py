"""What the adversary holds, and how its reconstructions are scored."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

TARGETS = ("none", "noise", "nopeek", "pgsl-cut", "pgsl-recovered")


@dataclass(frozen=True)
class AttackerView:
    """Everything an attack may read. No field holds a victim's raw image.

    Attributes:
        target: which tensor the attacker observes (see :data:`TARGETS`): the cut of a vanilla,
            noisy or NoPeek split, PGSL's cut, or the maps PGSL's server recovers from it.
        observed: ``(N, K, h, w)`` what the attacker saw for the N victims.
        aux_images: ``(M, C, H, W)`` in [0, 1]: the attacker's own images (disjoint from victims).
        aux_observed: ``(M, K, h, w)``: the client pipeline's answers to ``aux_images`` (black-box
            queries), taken exactly like ``observed``.
        client_model: white-box only -- a differentiable map from an image ``(B, C, H, W)`` in
            [0, 1] to what the attacker observes; the client's discrete pixel attack cannot be
            differentiated and is left out of it.
    """

    target: str
    observed: Tensor
    aux_images: Tensor
    aux_observed: Tensor
    client_model: Callable[[Tensor], Tensor] | None = None

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise ValueError(f"unknown target {self.target!r}; one of {TARGETS}")
        if self.observed.shape[1:] != self.aux_observed.shape[1:]:
            raise ValueError(f"victim observations {tuple(self.observed.shape)} and auxiliary ones "
                             f"{tuple(self.aux_observed.shape)} differ in shape")

    @property
    def image_shape(self) -> tuple[int, int, int]:
        c, h, w = self.aux_images.shape[1:]
        return int(c), int(h), int(w)


def reconstruction_scores(recon: Tensor, clean: Tensor) -> dict[str, Tensor]:
    """Per-image MSE, PSNR (dB) and SSIM of ``recon`` against ``clean``, both in [0, 1].

    SSIM is torchmetrics' (Gaussian window 11, sigma 1.5, ``data_range=1``); PSNR is capped at
    100 dB for an exact reconstruction.
    """
    from torchmetrics.functional.image import structural_similarity_index_measure

    if recon.shape != clean.shape:
        raise ValueError(f"reconstructions {tuple(recon.shape)} and images {tuple(clean.shape)} differ")
    recon, clean = recon.float().clamp(0, 1), clean.float()
    mse = (recon - clean).square().flatten(1).mean(1)
    psnr = torch.where(mse > 0, 10 * torch.log10(1.0 / mse.clamp(min=1e-10)), torch.full_like(mse, 100.0))
    ssim = structural_similarity_index_measure(recon, clean, data_range=1.0, reduction="none")
    return {"mse": mse, "psnr": psnr, "ssim": torch.as_tensor(ssim).reshape(-1)}
