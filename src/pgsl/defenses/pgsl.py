"""PGSL's client side (paper §IV-A, IV-B; docs/design.md#the-pgsl-pipeline) as a defence plug-in.

x -> intentional JSMA driven by the client's surrogate -> x_hat, Map
  -> pixel_unshuffle(x_hat) ++ pool(Map): ``(B, C, H, W)`` -> ``(B, 4C + 1, H/2, W/2)``
  -> conv1, conv2 -> the cut. The server side is the ``three-streams`` model: APG recovery, three
  streams, decision fusion (:mod:`pgsl.server.three_streams`).

Its options live in the config's ``[pixel_attack]`` (the pixel budget), ``[recovery]`` (mu) and
``[fusion]`` sections, which only PGSL reads.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from pgsl.client.pixel_attack import intentional_jsma
from pgsl.client.sampling import downsample
from pgsl.client.surrogate import Surrogate, train_surrogate
from pgsl.defenses.base import Defense, Setting

if TYPE_CHECKING:
    from pgsl.config import Config
    from pgsl.data.base import ImageSet

__all__ = ["PGSL"]


def _knob(knob: str, value: float) -> Setting:
    if knob == "mu":
        return Setting("mu", value, {"recovery": {"mu": value}, "pixel_attack": {"pixels": 4}})
    pixels = int(value) if value >= 1 else value
    return Setting("pixels", value, {"recovery": {"mu": 0.55}, "pixel_attack": {
        "pixels": pixels, "pixels_per_step": int(min(2, max(pixels, 1)))}})


class PGSL(Defense):
    """The paper's client: few-pixel saliency attack, reversible down-sampling; three streams."""

    server_model = "three-streams"
    streams = ("S_a", "S_f", "S_r")
    title = "PGSL"
    # the paper's two knobs: mu (Fig. 3's sweep) at the 4-pixel budget, then the budget at mu 0.55
    settings = (*(_knob("mu", m) for m in (0.15, 0.55, 0.95)), *(_knob("pixels", p) for p in (1, 16)))
    summary = ("PGSL: intentional JSMA + reversible down-sampling on the client; APG recovery, "
               "three streams and decision fusion on the server (options: pixel_attack.pixels, recovery.mu)")

    @classmethod
    def setting(cls, knob: str, value: float, **fixed: Any) -> Setting:
        """The paper's two knobs: ``mu`` (the recovery's, Fig. 3) at the 4-pixel budget, and
        ``pixels`` (the pixel attack's budget) at mu 0.55."""
        if fixed or knob not in ("mu", "pixels"):
            raise ValueError(f"PGSL's settings are mu=VALUE and pixels=VALUE, got {knob!r} {fixed or ''}")
        return _knob(knob, value)

    def __init__(self, cfg: Config, channels: int, num_classes: int) -> None:
        super().__init__(cfg, channels, num_classes)
        self.surrogate = Surrogate(channels, num_classes, cfg.pixel_attack.surrogate_width)

    @property
    def segment_channels(self) -> int:
        return 4 * self.channels + 1

    def preparation(self, n_train: int) -> int:
        return self.cfg.pixel_attack.surrogate_epochs * n_train

    def prepare(self, data: ImageSet, *, send: Callable[[Tensor], Tensor], batch_size: int,
                seed: int, device: torch.device,
                progress: Callable[[int], None] | None = None) -> None:
        """Train the surrogate whose saliency drives the pixel attack, on the client's own data."""
        train_surrogate(self.surrogate, data, epochs=self.cfg.pixel_attack.surrogate_epochs,
                        batch_size=batch_size, seed=seed, device=device, progress=progress)

    def _attack(self, x: Tensor, y: Tensor | None) -> tuple[Tensor, Tensor]:
        a = self.cfg.pixel_attack
        # at inference the client has no label; "true" lets training see it (see PixelAttackConfig)
        label = y if a.label_source == "true" else None
        self.surrogate.eval()
        result = intentional_jsma(self.surrogate, x, label, pixels=a.pixels,
                                  pixels_per_step=a.pixels_per_step, theta=a.theta)
        return result.attacked, result.saliency

    def encode(self, x: Tensor, y: Tensor | None) -> Tensor:
        attacked, saliency = self._attack(x, y)
        return downsample(attacked, saliency).detach()

    def encode_differentiable(self, x: Tensor) -> Tensor:
        """The same value as ``encode(x, None)``; the discrete pixel choice and the saliency map
        pass the gradient straight through (BPDA): ``x_hat = x + (jsma(x) - x).detach()``."""
        attacked, saliency = self._attack(x.detach(), None)
        x_hat = x + (attacked - x).detach()
        return downsample(x_hat, saliency.detach())
