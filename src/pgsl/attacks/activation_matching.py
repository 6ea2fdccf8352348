"""White-box activation matching (He, Zhang & Lee 2019, "regularised maximum likelihood").

Knowing the client's architecture and weights, the attacker optimises a dummy image so that the
client model reproduces the observed maps: ``min_x ||f(x) - a||^2 + tv * TV(x)`` over images in
[0, 1] (a sigmoid parameterisation), started from the mean auxiliary image, by Adam. Batched over
victims, which are independent.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from pgsl.attacks.base import Attack, Budget, Reconstruction
from pgsl.attacks.view import AttackerView, Need

__all__ = ["ActivationMatching", "activation_matching", "total_variation"]


def total_variation(x: Tensor) -> Tensor:
    """Mean absolute difference between neighbouring pixels, per image, summed over the batch."""
    dh = (x[..., 1:, :] - x[..., :-1, :]).abs().flatten(1).mean(1)
    dw = (x[..., :, 1:] - x[..., :, :-1]).abs().flatten(1).mean(1)
    return (dh + dw).sum()


def activation_matching(view: AttackerView, *, steps: int = 300, lr: float = 0.05, tv: float = 0.05,
                        batch_size: int = 128) -> Tensor:
    """Return ``(N, C, H, W)`` reconstructions of the victims from their observed maps."""
    if view.path is None:
        raise ValueError("activation matching is white-box: the view needs a differentiable path")
    mean = view.aux_images.mean(0, keepdim=True).clamp(1e-3, 1 - 1e-3)
    out = []
    for obs in view.observed.split(batch_size):
        logits = torch.logit(mean).expand(len(obs), *mean.shape[1:]).clone().requires_grad_(True)
        opt = torch.optim.Adam([logits], lr=lr)
        for _ in range(steps):
            x = logits.sigmoid()
            loss = F.mse_loss(view.path(x), obs, reduction="sum") / obs[0].numel()
            loss = loss + tv * total_variation(x)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        out.append(logits.detach().sigmoid())
    return torch.cat(out)


@dataclass(frozen=True)
class MatchingBudget(Budget):
    victims: int | None = 64
    steps: int = 300
    lr: float = 0.05
    tv: float = 0.05
    batch_size: int = 128


class ActivationMatching(Attack[MatchingBudget]):
    """White-box: optimise dummy images until the view's path reproduces the observations."""

    name = "activation"
    title = "activation matching (white-box)"
    needs = frozenset({Need.WHITE_BOX, Need.AUX})
    Budget = MatchingBudget

    def reconstruct(self, view: AttackerView) -> Reconstruction:
        b = self.budget
        return Reconstruction(activation_matching(view, steps=b.steps, lr=b.lr, tv=b.tv,
                                                  batch_size=b.batch_size))
