"""MID: a variational information bottleneck at the cut (Wang et al. 2022, "Mutual information
regularization for vertical federated learning"; Zou et al. 2023), on the client.

The client segment's output ``a`` ``(B, W, h, w)`` is encoded, per spatial position by 1x1
convolutions, into a Gaussian code of ``k`` channels (mean ``mu``, std ``s = softplus(raw - 0.5)``,
the reference code's shift), one sample ``z = mu + s eps`` is drawn and decoded back to ``W``
channels, and that is what is sent::

    a --enc (1x1 conv, ReLU)--> mu, s --sample--> z --dec (1x1 conv, ReLU, 1x1 conv)--> sent

The client adds ``weight * KL(N(mu, s^2) || N(0, I))`` (summed over the code's elements, averaged
over the batch: the variational bound on ``I(a; z)``) to its loss; the encoder and decoder train
with the segment by the client's optimiser. A sample is drawn in training and at inference alike
(as in the reference code), so the server and an attacker querying the client only ever see a
noisy code. ``weight`` sets the strength: 0 is a vanilla split with two more layers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pgsl.defenses.base import Defense, Setting

if TYPE_CHECKING:
    from pgsl.config import Config

__all__ = ["MID", "MIDParams", "VariationalBottleneck"]

STD_SHIFT = 0.5  # s = softplus(raw - 0.5): the code starts with std ~0.47


class VariationalBottleneck(nn.Module):
    """``(B, W, h, w)`` -> ``(B, W, h, w)`` through a sampled ``k``-channel Gaussian code; the last
    call's KL divergence to ``N(0, I)`` per sample, averaged over the batch, in :attr:`kl`."""

    def __init__(self, width: int, code: int) -> None:
        super().__init__()
        self.encoder = nn.Conv2d(width, 2 * code, kernel_size=1)
        self.decoder = nn.Sequential(nn.Conv2d(code, width, kernel_size=1), nn.ReLU(),
                                     nn.Conv2d(width, width, kernel_size=1))
        self.kl: Tensor | None = None

    def forward(self, a: Tensor) -> Tensor:
        mu, raw = F.relu(self.encoder(a)).chunk(2, dim=1)
        std = F.softplus(raw - STD_SHIFT)
        z = mu + std * torch.randn_like(std)
        self.kl = 0.5 * (mu.square() + std.square() - 2 * torch.log(std) - 1).flatten(1).sum(1).mean()
        return self.decoder(z)


@dataclass(frozen=True)
class MIDParams:
    weight: float = 1e-3  # lambda: client loss += weight * KL (summed over the code, per sample)
    code: int = 8  # channels of the Gaussian code per position (the segment's width is 32-64)

    def __post_init__(self) -> None:
        if not self.weight >= 0:
            raise ValueError(f"MID weight must be >= 0, got {self.weight}")
        if self.code < 1:
            raise ValueError(f"MID code must be >= 1 channel, got {self.code}")


class MID(Defense):
    """The vanilla split with a variational bottleneck between the client segment and the cut."""

    Params = MIDParams
    settings = tuple(Setting.option("weight", w) for w in (1e-4, 1e-3, 1e-2))
    title = "MID"
    summary = ("split + a variational information bottleneck at the cut (MID, Wang et al. 2022), "
               "options weight (lambda of the KL term) and code (channels)")

    def __init__(self, cfg: Config, channels: int, num_classes: int) -> None:
        super().__init__(cfg, channels, num_classes)
        self.bottleneck = VariationalBottleneck(cfg.model.width, self.params.code)

    def perturb(self, a: Tensor) -> Tensor:
        return self.bottleneck(a)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return list(self.bottleneck.parameters())

    def extra_loss(self, x: Tensor, sent: Tensor) -> Tensor | None:
        kl = self.bottleneck.kl
        if self.params.weight == 0 or kl is None or not kl.requires_grad:
            return None
        return self.params.weight * kl
