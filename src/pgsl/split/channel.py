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
    def train_step(self, message: Activations) -> Gradient: ...

    def predict(self, message: Activations) -> Scores: ...


class ServerEndpoint(Protocol):
    """What a server offers a channel."""

    def train_step(self, message: Activations) -> Gradient: ...

    def predict(self, message: Activations) -> Scores: ...


def copy_message(message: M) -> M:
    """The message with every tensor detached and cloned: what a wire would deliver."""
    tensors: dict[str, Any] = {
        f.name: v.detach().clone()
        for f in dataclasses.fields(message)
        if isinstance(v := getattr(message, f.name), Tensor)
    }
    return dataclasses.replace(message, **tensors)


class InProcessChannel:
    """Delivers messages to a server object in the same process."""

    def __init__(self, server: ServerEndpoint) -> None:
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
    return sum(
        v.numel() * v.element_size()
        for f in dataclasses.fields(message)
        if isinstance(v := getattr(message, f.name), Tensor)
    )
