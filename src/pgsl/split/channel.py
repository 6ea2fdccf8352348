"""Channels carry messages between the two parties; the in-process one is the default.

A channel is the only thing the client holds of the server. The in-process channel copies every
tensor it carries (``detach().clone()``), so neither party can reach the other's autograd graph or
memory, exactly as if the message had crossed a network.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol, TypeVar

from torch import Tensor

from pgsl.split.messages import Activations, Gradient, Scores

M = TypeVar("M", Activations, Gradient, Scores)


class Channel(Protocol):
    """Carries a client's messages to a server and its replies back; a server object offers the
    same two methods (it is the endpoint of an in-process channel)."""

    def train_step(self, message: Activations) -> Gradient: ...

    def predict(self, message: Activations) -> Scores: ...


def _tensors(message: Activations | Gradient | Scores) -> dict[str, Tensor | tuple[Tensor, ...]]:
    """The message's tensor fields (a tuple of tensors counts as one field)."""
    out: dict[str, Tensor | tuple[Tensor, ...]] = {}
    for f in dataclasses.fields(message):
        v = getattr(message, f.name)
        if isinstance(v, Tensor) or (isinstance(v, tuple) and v and isinstance(v[0], Tensor)):
            out[f.name] = v
    return out


def copy_message(message: M) -> M:
    """The message with every tensor detached and cloned: what a wire would deliver."""
    copies: dict[str, Any] = {
        k: v.detach().clone() if isinstance(v, Tensor) else tuple(t.detach().clone() for t in v)
        for k, v in _tensors(message).items()
    }
    return dataclasses.replace(message, **copies)


class InProcessChannel:
    """Delivers messages to a server object in the same process."""

    def __init__(self, server: Channel) -> None:
        self._server = server
        self.bytes_sent = 0
        self.bytes_received = 0

    def train_step(self, message: Activations) -> Gradient:
        self.bytes_sent += _nbytes(message)
        reply = copy_message(self._server.train_step(copy_message(message)))
        self.bytes_received += _nbytes(reply)
        return reply

    def predict(self, message: Activations) -> Scores:
        self.bytes_sent += _nbytes(message)
        reply = copy_message(self._server.predict(copy_message(message)))
        self.bytes_received += _nbytes(reply)
        return reply


def _nbytes(message: Activations | Gradient | Scores) -> int:
    return sum(t.numel() * t.element_size()
               for v in _tensors(message).values() for t in (v if isinstance(v, tuple) else (v,)))
