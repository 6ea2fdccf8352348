"""Learned black-box model inversion ("MIA"; He, Zhang & Lee 2019, the paper's ref. [5] / [20]).

The attacker queries the client pipeline with its auxiliary images, trains a decoder on the
(observed maps -> clean image) pairs, and applies it to the victims' observed maps. Against PGSL it
sees exactly what PGSL sends (the perturbed, down-sampled input's activations) and must still
reconstruct the *clean* image.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from pgsl.attacks.base import Attack, Budget, Reconstruction
from pgsl.attacks.decoder import Decoder
from pgsl.attacks.view import AttackerView, Need
from pgsl.similarity import ssim

__all__ = ["MIA", "invert", "learned_inversion", "train_decoder"]


LOSSES = ("mse", "mse+ssim")


def _check_loss(loss: str) -> None:
    if loss not in LOSSES:
        raise ValueError(f"unknown MIA loss {loss!r}; choose one of {', '.join(LOSSES)}")


def train_decoder(view: AttackerView, *, epochs: int = 10, batch_size: int = 64, lr: float = 1e-3,
                  width: int = 64, seed: int = 0, loss: str = "mse") -> Decoder:
    """Fit a decoder to the auxiliary (observed maps -> clean image) pairs by pixel MSE
    (``loss="mse"``, the reference's) or by MSE + (1 - SSIM) (``"mse+ssim"``).

    An MSE-trained decoder leaves a faint haze on MNIST's flat background that SSIM punishes: on
    a vanilla split it reconstructs to MSE 0.0021 / SSIM 0.51, where the MSE + SSIM decoder
    reaches MSE 0.0011 / SSIM 0.99 (docs/findings.md#what-ssim-says). Score an attack by SSIM
    only when it was trained for it."""
    _check_loss(loss)
    decoder = Decoder(view.observed.shape[1], view.image_shape, width).to(view.observed.device)
    opt = torch.optim.Adam(decoder.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    decoder.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(view.aux_images), generator=g).split(batch_size):
            if len(idx) < 2:
                continue
            idx = idx.to(view.observed.device)
            recon, clean = decoder(view.aux_observed[idx]), view.aux_images[idx]
            objective = F.mse_loss(recon, clean)
            if loss == "mse+ssim":
                objective = objective + (1 - ssim(recon, clean))
            opt.zero_grad(set_to_none=True)
            objective.backward()
            opt.step()
    return decoder.eval()


@torch.no_grad()
def invert(decoder: Decoder, observed: Tensor, batch_size: int = 256) -> Tensor:
    """Apply a trained decoder to observed maps ``(N, K, h, w)``."""
    decoder.eval()
    return torch.cat([decoder(o) for o in observed.split(batch_size)])


def learned_inversion(view: AttackerView, *, epochs: int = 10, batch_size: int = 64, lr: float = 1e-3,
                      width: int = 64, seed: int = 0) -> Tensor:
    """Train a decoder on the auxiliary pairs; return ``(N, C, H, W)`` reconstructions of the victims."""
    decoder = train_decoder(view, epochs=epochs, batch_size=batch_size, lr=lr, width=width, seed=seed)
    return invert(decoder, view.observed)


@dataclass(frozen=True)
class MIABudget(Budget):
    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    width: int = 64
    loss: str = "mse"  # or "mse+ssim": a decoder trained for the SSIM it is scored by

    def __post_init__(self) -> None:
        _check_loss(self.loss)


def fitted_decoder(view: AttackerView, budget: MIABudget, seed: int) -> Decoder:
    """The decoder for ``view`` at ``budget``, trained once per view and shared through its memo
    (the GAN inversion starts from it)."""
    key = ("mia-decoder", budget.epochs, budget.batch_size, budget.lr, budget.width, budget.loss, seed)
    if key not in view.memo:
        view.memo[key] = train_decoder(view, epochs=budget.epochs, batch_size=budget.batch_size,
                                       lr=budget.lr, width=budget.width, seed=seed, loss=budget.loss)
    return view.memo[key]


class MIA(Attack[MIABudget]):
    """Learned black-box inversion: a decoder fitted to the auxiliary (observation -> image) pairs."""

    name = "mia"
    title = "MIA (learned inversion)"
    needs = frozenset({Need.AUX})
    Budget = MIABudget

    def reconstruct(self, view: AttackerView) -> Reconstruction:
        return Reconstruction(invert(fitted_decoder(view, self.budget, self.seed), view.observed))
