"""The client's end of a gRPC channel: the same :class:`~pgsl.split.channel.Channel` interface as
the in-process one, so :class:`~pgsl.client.party.ClientParty` and the trainer do not change.

Requests go down one bidirectional stream, one at a time (the client waits for each reply: split
learning is lock-step). A broken stream is reopened on the next call; ``retries`` reconnects with
back-off on UNAVAILABLE, so a site survives a server restart.
"""

from __future__ import annotations

import logging
import queue
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import grpc
import torch

from pgsl.errors import UserError
from pgsl.split.messages import Activations, Gradient, Scores
from pgsl.transport import pgsl_pb2 as pb
from pgsl.transport import pgsl_pb2_grpc as pb_grpc
from pgsl.transport.codec import decode_gradient, decode_scores, encode_request
from pgsl.transport.wire import DEFAULT_MAX_MESSAGE, SITE_HEADER, message_options

log = logging.getLogger(__name__)
_CLOSE = object()
_FIRST_DELAY, _MAX_DELAY = 0.5, 10.0  # seconds between reconnection attempts, doubling
T = TypeVar("T")


class TransportError(UserError):
    """The server refused a request or could not be reached; ``code`` is the gRPC status."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details


class ProtobufChannel:
    """A :class:`~pgsl.split.channel.Channel` whose steps travel as the protobuf messages of
    ``pgsl.proto``: a subclass sets ``wire_dtype`` and carries one request to its reply in
    ``_exchange``."""

    wire_dtype: torch.dtype | None = None

    def _exchange(self, request: pb.StepRequest) -> pb.StepReply:
        raise NotImplementedError

    def train_step(self, message: Activations) -> Gradient:
        request = encode_request(message, train=True, wire_dtype=self.wire_dtype,
                                 reply_dtype=self.wire_dtype)
        return decode_gradient(self._exchange(request), tuple(message.activations.shape))

    def predict(self, message: Activations) -> Scores:
        return decode_scores(self._exchange(encode_request(message, train=False,
                                                           wire_dtype=self.wire_dtype)))


class GrpcChannel(ProtobufChannel):
    """Talks to ``pgsl server`` at ``target`` as ``site``.

    Args:
        tls_dir: folder from ``pgsl certs``; None connects without TLS (the server must run
            ``--insecure``; the site then names itself in a header).
        wire_dtype: e.g. ``torch.float16`` to send activations and receive gradients in half
            precision (half the bytes); None keeps float32.
    """

    def __init__(self, target: str, *, site: str, tls_dir: Path | None,
                 wire_dtype: torch.dtype | None = None, retries: int = 0,
                 max_message: int = DEFAULT_MAX_MESSAGE, timeout: float = 30.0) -> None:
        options = message_options(max_message)
        if tls_dir is not None:
            from pgsl.transport.tls import client_credentials

            self._channel = grpc.secure_channel(target, client_credentials(tls_dir, site), options)
            self._metadata: tuple[tuple[str, str], ...] = ()
        else:
            self._channel = grpc.insecure_channel(target, options)
            self._metadata = ((SITE_HEADER, site),)
        self._stub = pb_grpc.SplitLearningStub(self._channel)
        self.site, self.wire_dtype, self.retries, self.timeout = site, wire_dtype, retries, timeout
        self._requests: queue.Queue | None = None
        self._replies: Iterator[pb.StepReply] | None = None
        self.bytes_sent = 0
        self.bytes_received = 0
        self._width: int | None = None

    def join(self, width: int) -> pb.Welcome:
        """Announce the client's segment width; returns where the server says this site stopped."""
        self._width = width
        return self._retry(lambda: self._stub.Join(pb.Hello(width=width), metadata=self._metadata,
                                                  timeout=self.timeout, wait_for_ready=True), "join")

    def _retry(self, call: Callable[[], T], what: str,
               before_retry: Callable[[], None] | None = None) -> T:
        """``call()``; while it fails with UNAVAILABLE, wait (0.5 s, doubling up to 10 s), run
        ``before_retry`` and call again, at most ``retries`` more times.

        Raises :class:`TransportError` for any other status or the last failure; whatever
        ``before_retry`` raises passes through. ``what`` names the call in the log.
        """
        delay = _FIRST_DELAY
        for attempt in range(self.retries + 1):
            try:
                return call()
            except grpc.RpcError as e:
                error = TransportError(e.code(), e.details())  # type: ignore[attr-defined]
            except TransportError as e:
                error = e
            if error.code != grpc.StatusCode.UNAVAILABLE or attempt == self.retries:
                raise error from None
            log.warning("%s: server unavailable (%s); retrying in %.1f s", what, error.details, delay)
            time.sleep(delay)
            delay = min(delay * 2, _MAX_DELAY)
            if before_retry is not None:
                before_retry()
        raise AssertionError("unreachable")

    def _exchange(self, request: pb.StepRequest) -> pb.StepReply:
        """Send one request and wait for its reply; survive a server restart when ``retries``.

        After a lost connection the site joins again and sends the request again: a server that has
        not seen the step (it restarts from its last checkpoint) runs it, one that has answers from
        its reply cache. Only a server that is past this step fails it, with ABORTED.
        """
        def rejoin() -> None:
            if self._width is None:
                return
            if self.join(self._width).last_step > request.step:
                raise TransportError(grpc.StatusCode.ABORTED,
                                     f"the server applied step {request.step} but its reply was lost")

        return self._retry(lambda: self._exchange_once(request), f"step {request.step}", rejoin)

    def _exchange_once(self, request: pb.StepRequest) -> pb.StepReply:
        if self._replies is None:
            self._requests = queue.Queue()
            self._replies = self._stub.Steps(iter(self._requests.get, _CLOSE),
                                             metadata=self._metadata)
        assert self._requests is not None and self._replies is not None
        self._requests.put(request)
        self.bytes_sent += request.ByteSize()
        try:
            reply = next(self._replies)
        except grpc.RpcError as e:
            self._reset()
            raise TransportError(e.code(), e.details()) from None  # type: ignore[attr-defined]
        except StopIteration:
            self._reset()
            raise TransportError(grpc.StatusCode.UNAVAILABLE, "the server closed the stream") from None
        self.bytes_received += reply.ByteSize()
        if reply.step != request.step:
            raise TransportError(grpc.StatusCode.INTERNAL,
                                 f"reply for step {reply.step} to request {request.step}")
        return reply

    def _reset(self) -> None:
        if self._requests is not None:
            self._requests.put(_CLOSE)
        self._requests, self._replies = None, None

    def close(self) -> None:
        self._reset()
        self._channel.close()

    def __enter__(self) -> GrpcChannel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
