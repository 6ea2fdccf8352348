"""The client (hospital, clinic, device): everything left of the cut in the paper's Figure 2.

x -> the defence's encoding (PGSL: intentional JSMA, pixel_unshuffle ++ pooled saliency)
-> conv1, conv2 -> the defence's perturbation -> activations a  ==> the cut (a channel)
<== dL/da of the stream that trains the client -> backward (plus the defence's own loss)
-> optimiser step.

The client never imports the server: it holds a :class:`~pgsl.split.channel.Channel` only.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from pgsl.client.segment import ClientSegment
from pgsl.config import Config
from pgsl.defenses import Defense, get_defense
from pgsl.layers import restore_buffers, saved_buffers
from pgsl.split.channel import Channel
from pgsl.split.messages import Activations, Gradient, Scores

__all__ = ["ClientParty"]


class ClientParty:
    """Holds the raw images, the defence's client state and the segment; talks by channel."""

    def __init__(
        self, cfg: Config, channels: int, num_classes: int, device: torch.device | str = "cpu"
    ) -> None:
        self.cfg = cfg
        self.device = torch.device(device)
        self.defense: Defense = get_defense(cfg.defense.kind)(cfg, channels, num_classes).to(self.device)
        self.segment = ClientSegment(self.defense.segment_channels, cfg.model.width).to(self.device)
        self.optimizer = torch.optim.Adam(
            [*self.segment.parameters(), *self.defense.trainable_parameters()],
            lr=cfg.train.lr, weight_decay=cfg.train.weight_decay,
        )
        self.step = 0

    @property
    def streams(self) -> tuple[str, ...]:
        """The names of the server model's streams, as the defence declares them."""
        return self.defense.streams

    def send(self, x_check: Tensor) -> Tensor:
        """The segment's output after the defence's perturbation: exactly what is sent."""
        return self.defense.perturb(self.segment(x_check))

    @torch.no_grad()
    def query(self, x: Tensor) -> Tensor:
        """What the client sends for ``x`` at inference (the black-box oracle an attacker queries)."""
        self.segment.eval()
        return self.send(self.defense.encode(x, None))

    @torch.no_grad()
    def rehearse(self, x: Tensor) -> Tensor:
        """What a training step would send for ``x`` (the segment normalising by the batch's own
        statistics), without gradient and leaving the segment's running statistics as they were:
        what a defence's simulated attacker trains on before split training."""
        buffers = saved_buffers(self.segment)
        self.segment.train()
        try:
            return self.send(self.defense.encode(x, None))
        finally:
            restore_buffers(self.segment, buffers)

    def observe(self, x: Tensor) -> Tensor:
        """:meth:`query` as a differentiable function of ``x`` (a white-box attacker's model of
        the client: the same value, gradients straight through non-differentiable steps)."""
        self.segment.eval()
        return self.send(self.defense.encode_differentiable(x))

    def train_step(self, x: Tensor, y: Tensor, channel: Channel, *, sent_labels: Tensor | None = None,
                   update: bool = True) -> Gradient:
        """One split-learning step: forward to the cut, server step, backward, client step.

        ``sent_labels``: labels to send instead of ``y`` (a detector's fake batch); ``update``:
        False computes the segment's gradient (:meth:`segment_gradient`) but does not apply it.
        """
        x_check = self.defense.encode(x, y)
        self.segment.train()
        a = self.send(x_check)
        self.step += 1
        labels = y if sent_labels is None else sent_labels
        reply = channel.train_step(Activations(self.step, a.detach(), labels))
        if reply.grad.shape != a.shape:
            raise ValueError(
                f"server returned a gradient of shape {tuple(reply.grad.shape)} for activations "
                f"of shape {tuple(a.shape)}"
            )
        self.optimizer.zero_grad(set_to_none=True)
        grad = reply.grad.to(a.device, a.dtype)
        extra = self.defense.extra_loss(x, a)
        if extra is None:
            a.backward(grad)
        else:
            torch.autograd.backward([a, extra], [grad, torch.ones_like(extra)])
        if update:
            self.optimizer.step()
        return reply

    def segment_gradient(self) -> Tensor:
        """The last training step's gradient of the segment's weights, flattened ``(P,)``."""
        grads = [p.grad.flatten() for p in self.segment.parameters() if p.grad is not None]
        if not grads:
            raise ValueError("no training step has computed a gradient yet")
        return torch.cat(grads).detach()

    @torch.no_grad()
    def predict(self, x: Tensor, channel: Channel) -> Scores:
        """Inference: the client has no label (PGSL attacks away from its surrogate's guess)."""
        a = self.query(x)
        self.step += 1
        return channel.predict(Activations(self.step, a))

    def state_dict(self) -> dict[str, Any]:
        return {
            "defense": self.defense.state_dict(),
            "segment": self.segment.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.defense.load_state_dict(state["defense"])
        self.segment.load_state_dict(state["segment"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state["step"])
