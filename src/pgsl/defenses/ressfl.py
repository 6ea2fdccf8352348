"""ResSFL-style attacker-aware training (Li, Rakin, Chen, He, Fan, Chakrabarti, CVPR 2022).

The client keeps a simulated model-inversion attacker: a small decoder from what it sends back to
the image. Each training step, after the server's reply (min-max, as the reference code's SSIM
mode):

1. the decoder takes ``decoder_steps`` Adam steps to *raise* ``SSIM(decoder(sent), x)`` on the
   detached activations (the attacker's best response);
2. the client adds ``weight * max(SSIM(decoder(sent), x) - ssim_threshold, 0)`` to its loss, so
   the segment learns activations that the current decoder cannot invert beyond the threshold.

``weight`` sets the strength (the reference code's ``regularization_strength``, 0.3 in its
reproduction scripts, with threshold 0.5); 0 is the vanilla split. ``bottleneck = k > 0`` adds the
reference code's bottleneck: a 1x1 convolution (no ReLU) to ``k`` channels on the client, and a 1x1
convolution back to the segment's width before sending (the reference puts the second one on the
server; here it is on the client, so the server model is unchanged and what is sent is a linear
function of the ``k``-channel code). Left out: the decoder's pre-training on held-out data (the
decoder here starts with the client and learns alongside it). The decoder's optimiser state is
not checkpointed: after a resume the decoder keeps its weights and its Adam moments restart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.functional.image import structural_similarity_index_measure

from pgsl.defenses.base import Defense, Setting

if TYPE_CHECKING:
    from pgsl.config import Config

__all__ = ["AttackerAware", "ResSFLParams", "ssim"]


def ssim(recon: Tensor, clean: Tensor) -> Tensor:
    """Mean SSIM of a batch (images in [0, 1]), differentiable; the Gaussian window shrinks to fit
    images smaller than 11 pixels."""
    size = min(11, *clean.shape[-2:])
    size -= 1 - size % 2  # odd
    return torch.as_tensor(structural_similarity_index_measure(
        recon, clean, data_range=1.0, kernel_size=size, sigma=1.5 * size / 11))


class SimulatedInverter(nn.Module):
    """``(B, W, h, w)`` -> ``(B, C, H, W)`` in [0, 1]: three 3x3 convolutions, resized to the
    image's size before the last one when the cut is smaller than the image."""

    def __init__(self, width: int, channels: int, hidden: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(width, hidden, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(hidden, hidden, 3, padding=1), nn.ReLU())
        self.head = nn.Conv2d(hidden, channels, 3, padding=1)

    def forward(self, a: Tensor, size: tuple[int, int]) -> Tensor:
        h = self.body(a)
        if tuple(h.shape[-2:]) != size:
            h = F.interpolate(h, size=size, mode="bilinear", align_corners=False)
        return torch.sigmoid(self.head(h))


@dataclass(frozen=True)
class ResSFLParams:
    weight: float = 0.3  # client loss += weight * max(SSIM - ssim_threshold, 0)
    ssim_threshold: float = 0.5
    decoder_steps: int = 1  # the simulated attacker's Adam steps per training step
    decoder_lr: float = 1e-3
    decoder_width: int = 32
    bottleneck: int = 0  # channels of the client-side bottleneck (0: none)

    def __post_init__(self) -> None:
        if not self.weight >= 0:
            raise ValueError(f"ResSFL weight must be >= 0, got {self.weight}")
        if not 0 <= self.ssim_threshold < 1:
            raise ValueError(f"ResSFL ssim_threshold must be in [0, 1), got {self.ssim_threshold}")
        if self.decoder_steps < 1 or self.decoder_width < 1 or not self.decoder_lr > 0:
            raise ValueError("ResSFL needs decoder_steps >= 1, decoder_width >= 1 and decoder_lr > 0")
        if self.bottleneck < 0:
            raise ValueError(f"ResSFL bottleneck must be >= 0 channels, got {self.bottleneck}")


class AttackerAware(Defense):
    """The vanilla split trained against a simulated inversion decoder on the client."""

    Params = ResSFLParams
    # the threshold off: the reference value (0.5) sits above what the simulated decoder reaches
    # on MNIST in an epoch, where the term never acts
    settings = tuple(Setting.option("weight", w, ssim_threshold=0.0) for w in (0.3, 1.0, 3.0))
    summary = ("split + attacker-aware training against a simulated inversion decoder (ResSFL, "
               "Li et al. 2022), options weight, ssim_threshold, decoder_steps")

    def __init__(self, cfg: Config, channels: int, num_classes: int) -> None:
        super().__init__(cfg, channels, num_classes)
        self.inverter = SimulatedInverter(cfg.model.width, channels, self.params.decoder_width)
        self._optimizer: torch.optim.Optimizer | None = None
        k, width = self.params.bottleneck, cfg.model.width
        self.bottleneck = (nn.Sequential(nn.Conv2d(width, k, kernel_size=1),
                                         nn.Conv2d(k, width, kernel_size=1)) if k else None)

    def perturb(self, a: Tensor) -> Tensor:
        return a if self.bottleneck is None else self.bottleneck(a)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [] if self.bottleneck is None else list(self.bottleneck.parameters())

    def _attacker_steps(self, x: Tensor, sent: Tensor) -> None:
        if self._optimizer is None:  # built on first use, once the module sits on its device
            self._optimizer = torch.optim.Adam(self.inverter.parameters(), lr=self.params.decoder_lr)
        size = (int(x.shape[-2]), int(x.shape[-1]))
        with torch.enable_grad():
            for _ in range(self.params.decoder_steps):
                self._optimizer.zero_grad(set_to_none=True)
                (-ssim(self.inverter(sent, size), x)).backward()
                self._optimizer.step()

    def extra_loss(self, x: Tensor, sent: Tensor) -> Tensor | None:
        p = self.params
        if p.weight == 0:
            return None
        self._attacker_steps(x.detach(), sent.detach())
        for q in self.inverter.parameters():  # the client's term moves the segment, not the attacker
            q.requires_grad_(False)
        try:
            similarity = ssim(self.inverter(sent, (int(x.shape[-2]), int(x.shape[-1]))), x.detach())
        finally:
            for q in self.inverter.parameters():
                q.requires_grad_(True)
        return p.weight * F.relu(similarity - p.ssim_threshold)
