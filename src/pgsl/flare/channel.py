"""The site's end of a FLARE channel: :class:`~pgsl.split.channel.Channel` over Collab calls.

A step is the protobuf ``StepRequest`` of the gRPC runtime, serialised, sent to the server's
published ``step`` method; the reply comes back the same way. Split learning is lock-step: one call
at a time, the site waits for each reply. A refusal of the server arrives as FLARE's
``CollabCallError``; it is raised here as :class:`~pgsl.transport.client.TransportError` with the
status code the server named, so the driver and the CLI handle both runtimes alike.
"""

from __future__ import annotations

import re

import grpc
import torch
from nvflare.collab import collab

from pgsl.transport import pgsl_pb2 as pb
from pgsl.transport.client import ProtobufChannel, TransportError

__all__ = ["FlareChannel"]

_REFUSAL = re.compile(r"\b(INVALID_ARGUMENT|FAILED_PRECONDITION|INTERNAL|PERMISSION_DENIED): (.*)",
                      re.DOTALL)


class FlareChannel(ProtobufChannel):
    """Talks to the job's :class:`~pgsl.flare.server_app.FlareServer` from inside a FLARE site.

    Args:
        wire_dtype: e.g. ``torch.float16`` to send activations and receive gradients in half
            precision; None keeps float32.
        timeout: seconds a call may wait for the server (its queue of other sites' steps included).
    """

    def __init__(self, *, wire_dtype: torch.dtype | None = None, timeout: float = 600.0) -> None:
        self.wire_dtype, self.timeout = wire_dtype, timeout
        self.bytes_sent = 0
        self.bytes_received = 0
        self.samples_sent = 0  # rows of activations carried (bytes per sample = sent / samples)

    def _call(self, method: str, payload: bytes | int) -> bytes:
        try:
            reply = getattr(collab.server(timeout=self.timeout), method)(payload)
        except Exception as e:  # CollabCallError, a timeout, the job aborting
            cause = str(getattr(e, "cause", e))
            if match := _REFUSAL.search(cause):
                raise TransportError(grpc.StatusCode[match[1]], match[2].strip()) from None
            raise TransportError(grpc.StatusCode.UNAVAILABLE,
                                 f"{method} through FLARE failed: {type(e).__name__}: {e}") from None
        if not isinstance(reply, bytes):
            raise TransportError(grpc.StatusCode.INTERNAL,
                                 f"the server's {method} answered a {type(reply).__name__}, not bytes")
        return reply

    def join(self, width: int) -> pb.Welcome:
        """Announce the client's segment width; returns where the server says this site stopped."""
        return pb.Welcome.FromString(self._call("join", width))

    def _exchange(self, request: pb.StepRequest) -> pb.StepReply:
        raw = request.SerializeToString()
        self.bytes_sent += len(raw)
        answer = self._call("step", raw)
        self.bytes_received += len(answer)
        self.samples_sent += int(request.activations.shape[0]) if request.activations.shape else 0
        reply = pb.StepReply.FromString(answer)
        if reply.step != request.step:
            raise TransportError(grpc.StatusCode.INTERNAL,
                                 f"reply for step {reply.step} to request {request.step}")
        return reply

