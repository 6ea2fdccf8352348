"""The computation server (paper Fig. 2, right of the cut): one shared server model that every
site trains against over gRPC, checkpointed so a stopped server continues where it stopped."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from pathlib import Path

import torch

from pgsl.config import Config
from pgsl.runtime.run import resolve_device
from pgsl.server.party import ServerParty

__all__ = ["SERVER_CHECKPOINT", "allowed_sites", "run_server", "server_party", "tls_or_insecure"]

log = logging.getLogger(__name__)

SERVER_CHECKPOINT = "server.pt"


def server_party(cfg: Config, classes: int, device: str) -> ServerParty:
    """The server's party for ``classes`` classes, its weights seeded by ``cfg.train.seed`` (the
    same for ``pgsl server`` and FLARE's server app)."""
    torch.manual_seed(cfg.train.seed)
    return ServerParty(cfg, classes, resolve_device(device))


def tls_or_insecure(tls: Path | None, insecure: bool) -> Path | None:
    """The TLS folder, refusing both and neither: mutual TLS is the default that must be waived."""
    if (tls is None) == (not insecure):
        raise ValueError("give --tls DIR for mutual TLS, or --insecure to run without it")
    return tls


def allowed_sites(sites: list[str] | None, tls: Path | None) -> set[str] | None:
    """The site names allowed to call: ``sites`` if given, else every ``<site>.pem`` in the TLS
    folder (``pgsl certs``); None (any site) without either."""
    if sites:
        return set(sites)
    if tls is not None:
        return {p.stem for p in tls.glob("*.pem")} - {"ca", "server"}
    return None


def run_server(cfg: Config, out: Path, *, listen: str, tls: Path | None, sites: set[str] | None,
               classes: int, device: str = "cpu", checkpoint_every: int = 200,
               max_message_mb: float = 64.0,
               ready: Callable[[str, int], None] | None = None,
               stop: threading.Event | None = None) -> Path:
    """Serve until ``stop`` is set (by default: SIGINT or SIGTERM), then save the state; return the
    checkpoint's path (``out/server.pt``, restored at start when present). ``tls`` None: no TLS.
    ``ready(host, port)`` is called once the port is bound (``HOST:0`` picks a free one)."""
    from pgsl.transport.server import SplitLearningService, serve

    if classes < 2:
        raise ValueError(f"a classifier needs >= 2 classes, got {classes}")
    if max_message_mb <= 0:
        raise ValueError(f"the largest message must be > 0 MiB, got {max_message_mb}")
    party = server_party(cfg, classes, device)
    out.mkdir(parents=True, exist_ok=True)
    service = SplitLearningService(party, sites=sites, secure=tls is not None,
                                   checkpoint=out / SERVER_CHECKPOINT, checkpoint_every=checkpoint_every)
    grpc_server, port = serve(service, listen, tls_dir=tls, max_message=int(max_message_mb * (1 << 20)))
    if stop is None:
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
    if ready is not None:
        ready(listen.rsplit(":", 1)[0], port)
    stop.wait()
    grpc_server.stop(grace=2).wait()
    service.save()
    log.info("stopped; state saved to %s", out / SERVER_CHECKPOINT)
    return out / SERVER_CHECKPOINT
