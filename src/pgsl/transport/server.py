"""The computation server over gRPC: one :class:`ServerParty` shared by every site.

Scheduling: the server's modules are shared state and autograd is not safe under concurrent
backward passes, so every step (train or predict) of every site runs under one lock, in arrival
order; gRPC's thread pool only overlaps the decoding, encoding and network I/O. Sites therefore
interleave batch by batch, like round-robin split learning with one shared server model.

Faults: ``INVALID_ARGUMENT`` (with its message) is kept for what the client sent: a request that
does not decode, or that :class:`ServerParty` refuses with :class:`BadRequest` (shape, dtype,
NaN/Inf, labels, a non-finite loss or gradient, the solver failing on those activations). A step
not after the site's last accepted one gets ``FAILED_PRECONDITION``; a certificate whose common name
is not a configured site ``PERMISSION_DENIED``; an oversized message is refused by gRPC itself
(``RESOURCE_EXHAUSTED``). Any other exception is the server's own fault (a bug, memory running
out): the site gets ``INTERNAL`` with "internal error at step N; see the server log", the server
log gets the full traceback, the step is not recorded as accepted, and the server goes on serving.
None of these touches the model (the party restores its state when it fails). A site that
disconnects is logged and forgotten until it joins again. The server state is checkpointed atomically every
``checkpoint_every`` training steps and on shutdown, and reloaded on restart.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, Protocol

import grpc
import torch

from pgsl.checkpoint import load_checkpoint, save_checkpoint
from pgsl.server.party import BadRequest
from pgsl.split.messages import Activations, Gradient, Scores, StreamStats
from pgsl.transport import pgsl_pb2 as pb
from pgsl.transport import pgsl_pb2_grpc as pb_grpc
from pgsl.transport.codec import DecodeError, decode_request, encode_gradient, encode_scores
from pgsl.transport.wire import DEFAULT_MAX_MESSAGE, SITE_HEADER, message_options

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_MAX_MESSAGE", "SITE_HEADER", "SplitLearningService", "serve"]


@dataclass
class _Window:
    """A site's training steps since its last throughput line."""

    steps: int = 0
    samples: int = 0
    loss_sums: list[float] = field(default_factory=list)  # per stream, weighted by batch size
    start: float = field(default_factory=time.perf_counter)


def _abort(context: grpc.ServicerContext, code: grpc.StatusCode, details: str) -> NoReturn:
    """End the RPC with ``code``; ``context.abort`` raises, this says so to the type checker."""
    context.abort(code, details)
    raise AssertionError("unreachable")


def _fmt(losses: Sequence[float]) -> str:
    return "/".join(f"{x:.4f}" for x in losses)


class Party(Protocol):
    """What the service hosts: :class:`ServerParty`, or any other endpoint of the protocol (a
    malicious server in an attack experiment)."""

    device: torch.device

    @property
    def width(self) -> int: ...

    @property
    def num_classes(self) -> int: ...

    def train_step(self, msg: Activations) -> Gradient: ...

    def predict(self, msg: Activations) -> Scores: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> Any: ...


