"""The client (hospital, clinic, device): everything left of the cut in the paper's Figure 2.

x -> intentional JSMA (surrogate saliency) -> x_hat, Map -> pixel_unshuffle(x_hat) ++ pool(Map)
-> conv1, conv2 -> activations a  ==> the cut (a channel; the client never imports the server)
<== dL(S_f)/da -> backward through conv2, conv1 -> optimiser step.

The comparison models (``defense.kind``) send conv2(conv1(x)) of the raw image instead: as is
(``none``), plus Laplacian noise (``noise``), or trained with NoPeek's distance-correlation loss
added on the client (``nopeek``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from pgsl.client.pixel_attack import intentional_jsma
from pgsl.client.sampling import downsample
from pgsl.client.segment import ClientSegment
from pgsl.client.surrogate import Surrogate
from pgsl.config import Config
from pgsl.defenses.noise import laplace_noise
from pgsl.defenses.nopeek import distance_correlation
from pgsl.split.channel import Channel
from pgsl.split.messages import Activations, Gradient, Scores


class ClientParty:
    """Holds the raw images, the surrogate and the client segment; talks to the server by channel."""

    def __init__(
        self, cfg: Config, channels: int, num_classes: int, device: torch.device | str = "cpu"
    ) -> None:
        self.cfg = cfg
        self.device = torch.device(device)
        self.surrogate = Surrogate(channels, num_classes, cfg.attack.surrogate_width).to(self.device)
        self.pgsl = cfg.defense.kind == "pgsl"
        in_channels = 4 * channels + 1 if self.pgsl else channels
        self.segment = ClientSegment(in_channels, cfg.model.width).to(self.device)
        self.optimizer = torch.optim.Adam(
            self.segment.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay
        )
        self.step = 0

    def encode(self, x: Tensor, y: Tensor | None) -> Tensor:
        """PGSL: attack and down-sample, ``(B, C, H, W)`` -> ``(B, 4C + 1, H/2, W/2)``, no gradient.

        ``y=None`` attacks away from the surrogate's own prediction. Other defences: ``x`` as is.
        """
        if not self.pgsl:
            return x
        a = self.cfg.attack
        self.surrogate.eval()
        result = intentional_jsma(
            self.surrogate, x, y, pixels=a.pixels, pixels_per_step=a.pixels_per_step, theta=a.theta
        )
        return downsample(result.attacked, result.saliency)

    def cut(self, x_check: Tensor) -> Tensor:
        """The segment's output plus the noise defence: exactly what is sent."""
        a = self.segment(x_check)
        if self.cfg.defense.kind == "noise":
            a = laplace_noise(a, self.cfg.defense.noise_scale)
        return a

    @torch.no_grad()
    def query(self, x: Tensor) -> Tensor:
        """What the client sends for ``x`` at inference (the black-box oracle an attacker queries)."""
        self.segment.eval()
        return self.cut(self.encode(x, None))

    def train_step(self, x: Tensor, y: Tensor, channel: Channel) -> Gradient:
        """One split-learning step: forward to the cut, server step, backward, client step."""
        x_check = self.encode(x, y if self.cfg.attack.label_source == "true" else None)
        self.segment.train()
        a = self.cut(x_check)
        self.step += 1
        reply = channel.train_step(Activations(self.step, a.detach(), y))
        if reply.grad.shape != a.shape:
            raise RuntimeError(
                f"server returned a gradient of shape {tuple(reply.grad.shape)} for activations "
                f"of shape {tuple(a.shape)}"
            )
        self.optimizer.zero_grad(set_to_none=True)
        grad = reply.grad.to(a.device, a.dtype)
        if self.cfg.defense.kind == "nopeek" and self.cfg.defense.nopeek_weight > 0:
            leak = self.cfg.defense.nopeek_weight * distance_correlation(x, a)
            torch.autograd.backward([a, leak], [grad, torch.ones_like(leak)])
        else:
            a.backward(grad)
        self.optimizer.step()
        return reply

    @torch.no_grad()
    def predict(self, x: Tensor, channel: Channel) -> Scores:
        """Inference: the attack uses the surrogate's own label (the client does not know ``y``)."""
        a = self.query(x)
        self.step += 1
        return channel.predict(Activations(self.step, a))

    def state_dict(self) -> dict:
        return {
            "surrogate": self.surrogate.state_dict(),
            "segment": self.segment.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
        }

    def load_state_dict(self, state: dict) -> None:
        self.surrogate.load_state_dict(state["surrogate"])
        self.segment.load_state_dict(state["segment"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state["step"])
