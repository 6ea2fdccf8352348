"""Server models: what the server trains on the activations that cross the cut.

A defence names its server model by a key of :data:`SERVER_MODELS`. Every model maps activations
``(B, width, h, w)`` to one logit tensor ``(B, K)`` per stream, combines its streams' softmax scores
into one decision, and says which stream's loss trains the client (the only gradient that crosses
back) and what else the server derives from the activations that an attacker at the server could
observe (PGSL: the recovered maps).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from torch import Tensor, nn

if TYPE_CHECKING:
    from pgsl.config import Config

__all__ = ["SERVER_MODELS", "ServerModel", "build_server_model"]


class ServerModel(nn.Module):
    """Base class. Subclasses set ``streams`` and implement the four methods below.

    Attributes:
        width: channels of the activations it accepts.
        num_classes: K.
        streams: stream names, in the order of :meth:`forward`'s logits.
    """

    streams: tuple[str, ...] = ()

    def __init__(self, cfg: Config, num_classes: int) -> None:
        super().__init__()
        self.width = cfg.model.width
        self.num_classes = num_classes

    def forward(self, a: Tensor) -> tuple[Tensor, ...]:
        """``(B, width, h, w)`` -> one ``(B, K)`` logit tensor per stream. Every stream's loss
        is summed in training; only :meth:`client_path`'s gradient may reach ``a``."""
        raise NotImplementedError

    def decide(self, scores: tuple[Tensor, ...]) -> Tensor:
        """Per-stream ``(B, K)`` softmax scores -> the model's ``(B, K)`` decision."""
        raise NotImplementedError

    def client_path(self, a: Tensor) -> Tensor:
        """``(B, width, h, w)`` -> the logits whose loss trains the client, differentiable in ``a``."""
        raise NotImplementedError

    def client_path_modules(self) -> list[nn.Module]:
        """The modules on :meth:`client_path`, input side first; the last one's last layer is
        :meth:`output_layer`."""
        raise NotImplementedError

    def output_layer(self) -> nn.Linear:
        """The final linear layer of :meth:`client_path` (its bias gradient is dL/dlogits)."""
        last = self.client_path_modules()[-1]
        layer = [m for m in last.modules() if isinstance(m, nn.Linear)][-1]
        return layer

    def observables(self) -> dict[str, Callable[[Tensor], Tensor]]:
        """What the server derives from the activations besides the streams, by name: maps
        ``(B, width, h, w)`` -> an observation. Empty for a plain split."""
        return {}


def _one_stream() -> type[ServerModel]:
    from pgsl.server.one_stream import OneStream

    return OneStream


def _three_streams() -> type[ServerModel]:
    from pgsl.server.three_streams import ThreeStreams

    return ThreeStreams


# name -> a loader of its class (a loader keeps the solver out of processes that never train PGSL)
SERVER_MODELS: dict[str, Callable[[], type[ServerModel]]] = {
    "one-stream": _one_stream,
    "three-streams": _three_streams,
}


def build_server_model(name: str, cfg: Config, num_classes: int) -> ServerModel:
    if name not in SERVER_MODELS:
        raise ValueError(f"unknown server model {name!r}; one of {', '.join(SERVER_MODELS)}")
    return SERVER_MODELS[name]()(cfg, num_classes)
