"""The computation server over gRPC: one :class:`ServerParty` shared by every site.

Scheduling: the server's modules are shared state and autograd is not safe under concurrent
backward passes, so every step (train or predict) of every site runs under one lock, in arrival
order; gRPC's thread pool only overlaps the decoding, encoding and network I/O. Sites therefore
interleave batch by batch, like round-robin split learning with one shared server model.

Faults: a request that does not decode, or that :class:`ServerParty` refuses (shape, dtype,
NaN/Inf, labels), is answered with ``INVALID_ARGUMENT`` and its message; a step not after the
site's last accepted one with ``FAILED_PRECONDITION``; a certificate whose common name is not a
configured site with ``PERMISSION_DENIED``; an oversized message is refused by gRPC itself
(``RESOURCE_EXHAUSTED``). None of these touches the model. A site that disconnects is logged and
forgotten until it joins again. The server state is checkpointed atomically every
``checkpoint_every`` training steps and on shutdown, and reloaded on restart.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import torch

from pgsl.checkpoint import load_checkpoint, save_checkpoint
from pgsl.server.party import BadRequest, ServerParty
from pgsl.transport import pgsl_pb2 as pb
from pgsl.transport import pgsl_pb2_grpc as pb_grpc
from pgsl.transport.codec import DecodeError, decode_request, encode_gradient, encode_scores

log = logging.getLogger(__name__)

SITE_HEADER = "x-pgsl-site"  # identifies a site on an insecure (no-TLS) server only
DEFAULT_MAX_MESSAGE = 64 << 20


class SplitLearningService(pb_grpc.SplitLearningServicer):
    def __init__(self, party: ServerParty, *, sites: set[str] | None = None, secure: bool = True,
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
        self._window: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0, time.perf_counter()])
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
                context.abort(grpc.StatusCode.UNAUTHENTICATED, "a client certificate is required")
            site = names[0].decode()
        else:
            site = dict(context.invocation_metadata()).get(SITE_HEADER, "")
            if not site:
                context.abort(grpc.StatusCode.UNAUTHENTICATED, f"missing {SITE_HEADER} metadata")
        if self.sites is not None and site not in self.sites:
            context.abort(grpc.StatusCode.PERMISSION_DENIED, f"unknown site {site!r}")
        return site

    # ---------------------------------------------------------------- RPCs
    def Join(self, request: pb.Hello, context: grpc.ServicerContext) -> pb.Welcome:
        site = self._site(context)
        width = self.party.model.width
        if request.width != width:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                          f"client segment width {request.width} does not match the server's {width}")
        with self.lock:
            last = self.last_step.get(site, 0)
        log.info("site %s joined (last step %d)", site, last)
        return pb.Welcome(site=site, last_step=last, width=width,
                          num_classes=self.party.model.num_classes)

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
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        with self.lock:
            last = self.last_step.get(site, 0)
            if message.step == last and site in self.last_reply:
                # the site lost our reply (connection or server restart) and asks again
                log.info("site %s resent step %d: answering from the reply cache", site, last)
                return pb.StepReply.FromString(self.last_reply[site])
            if message.step <= last:
                context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                              f"out-of-order step {message.step}: site {site} is at step {last}")
            try:
                if train:
                    gradient = self.party.train_step(message)
                else:
                    scores = self.party.predict(message)
            except BadRequest as e:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
            reply = encode_gradient(gradient, reply_dtype) if train else encode_scores(scores)
            self.last_step[site] = message.step
            self.last_reply[site] = reply.SerializeToString()
            if train:
                self.train_steps += 1
                self._account(site, gradient.stats.loss_f, gradient.stats.count)
                if self.checkpoint and self.train_steps % self.checkpoint_every == 0:
                    self.save()
        return reply

    def _account(self, site: str, loss: float, count: int) -> None:
        w = self._window[site]
        w[0] += 1
        w[1] += loss * count
        w[2] += count
        log.debug("site %s step %d loss_f %.4f", site, self.last_step[site], loss)
        if w[0] >= self.log_every:
            elapsed = time.perf_counter() - w[3]
            log.info("site %s: %d steps, %.0f samples/s, mean loss_f %.4f", site, int(w[0]),
                     w[2] / elapsed, w[1] / w[2])
            self._window[site] = [0.0, 0.0, 0.0, time.perf_counter()]

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

    options = [("grpc.max_receive_message_length", max_message),
               ("grpc.max_send_message_length", max_message)]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers), options=options)
    pb_grpc.add_SplitLearningServicer_to_server(service, server)
    if tls_dir is not None:
        port = server.add_secure_port(listen, server_credentials(tls_dir))
    else:
        port = server.add_insecure_port(listen)
    if port == 0:
        raise OSError(f"cannot listen on {listen}")
    server.start()
    return server, port