class SplitLearningService(pb_grpc.SplitLearningServicer):
    def __init__(self, party: Party, *, sites: set[str] | None = None, secure: bool = True,
                 checkpoint: Path | None = None, checkpoint_every: int = 200,
                 log_every: int = 100) -> None:
        self.party = party
        self.sites = sites
        self.secure = secure
        self.checkpoint = checkpoint
        self.checkpoint_every = checkpoint_every
        self.log_every = log_every
        self.lock = threading.RLock()  # save() takes it too, also from inside a step
        self.last_step: dict[str, int] = {}
        self.last_reply: dict[str, bytes] = {}  # makes a resent last step idempotent
        self.train_steps = 0
        self._window: dict[str, _Window] = defaultdict(_Window)
        if checkpoint is not None and checkpoint.is_file():
            state = load_checkpoint(checkpoint, party.device)
            party.load_state_dict(state["server"])
            self.last_step = {str(k): int(v) for k, v in state["last_step"].items()}
            self.last_reply = {str(k): v.numpy().tobytes() for k, v in state["last_reply"].items()}
            self.train_steps = int(state["train_steps"])
            log.info("restored server state from %s (%d training steps)", checkpoint,
                     self.train_steps)

    # ---------------------------------------------------------------- identity
    def _site(self, context: grpc.ServicerContext) -> str:
        if self.secure:
            names = context.auth_context().get("x509_common_name")
            if not names:
                _abort(context, grpc.StatusCode.UNAUTHENTICATED, "a client certificate is required")
            site = names[0].decode()
        else:
            site = dict(context.invocation_metadata()).get(SITE_HEADER, "")
            if not site:
                _abort(context, grpc.StatusCode.UNAUTHENTICATED, f"missing {SITE_HEADER} metadata")
        if self.sites is not None and site not in self.sites:
            _abort(context, grpc.StatusCode.PERMISSION_DENIED, f"unknown site {site!r}")
        return site

    # ---------------------------------------------------------------- RPCs
    def Join(self, request: pb.Hello, context: grpc.ServicerContext) -> pb.Welcome:
        site = self._site(context)
        width = self.party.width
        if request.width != width:
            _abort(context, grpc.StatusCode.FAILED_PRECONDITION,
                   f"client segment width {request.width} does not match the server's {width}")
        with self.lock:
            last = self.last_step.get(site, 0)
        log.info("site %s joined (last step %d)", site, last)
        return pb.Welcome(site=site, last_step=last, width=width,
                          num_classes=self.party.num_classes)

    def Steps(self, request_iterator: Iterator[pb.StepRequest],
              context: grpc.ServicerContext) -> Iterator[pb.StepReply]:
        site = self._site(context)
        try:
            for request in request_iterator:
                yield self._answer(site, request, context)
        finally:
            if not context.is_active():
                log.info("site %s disconnected", site)

    def _answer(self, site: str, request: pb.StepRequest,
                context: grpc.ServicerContext) -> pb.StepReply:
        try:
            message, train, reply_dtype = decode_request(request)
        except DecodeError as e:
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(e))
        except Exception:
            self._internal(site, request.step, context)
        with self.lock:
            last = self.last_step.get(site, 0)
            if message.step == last and site in self.last_reply:
                # the site lost our reply (connection or server restart) and asks again
                log.info("site %s resent step %d: answering from the reply cache", site, last)
                return pb.StepReply.FromString(self.last_reply[site])
            if message.step <= last:
                _abort(context, grpc.StatusCode.FAILED_PRECONDITION,
                       f"out-of-order step {message.step}: site {site} is at step {last}")
            reply, stats = self._run(site, message, train, reply_dtype, context)
            self.last_step[site] = message.step
            self.last_reply[site] = reply.SerializeToString()
            if stats is not None:
                self.train_steps += 1
                self._account(site, stats)
                if self.checkpoint and self.train_steps % self.checkpoint_every == 0:
                    self.save()
        return reply

    def _run(self, site: str, message: Activations, train: bool, reply_dtype: torch.dtype | None,
             context: grpc.ServicerContext) -> tuple[pb.StepReply, StreamStats | None]:
        """One step of the party, encoded; -> (reply, the training statistics or None).

        Aborts the RPC with ``INVALID_ARGUMENT`` when the party refuses the request, ``INTERNAL``
        on any other failure; the caller records nothing then.
        """
        try:
            if train:
                gradient = self.party.train_step(message)
                return encode_gradient(gradient, reply_dtype), gradient.stats
            return encode_scores(self.party.predict(message)), None
        except BadRequest as e:
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(e))
        except Exception:
            self._internal(site, message.step, context)

    @staticmethod
    def _internal(site: str, step: int, context: grpc.ServicerContext) -> NoReturn:
        """Log the exception being handled with its traceback; abort the RPC with ``INTERNAL``."""
        log.exception("internal error at step %d of site %s", step, site)
        _abort(context, grpc.StatusCode.INTERNAL, f"internal error at step {step}; see the server log")

    def _account(self, site: str, stats: StreamStats) -> None:
        """Per site: log every step's stream losses (debug) and, every ``log_every`` training steps,
        the throughput and the window's mean loss per stream (info)."""
        w = self._window[site]
        w.steps += 1
        w.samples += stats.count
        w.loss_sums = [s + loss * stats.count for s, loss in
                       zip(w.loss_sums or [0.0] * len(stats.losses), stats.losses, strict=True)]
        log.debug("site %s step %d stream losses %s", site, self.last_step[site], _fmt(stats.losses))
        if w.steps >= self.log_every:
            elapsed = time.perf_counter() - w.start
            log.info("site %s: %d steps, %.0f samples/s, mean stream losses %s", site, w.steps,
                     w.samples / elapsed, _fmt([x / max(w.samples, 1) for x in w.loss_sums]))
            self._window[site] = _Window()

    def save(self) -> None:
        """Atomic checkpoint of the shared server state, replies included."""
        if self.checkpoint is None:
            return
        with self.lock:
            replies = {k: torch.frombuffer(bytearray(v), dtype=torch.uint8)
                       for k, v in self.last_reply.items()}
            save_checkpoint(self.checkpoint, {"server": self.party.state_dict(),
                                              "last_step": dict(self.last_step),
                                              "last_reply": replies,
                                              "train_steps": self.train_steps})


def serve(service: SplitLearningService, listen: str, *, tls_dir: Path | None,
          max_message: int = DEFAULT_MAX_MESSAGE, workers: int = 16) -> tuple[grpc.Server, int]:
    """Start a gRPC server; returns it and the bound port (``HOST:0`` picks a free one)."""
    from pgsl.transport.tls import server_credentials

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers),
                         options=message_options(max_message))
    pb_grpc.add_SplitLearningServicer_to_server(service, server)
    if tls_dir is not None:
        port = server.add_secure_port(listen, server_credentials(tls_dir))
    else:
        port = server.add_insecure_port(listen)
    if port == 0:
        raise OSError(f"cannot listen on {listen}")
    server.start()
    return server, port
