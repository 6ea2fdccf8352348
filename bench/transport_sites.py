"""The parties of ``bench/transport.py``'s runs: an echo server step and sites that time theirs.

- :class:`EchoParty`: the server's protocol without its computation (a zero gradient of the right
  shape), so a run measures the runtime, not the model.
- :class:`BenchServer` / :class:`BenchSite`: the FLARE job's server and site objects
  (:mod:`pgsl.flare`) with the echo party (or the real one) and a ``bench`` call in place of
  training: each site sends ``steps`` seeded batches through :class:`~pgsl.flare.channel.FlareChannel`
  and reports each step's latency; the server reports its wall time and how many steps it answered.
- ``python bench/transport_sites.py grpc --target HOST:PORT --site NAME ...``: one site process of
  the gRPC load run, the same loop through :class:`~pgsl.transport.client.GrpcChannel`; prints JSON.

This module lives beside the bench script so FLARE can ship it with the job (its processes import
it by its file name).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch
from nvflare.collab import collab

from pgsl.checkpoint import write_json
from pgsl.config import Config
from pgsl.flare.channel import FlareChannel
from pgsl.flare.server_app import SUMMARY, FlareServer
from pgsl.flare.site_app import FlareSite
from pgsl.split.channel import Channel
from pgsl.split.messages import Activations, Gradient, Scores, StreamStats
from pgsl.transport.hub import Party


class EchoParty:
    """The server's interface without its computation: isolates the transport's cost."""

    def __init__(self, width: int, num_classes: int) -> None:
        self.device = torch.device("cpu")
        self._width, self._classes = width, num_classes
        self.answered = 0  # training steps, and the clock at the first and the last one
        self.first = self.last = 0.0

    @property
    def width(self) -> int:
        return self._width

    @property
    def num_classes(self) -> int:
        return self._classes

    def train_step(self, msg: Activations) -> Gradient:
        self.last = time.perf_counter()
        if not self.answered:
            self.first = self.last
        self.answered += 1
        stats = StreamStats(losses=(0.0,), correct=(0, 0), count=int(msg.activations.shape[0]))
        return Gradient(msg.step, torch.zeros_like(msg.activations), stats)

    def predict(self, msg: Activations) -> Scores:
        n = int(msg.activations.shape[0])
        return Scores(msg.step, (torch.zeros(n, self._classes),), torch.zeros(n, self._classes))

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def batches(steps: int, batch: int, width: int, size: int, seed: int) -> list[Activations]:
    g = torch.Generator().manual_seed(seed)
    return [Activations(i + 1, torch.randn(batch, width, size, size, generator=g),
                        torch.randint(0, 10, (batch,), generator=g)) for i in range(steps)]


def timed_steps(channel: Channel, messages: list[Activations]) -> list[float]:
    """Each step's latency in seconds; raises if a reply is not the answer to its request."""
    times = []
    for msg in messages:
        t0 = time.perf_counter()
        reply = channel.train_step(msg)
        times.append(time.perf_counter() - t0)
        if reply.step != msg.step or reply.grad.shape != msg.activations.shape:
            raise RuntimeError(f"step {msg.step} answered with step {reply.step}")
    return times


class BenchServer(FlareServer):
    def __init__(self, config: str, classes: int, out: str, sites: str = "", echo: bool = True,
                 width: int = 16) -> None:
        super().__init__(config, classes, out, sites, checkpoint_every=10**9)
        self.echo, self.width = echo, width

    def make_party(self, cfg: Config) -> Party:
        return EchoParty(self.width, self.classes) if self.echo else super().make_party(cfg)

    @collab.main
    def run(self) -> dict[str, Any]:
        t0 = time.perf_counter()
        results = collab.clients(timeout=self.site_timeout).bench()
        wall = time.perf_counter() - t0
        assert self.hub is not None
        party = self.hub.party
        summary = {"sites": {name: report for name, report in results},
                   "failed": {name: str(e) for name, e in results.failures.items()},
                   "wall_seconds": wall, "train_steps": self.hub.train_steps,
                   "last_step": dict(self.hub.last_step)}
        if isinstance(party, EchoParty):
            summary["answered"] = party.answered
            summary["server_seconds"] = party.last - party.first
        write_json(Path(self.out) / SUMMARY, summary)
        return summary


class BenchSite(FlareSite):
    def __init__(self, config: str, out: str, steps: int = 60, batch: int = 32, width: int = 16,
                 size: int = 14) -> None:
        super().__init__(config, out)
        self.steps, self.batch, self.width, self.size = steps, batch, width, size

    @collab.publish
    def bench(self) -> dict[str, Any]:
        channel = FlareChannel(timeout=600.0)
        channel.join(self.width)
        seed = sum(map(ord, str(collab.site_name)))
        times = timed_steps(channel, batches(self.steps, self.batch, self.width, self.size, seed))
        return {"latencies": times, "bytes_sent": channel.bytes_sent}


def _grpc_site() -> None:
    from pgsl.transport.client import GrpcChannel

    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["grpc"])
    ap.add_argument("--target", required=True)
    ap.add_argument("--site", required=True)
    for name, default in (("steps", 60), ("batch", 32), ("width", 16), ("size", 14)):
        ap.add_argument(f"--{name}", type=int, default=default)
    args = ap.parse_args()
    messages = batches(args.steps, args.batch, args.width, args.size, sum(map(ord, args.site)))
    with GrpcChannel(args.target, site=args.site, tls_dir=None) as channel:
        channel.join(args.width)
        print(json.dumps({"latencies": timed_steps(channel, messages)}))


if __name__ == "__main__":
    _grpc_site()
