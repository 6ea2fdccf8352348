"""The computation server: everything right of the cut in the paper's Figure 2.

activations a -> APG recovery r -> pixel_shuffle u_a, u_r -> three streams:
    S_a(u_a, detached)   S_f(conv1x1(u_a ++ u_r) + u_a)   S_r(u_r)
-> per-stream cross-entropy; only S_f's gradient flows back into ``a`` -> adaptive weighted fusion.
"""

from __future__ import annotations

import logging
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pgsl.config import Config
from pgsl.layers import upsample
from pgsl.recovery.rpca import ProxRecovery
from pgsl.server.fusion import ConvSumFusion, adaptive_weighted_fusion
from pgsl.server.streams import StreamTail
from pgsl.split.messages import Activations, Gradient, Scores, StreamStats

log = logging.getLogger(__name__)


MAX_ABS_ACTIVATION = 1e6


class BadRequest(ValueError):
    """A message the server refuses; the model is not touched."""


class StreamLogits(NamedTuple):
    a: Tensor
    f: Tensor
    r: Tensor


class ServerModel(nn.Module):
    """Recovery, up-sampling, conv-sum fusion and the three stream tails."""

    def __init__(self, cfg: Config, num_classes: int) -> None:
        super().__init__()
        m, rec = cfg.model, cfg.recovery
        self.width = m.width
        self.num_classes = num_classes
        # the comparison models (vanilla split, noise, NoPeek): one stream on the activations
        self.single = cfg.defense.kind != "pgsl"
        if self.single:
            self.s_f = StreamTail(m.width, num_classes, width=m.width, dropout=m.dropout,
                                  pool=m.pool, hidden=m.hidden)
            return
        if m.width % 4:
            raise ValueError(f"model width must be a multiple of 4 (pixel shuffle), got {m.width}")
        self.recovery = ProxRecovery(
            mu=rec.mu, lam=rec.lam, max_iter=rec.max_iter, tol=rec.tol, eta=rec.eta, svt=rec.svt
        )
        up = m.width // 4
        self.fusion = ConvSumFusion(up)

        def tail() -> StreamTail:
            return StreamTail(up, num_classes, width=m.width, dropout=m.dropout, pool=m.pool,
                              hidden=m.hidden)

        self.s_a, self.s_f, self.s_r = tail(), tail(), tail()

    def forward(self, a: Tensor) -> StreamLogits:
        if self.single:
            f = self.s_f(a)
            return StreamLogits(a=f, f=f, r=f)
        u_a = upsample(a)
        u_r = upsample(self.recovery(a))  # no gradient through the solver
        return StreamLogits(
            a=self.s_a(u_a.detach()),
            f=self.s_f(self.fusion(u_a, u_r)),
            r=self.s_r(u_r),
        )


class ServerParty:
    """Owns the server model and its optimiser; answers :class:`Activations` messages."""

    def __init__(self, cfg: Config, num_classes: int, device: torch.device | str = "cpu") -> None:
        self.cfg = cfg
        self.device = torch.device(device)
        self.model = ServerModel(cfg, num_classes).to(self.device)
        self.optimizer = torch.optim.Adam(
            self.model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay
        )
        self.expected_hw: tuple[int, int] | None = None

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
        """One server step. Nothing of the model changes unless the whole step is finite."""
        a, y = self._validate(msg, need_labels=True)
        assert y is not None
        self.model.train()
        a = a.detach().requires_grad_(True)  # never touch the caller's tensor
        # BatchNorm updates its running statistics in the forward pass: keep them to roll back
        buffers = {k: v.clone() for k, v in self.model.named_buffers()}
        try:
            logits = self.model(a)
            if self.model.single:
                losses = [F.cross_entropy(logits.f, y)] * 3
                total = losses[0]
            else:
                losses = [F.cross_entropy(lg, y) for lg in logits]
                total = torch.stack(losses).sum()
            self.optimizer.zero_grad(set_to_none=True)
            total.backward()
            grads = [p.grad for p in self.model.parameters() if p.grad is not None]
            checks = [*losses, *grads] + ([a.grad] if a.grad is not None else [])
            # one reduction, one host sync (not one per parameter tensor on the hot path)
            if not bool(torch.stack([torch.isfinite(t).all() for t in checks]).all()):
                raise FloatingPointError("non-finite loss or gradient")
        except (FloatingPointError, RuntimeError) as e:  # LinAlgError is a RuntimeError
            self.optimizer.zero_grad(set_to_none=True)
            with torch.no_grad():
                for k, v in self.model.named_buffers():
                    v.copy_(buffers[k])
            log.warning("step %d refused: %s", msg.step, e)
            raise BadRequest(f"step {msg.step}: these activations give a non-finite loss or "
                             f"gradient ({str(e).splitlines()[0][:200]}); the model is unchanged") from e
        self.optimizer.step()
        self.expected_hw = tuple(a.shape[-2:])  # type: ignore[assignment]
        assert a.grad is not None
        with torch.no_grad():
            probs = [lg.softmax(1) for lg in logits]
            fused = self.fuse(*probs)
            loss_a, loss_f, loss_r = (float(v.detach()) for v in losses)
            ok_a, ok_f, ok_r, ok_awa = (int((p.argmax(1) == y).sum()) for p in (*probs, fused))
        stats = StreamStats(loss_a=loss_a, loss_f=loss_f, loss_r=loss_r, correct_a=ok_a,
                            correct_f=ok_f, correct_r=ok_r, correct_awa=ok_awa, count=int(y.shape[0]))
        return Gradient(step=msg.step, grad=a.grad, stats=stats)

    def fuse(self, s_a: Tensor, s_f: Tensor, s_r: Tensor) -> Tensor:
        if self.model.single:
            return s_f
        return adaptive_weighted_fusion(
            s_r, s_f, s_a, weights=self.cfg.fusion.weights, confidence=self.cfg.fusion.confidence
        )

    @torch.no_grad()
    def predict(self, msg: Activations) -> Scores:
        a, _ = self._validate(msg, need_labels=False)
        self.model.eval()
        s_a, s_f, s_r = (lg.softmax(1) for lg in self.model(a))
        return Scores(msg.step, s_a, s_f, s_r, self.fuse(s_a, s_f, s_r))

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
