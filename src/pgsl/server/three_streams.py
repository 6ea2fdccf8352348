"""PGSL's server (paper §IV-C to IV-E; docs/design.md#the-pgsl-pipeline).

activations a -> APG recovery r -> pixel_shuffle u_a, u_r -> three streams:
    S_a(u_a, detached)   S_f(conv1x1(u_a ++ u_r) + u_a)   S_r(u_r)
-> per-stream cross-entropy; only S_f's gradient flows back into ``a`` -> adaptive weighted fusion
``S_awa`` (eqs. 9-11) is the decision.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from torch import Tensor, nn

from pgsl.layers import upsample
from pgsl.recovery.rpca import ProxRecovery
from pgsl.server.fusion import ConvSumFusion, adaptive_weighted_fusion
from pgsl.server.model import ServerModel
from pgsl.server.streams import StreamTail

if TYPE_CHECKING:
    from pgsl.config import Config

__all__ = ["ThreeStreams"]


class ThreeStreams(ServerModel):
    """Recovery, up-sampling, conv-sum fusion, the three stream tails and the decision fusion."""

    streams = ("S_a", "S_f", "S_r")

    def __init__(self, cfg: Config, num_classes: int) -> None:
        super().__init__(cfg, num_classes)
        m, rec = cfg.model, cfg.recovery
        if m.width % 4:
            raise ValueError(f"model width must be a multiple of 4 (pixel shuffle), got {m.width}")
        self.weights, self.confidence = cfg.fusion.weights, cfg.fusion.confidence
        self.recovery = ProxRecovery(
            mu=rec.mu, lam=rec.lam, max_iter=rec.max_iter, tol=rec.tol, eta=rec.eta, svt=rec.svt
        )
        up = m.width // 4
        self.fusion = ConvSumFusion(up)

        def tail() -> StreamTail:
            return StreamTail(up, num_classes, width=m.width, dropout=m.dropout, pool=m.pool,
                              hidden=m.hidden)

        self.s_a, self.s_f, self.s_r = tail(), tail(), tail()

    def forward(self, a: Tensor) -> tuple[Tensor, ...]:
        u_a = upsample(a)
        u_r = upsample(self.recovery(a))  # no gradient through the solver
        return self.s_a(u_a.detach()), self.s_f(self.fusion(u_a, u_r)), self.s_r(u_r)

    def decide(self, scores: tuple[Tensor, ...]) -> Tensor:
        s_a, s_f, s_r = scores
        return adaptive_weighted_fusion(s_r, s_f, s_a, weights=self.weights,
                                        confidence=self.confidence)

    def client_path(self, a: Tensor) -> Tensor:
        return self.s_f(self.fusion(upsample(a), upsample(self.recovery(a))))

    def client_path_modules(self) -> list[nn.Module]:
        return [self.fusion, self.s_f]

    def observables(self) -> dict[str, Callable[[Tensor], Tensor]]:
        return {"recovered": self.recovery}
