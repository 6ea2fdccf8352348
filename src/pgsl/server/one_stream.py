"""One stream on the activations: the server side of the vanilla split and its baselines
(paper §V-C): conv3 ... conv7 -> pool -> FC -> FC on ``(B, width, h, w)``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import Tensor, nn

from pgsl.server.model import ServerModel
from pgsl.server.streams import StreamTail

if TYPE_CHECKING:
    from pgsl.config import Config

__all__ = ["OneStream"]


class OneStream(ServerModel):
    streams = ("S",)

    def __init__(self, cfg: Config, num_classes: int) -> None:
        super().__init__(cfg, num_classes)
        m = cfg.model
        self.s = StreamTail(m.width, num_classes, width=m.width, dropout=m.dropout, pool=m.pool,
                            hidden=m.hidden)

    def forward(self, a: Tensor) -> tuple[Tensor, ...]:
        return (self.s(a),)

    def decide(self, scores: tuple[Tensor, ...]) -> Tensor:
        return scores[0]

    def client_path(self, a: Tensor) -> Tensor:
        return self.s(a)

    def client_path_modules(self) -> list[nn.Module]:
        return [self.s]
