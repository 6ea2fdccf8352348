"""The computation server over gRPC: a :class:`~pgsl.transport.hub.StepHub` (one shared
:class:`ServerParty`, arrival-order scheduling, validation, reply cache, checkpoints) behind the
``SplitLearning`` service.

What this module adds is gRPC's: a site is the common name of its client certificate (mutual TLS)
or, without TLS, the ``x-pgsl-site`` header; a name that is not a configured site gets
``PERMISSION_DENIED``; the hub's refusals become the status of the same name with its message;
an oversized message is refused by gRPC itself (``RESOURCE_EXHAUSTED``). A site that disconnects is
logged and forgotten until it joins again.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import NoReturn

import grpc

from pgsl.transport import pgsl_pb2 as pb
from pgsl.transport import pgsl_pb2_grpc as pb_grpc
from pgsl.transport.hub import Party, Refused, StepHub
from pgsl.transport.wire import DEFAULT_MAX_MESSAGE, SITE_HEADER, message_options

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_MAX_MESSAGE", "SITE_HEADER", "Party", "SplitLearningService", "serve"]


def _abort(context: grpc.ServicerContext, code: grpc.StatusCode, details: str) -> NoReturn:
    """End the RPC with ``code``; ``context.abort`` raises, this says so to the type checker."""
    context.abort(code, details)
    raise AssertionError("unreachable")


class SplitLearningService(StepHub, pb_grpc.SplitLearningServicer):
    """The gRPC face of a :class:`StepHub` (whose arguments it takes, with ``sites``: the names
    allowed, None for any; ``secure``: sites are named by their certificates, else by a header)."""

    def __init__(self, party: Party, *, sites: set[str] | None = None, secure: bool = True,
                 checkpoint: Path | None = None, checkpoint_every: int = 200,
                 log_every: int = 100) -> None:
        super().__init__(party, checkpoint=checkpoint, checkpoint_every=checkpoint_every,
                         log_every=log_every)
        self.sites = sites
        self.secure = secure

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

    def Join(self, request: pb.Hello, context: grpc.ServicerContext) -> pb.Welcome:
        site = self._site(context)
        try:
            return self.join(site, request.width)
        except Refused as e:
            _abort(context, grpc.StatusCode[e.code], e.details)

    def Steps(self, request_iterator: Iterator[pb.StepRequest],
              context: grpc.ServicerContext) -> Iterator[pb.StepReply]:
        site = self._site(context)
        try:
            for request in request_iterator:
                try:
                    reply = self.answer(site, request)
                except Refused as e:
                    _abort(context, grpc.StatusCode[e.code], e.details)
                yield reply
        finally:
            if not context.is_active():
                log.info("site %s disconnected", site)


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
