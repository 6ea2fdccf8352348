"""FLARE's server object for PGSL: one shared server party, published to every site.

The FLARE server process builds a :class:`FlareServer` from the job's configuration (the
constructor's arguments are what the job stores), and the Collab runtime calls:

- ``start`` (``@collab.init``): the server party, seeded as ``pgsl server`` seeds it, inside a
  :class:`~pgsl.transport.hub.StepHub` that restores ``OUT/server.pt`` when it exists (a job run
  again continues the shared model); the log goes to ``OUT/server.log`` too.
- ``join(width)`` and ``step(request)`` (``@collab.publish``): a site's calls, named by FLARE
  (``collab.caller``: in a provisioned project, the common name of the site's certificate). They
  take and return the gRPC runtime's protobuf messages serialised; the hub refuses what it refuses
  over gRPC, raised as :class:`~pgsl.transport.hub.Refused` (the site reads the status code).
- ``run`` (``@collab.main``): asks every site to train (``train`` of
  :class:`~pgsl.flare.site_app.FlareSite`, all at once; their steps interleave in arrival order),
  saves the hub, and writes ``OUT/flare-summary.json``: each site's report, or why it failed.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from google.protobuf.message import DecodeError as ProtobufDecodeError
from nvflare.collab import collab

from pgsl.checkpoint import write_json
from pgsl.config import Config, config_from_dict
from pgsl.flare.logs import log_to
from pgsl.runtime.server import server_party
from pgsl.transport import pgsl_pb2 as pb
from pgsl.transport.hub import Party, Refused, StepHub

__all__ = ["SUMMARY", "FlareServer"]

log = logging.getLogger(__name__)
SUMMARY = "flare-summary.json"
SERVER_LOG = "server.log"


class FlareServer:
    """Args (all JSON values: FLARE stores them in the job):
        config: the run's configuration, ``json.dumps(Config.to_dict())``.
        classes: how many classes the streams predict.
        out: folder of the server's checkpoint, log and summary (on the server's machine).
        sites: comma-separated names allowed to call; empty: any site of the project.
        checkpoint_every: training steps between checkpoints.
        device: ``cpu`` or ``cuda``.
        site_timeout: seconds a site's whole training may take.
    """

    def __init__(self, config: str, classes: int, out: str, sites: str = "",
                 checkpoint_every: int = 200, device: str = "cpu",
                 site_timeout: float = 7 * 86400.0) -> None:
        self.config, self.classes, self.out, self.sites = config, classes, out, sites
        self.checkpoint_every, self.device, self.site_timeout = checkpoint_every, device, site_timeout
        self.hub: StepHub | None = None

    @collab.init
    def start(self) -> None:
        cfg = config_from_dict(json.loads(self.config))
        out = Path(self.out)
        out.mkdir(parents=True, exist_ok=True)
        log_to(out / SERVER_LOG)  # for the process's life: the job is the process
        self.hub = StepHub(self.make_party(cfg), checkpoint=out / "server.pt",
                           checkpoint_every=self.checkpoint_every)
        log.info("FLARE server ready: %d classes, sites %s", self.classes, self.sites or "any")

    def make_party(self, cfg: Config) -> Party:
        """The party the hub hosts: :func:`~pgsl.runtime.server.server_party`, as ``pgsl server``'s."""
        return server_party(cfg, self.classes, self.device)

    def _site(self) -> tuple[StepHub, str]:
        if self.hub is None:
            raise Refused("FAILED_PRECONDITION", "the server has not started")
        site = str(collab.caller)
        allowed = {s for s in self.sites.split(",") if s}
        if allowed and site not in allowed:
            raise Refused("PERMISSION_DENIED", f"unknown site {site!r}")
        return self.hub, site

    @collab.publish
    def join(self, width: int) -> bytes:
        """A site's segment width -> ``pb.Welcome`` (where it stopped), serialised."""
        hub, site = self._site()
        if not isinstance(width, int) or isinstance(width, bool):
            raise Refused("INVALID_ARGUMENT", f"join takes the segment width, an int; got {width!r}")
        return hub.join(site, width).SerializeToString()

    @collab.publish
    def step(self, request: bytes) -> bytes:
        """A serialised ``pb.StepRequest`` -> the serialised ``pb.StepReply``, or :class:`Refused`."""
        hub, site = self._site()
        if not isinstance(request, bytes):
            raise Refused("INVALID_ARGUMENT",
                          f"a step is a serialised StepRequest (bytes), not {type(request).__name__}")
        try:
            message = pb.StepRequest.FromString(request)
        except ProtobufDecodeError as e:
            raise Refused("INVALID_ARGUMENT", f"the request does not parse as a StepRequest: {e}") from None
        return hub.answer(site, message).SerializeToString()

    @collab.main
    def run(self) -> dict[str, Any]:
        """Every site trains; -> ``{"sites": {name: report}, "failed": {name: error}, ...}``."""
        results = collab.clients(timeout=self.site_timeout).train()
        summary: dict[str, Any] = {
            "sites": {name: report for name, report in results},
            "failed": {name: str(error) for name, error in results.failures.items()},
        }
        if self.hub is not None:
            self.hub.save()
            summary["train_steps"] = self.hub.train_steps
            summary["last_step"] = dict(self.hub.last_step)
        for name, error in summary["failed"].items():
            log.error("site %s failed: %s", name, error)
        write_json(Path(self.out) / SUMMARY, summary)
        return summary
