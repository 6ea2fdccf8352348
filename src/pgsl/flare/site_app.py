"""FLARE's site object for PGSL: a hospital's data and client segment; it never loads server code.

The FLARE client process of each site builds a :class:`FlareSite` from the job (the constructor's
arguments), reads its own settings from the job's per-site properties, and trains when the server's
``main`` calls ``train``: the driver of ``pgsl client`` (:func:`~pgsl.runtime.train_run`)
with a :class:`~pgsl.flare.channel.FlareChannel` in place of gRPC. The run folder is
``OUT/<site>`` on the site's machine, with ``site.log`` (epochs, throughput, bytes per sample).

Restarts: FLARE does not restart a site's part of a job that died, nor resume a job; a job run
again starts every site afresh. What pgsl adds: a site whose folder holds a checkpoint continues
from it (its epochs are checkpointed atomically, as in ``pgsl train``), and the server continues
from ``server.pt`` (its per-site last step and reply included), so running the job again resumes
where each party stopped.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from nvflare.collab import collab

from pgsl.config import config_from_dict
from pgsl.flare.channel import FlareChannel
from pgsl.flare.logs import log_to
from pgsl.runtime import CHECKPOINT, train_run
from pgsl.split.trainer import DECISION
from pgsl.transport.wire import wire_dtype

__all__ = ["SITE_LOG", "FlareSite"]

log = logging.getLogger(__name__)
SITE_LOG = "site.log"


class FlareSite:
    """Args (all JSON values: FLARE stores them in the job):
        config: the run's configuration, ``json.dumps(Config.to_dict())``; each site may override
            ``data_dir`` and ``seed`` through its per-site properties.
        out: folder of the sites' run folders (``OUT/<site>``, on each site's machine).
        wire_dtype: ``float32``, ``float16`` or ``bfloat16`` on the wire.
        device: ``cpu`` or ``cuda``.
        timeout: seconds one call to the server may take.
    """

    def __init__(self, config: str, out: str, wire_dtype: str = "float32", device: str = "cpu",
                 timeout: float = 600.0) -> None:
        self.config, self.out, self.wire_dtype, self.device = config, out, wire_dtype, device
        self.timeout = timeout
        self.overrides: dict[str, Any] = {}

    @collab.init
    def start(self) -> None:
        wire_dtype(self.wire_dtype)  # a bad name fails here, before training
        self.overrides = {k: v for k in ("data_dir", "seed")
                          if (v := collab.get_app_prop(k)) is not None}

    @collab.publish
    def train(self) -> dict[str, Any]:
        """Train (or resume) this site's run against the job's server; -> the site's report."""
        site = str(collab.site_name)
        cfg = config_from_dict(json.loads(self.config))
        if "data_dir" in self.overrides:
            cfg = cfg.replace(data={"data_dir": str(self.overrides["data_dir"])})
        if "seed" in self.overrides:
            cfg = cfg.replace(train={"seed": int(self.overrides["seed"])})
        out = Path(self.out) / site
        out.mkdir(parents=True, exist_ok=True)
        handler = log_to(out / SITE_LOG)
        try:
            resumed = (out / CHECKPOINT).is_file()
            channel = FlareChannel(wire_dtype=wire_dtype(self.wire_dtype), timeout=self.timeout)
            t0 = time.perf_counter()
            metrics = train_run(cfg, out, resume=resumed, device=self.device,
                                epochs=cfg.train.epochs, channel=channel)
            seconds = time.perf_counter() - t0
            report = {
                "site": site,
                "resumed": resumed,
                "epochs": metrics["epochs"],
                "test_accuracy": metrics["test_accuracy"][DECISION],
                "test_balanced_accuracy": metrics["test_metrics"][DECISION]["balanced_accuracy"],
                "train_loss": [h["train_loss"] for h in metrics["history"]],
                "samples_per_second": metrics["history"][-1]["samples_per_second"],
                "bytes_per_sample": round(channel.bytes_sent / max(channel.samples_sent, 1), 1),
                "seconds": round(seconds, 2),
            }
            log.info("site %s: %d epochs, %.0f samples/s, %.0f bytes sent per sample (%s), "
                     "test accuracy %.4f", site, report["epochs"], report["samples_per_second"],
                     report["bytes_per_sample"], self.wire_dtype, report["test_accuracy"])
            return report
        except Exception:
            log.exception("site %s failed", site)
            raise
        finally:
            logging.getLogger("pgsl").removeHandler(handler)
            handler.close()
