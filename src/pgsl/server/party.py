"""The computation server: everything right of the cut in the paper's Figure 2.

:class:`ServerParty` owns the server model its configuration's defence names (PGSL: recovery, three
streams and fusion, :mod:`pgsl.server.three_streams`; a plain split: one stream) and its optimiser,
and answers :class:`~pgsl.split.messages.Activations` messages. It refuses, with
:class:`BadRequest`, only what is the sender's fault; anything else propagates unchanged. Either way
a step that fails leaves the model as it was.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import Tensor

from pgsl.config import Config
from pgsl.defenses import get_defense
from pgsl.layers import restore_buffers, saved_buffers
from pgsl.server.model import ServerModel, build_server_model
from pgsl.split.messages import Activations, Gradient, Scores, StreamStats

log = logging.getLogger(__name__)

__all__ = ["MAX_ABS_ACTIVATION", "BadRequest", "ServerParty"]

MAX_ABS_ACTIVATION = 1e6


class BadRequest(ValueError):
    """A message the server refuses because of what it holds; the model is not touched."""


class ServerParty:
    """Owns the server model and its optimiser; answers :class:`Activations` messages."""

    def __init__(self, cfg: Config, num_classes: int, device: torch.device | str = "cpu") -> None:
        self.cfg = cfg
        self.device = torch.device(device)
        self.model: ServerModel = build_server_model(
            get_defense(cfg.defense.kind).server_model, cfg, num_classes).to(self.device)
        self.optimizer = torch.optim.Adam(
            self.model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay
        )
        self.expected_hw: tuple[int, int] | None = None

    @property
    def width(self) -> int:
        """Channels of the activations this server takes."""
        return self.model.width

    @property
    def num_classes(self) -> int:
        return self.model.num_classes

    def _validate(self, msg: Activations, *, need_labels: bool) -> tuple[Tensor, Tensor | None]:
        a = msg.activations
        if not isinstance(a, Tensor) or not a.is_floating_point():
            raise BadRequest(f"step {msg.step}: activations must be a float tensor")
        if a.ndim != 4 or a.shape[1] != self.model.width or a.shape[0] == 0:
            raise BadRequest(
                f"step {msg.step}: activations must have shape (B>0, {self.model.width}, h, w), "
                f"got {tuple(a.shape)}"
            )
        if self.expected_hw is not None and tuple(a.shape[-2:]) != self.expected_hw:
            raise BadRequest(
                f"step {msg.step}: activation maps are {tuple(a.shape[-2:])}, this server "
                f"trains on {self.expected_hw}"
            )
        if not torch.isfinite(a).all():
            raise BadRequest(f"step {msg.step}: activations contain NaN or Inf")
        if float(a.abs().max()) > MAX_ABS_ACTIVATION:
            raise BadRequest(f"step {msg.step}: activations exceed +-{MAX_ABS_ACTIVATION:g} "
                             "(BatchNorm outputs are of order 1)")
        y = msg.labels
        if need_labels:
            if y is None:
                raise BadRequest(f"step {msg.step}: a training step needs labels")
            if y.dtype != torch.int64 or tuple(y.shape) != (a.shape[0],):
                raise BadRequest(
                    f"step {msg.step}: labels must be int64 of shape ({a.shape[0]},), "
                    f"got {y.dtype} {tuple(y.shape)}"
                )
            if int(y.min()) < 0 or int(y.max()) >= self.model.num_classes:
                raise BadRequest(
                    f"step {msg.step}: labels must lie in 0..{self.model.num_classes - 1}"
                )
            y = y.to(self.device)
        return a.to(self.device, torch.float32), y

    def train_step(self, msg: Activations) -> Gradient:
        """One server step. Nothing of the model changes unless the whole step succeeds.

        Raises :class:`BadRequest` for invalid activations or labels, and for activations that
        make a loss or gradient non-finite or the solver fail; any other error (a bug, out of
        memory) propagates as it is, after the same roll-back.
        """
        a, y = self._validate(msg, need_labels=True)
        assert y is not None
        self.model.train()
        a = a.detach().requires_grad_(True)  # never touch the caller's tensor
        # BatchNorm updates its running statistics in the forward pass: keep them to roll back
        buffers = saved_buffers(self.model)
        try:
            logits = self.model(a)
            losses = [F.cross_entropy(lg, y) for lg in logits]
            self.optimizer.zero_grad(set_to_none=True)
            torch.stack(losses).sum().backward()
            grads = [p.grad for p in self.model.parameters() if p.grad is not None]
            checks = [*losses, *grads] + ([a.grad] if a.grad is not None else [])
            # one reduction, one host sync (not one per parameter tensor on the hot path)
            if not bool(torch.stack([torch.isfinite(t).all() for t in checks]).all()):
                raise FloatingPointError("non-finite loss or gradient")
        except BaseException as e:
            self.optimizer.zero_grad(set_to_none=True)
            restore_buffers(self.model, buffers)
            if not isinstance(e, (FloatingPointError, torch.linalg.LinAlgError)):
                raise
            log.warning("step %d refused: %s", msg.step, e)
            raise BadRequest(f"step {msg.step}: these activations give a non-finite loss or "
                             f"gradient or a failed recovery ({str(e).splitlines()[0][:200]}); "
                             "the model is unchanged") from e
        self.optimizer.step()
        self.expected_hw = tuple(a.shape[-2:])  # type: ignore[assignment]
        assert a.grad is not None
        with torch.no_grad():
            probs = tuple(lg.softmax(1) for lg in logits)
            decision = self.model.decide(probs)
            stats = StreamStats(
                losses=tuple(float(v.detach()) for v in losses),
                correct=tuple(int((p.argmax(1) == y).sum()) for p in (*probs, decision)),
                count=int(y.shape[0]))
        return Gradient(step=msg.step, grad=a.grad, stats=stats)

    @torch.no_grad()
    def predict(self, msg: Activations) -> Scores:
        a, _ = self._validate(msg, need_labels=False)
        self.model.eval()
        probs = tuple(lg.softmax(1) for lg in self.model(a))
        return Scores(msg.step, probs, self.model.decide(probs))

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
