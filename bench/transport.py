"""The cut's cost on every runtime, and the shared server under load, from one run.

1. Latency, one site: in-process, gRPC, gRPC + mutual TLS, gRPC with float16 on the wire, NVIDIA
   FLARE's simulator (SimEnv) and FLARE's proof of concept (PocEnv: provisioned, mutual TLS), all
   driving the same server step with the same activations; median and p95 ms per step, and the
   ratio to in-process. ``--echo`` replaces the server's computation by an echo (a zero gradient
   of the right shape) to time the runtime alone; without it the real PGSL server step runs.
2. Load (``--load 1,4,16``): that many sites, each a separate process on loopback, against one
   echo server, for gRPC and FLARE (SimEnv): the server's steps per second (from its first to its
   last step) and each site's p95 latency, and a check that nothing was lost: every step of every
   site answered exactly once, in order.

Run: ``.venv/bin/python bench/transport.py [--echo] [--steps 60 --batch 32 --width 16]
[--load 1,4,16 --load-steps 100] [--no-poc]``. FLARE needs ``pip install 'pgsl[flare]'``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from transport_sites import BenchServer, BenchSite, EchoParty, batches, timed_steps

from pgsl.config import load_preset
from pgsl.server.party import ServerParty
from pgsl.split.channel import InProcessChannel
from pgsl.transport.client import GrpcChannel
from pgsl.transport.server import SplitLearningService, serve
from pgsl.transport.tls import make_certs

HERE = Path(__file__).resolve().parent


def p95(times: list[float]) -> float:
    return statistics.quantiles(times, n=20)[-1] if len(times) >= 2 else times[0]


def flare_job(mode: str, n_sites: int, args: argparse.Namespace, steps: int, echo: bool,
              work: Path) -> dict[str, Any]:
    """A bench job on FLARE with ``n_sites`` sites; -> the server's summary."""
    from nvflare.collab import CollabRecipe

    from pgsl.flare.job import poc, simulate

    cfg = load_preset(args.preset).replace(model={"width": args.width})
    config = json.dumps(cfg.to_dict())
    sites = [f"site-{i + 1}" for i in range(n_sites)]
    out = work / f"{mode}-{n_sites}"
    recipe = CollabRecipe(job_name="pgsl-bench", min_clients=n_sites, sync_task_timeout=600,
                          server=BenchServer(config, 10, str(out / "server"), ",".join(sites), echo,
                                             args.width),
                          client=BenchSite(config, str(out / "sites"), steps, args.batch,
                                           args.width, args.size))
    recipe._job.set_app_packages(["pgsl"])
    run = simulate if mode == "sim" else poc
    summary = run(recipe, sites, server_out=out / "server", workspace=out / "flare")
    if summary["failed"]:
        raise RuntimeError(f"FLARE {mode} bench failed: {summary['failed']}")
    return summary


def latency(args: argparse.Namespace, work: Path) -> None:
    cfg = load_preset(args.preset).replace(model={"width": args.width})
    total = args.steps + args.warmup
    messages = batches(total, args.batch, args.width, args.size, seed=0)
    tls_dir = work / "tls"
    make_certs(tls_dir, ["bench"])

    def fresh_party() -> Any:
        torch.manual_seed(0)
        return EchoParty(args.width, 10) if args.echo else ServerParty(cfg, 10)

    results: dict[str, list[float]] = {}
    results["in-process"] = timed_steps(InProcessChannel(fresh_party()), messages)[args.warmup:]
    wire_bytes: dict[str, float] = {}
    for name, tls, wire in (("gRPC", None, None), ("gRPC + mTLS", tls_dir, None),
                            ("gRPC float16", None, torch.float16)):
        service = SplitLearningService(fresh_party(), secure=tls is not None)
        server, port = serve(service, "127.0.0.1:0", tls_dir=tls)
        host = "localhost" if tls else "127.0.0.1"
        try:
            with GrpcChannel(f"{host}:{port}", site="bench", tls_dir=tls, wire_dtype=wire) as ch:
                results[name] = timed_steps(ch, messages)[args.warmup:]
                wire_bytes[name] = ch.bytes_sent / (total * args.batch)
        finally:
            server.stop(0)
    modes = [("FLARE SimEnv", "sim")] + ([] if args.no_poc else [("FLARE POC mTLS", "poc")])
    for name, mode in modes:
        summary = flare_job(mode, 1, args, total, args.echo, work)
        results[name] = summary["sites"]["site-1"]["latencies"][args.warmup:]
        wire_bytes[name] = summary["sites"]["site-1"]["bytes_sent"] / (total * args.batch)

    base = statistics.median(results["in-process"])
    print(f"1. latency, one site, {'echo server (runtime only)' if args.echo else 'real PGSL server step'}"
          f": batch {args.batch} of {args.width}x{args.size}x{args.size} activations, {args.steps} "
          f"steps after {args.warmup} warm-up, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'mode':<16} {'median ms':>10} {'p95 ms':>8} {'samples/s':>10} {'vs in-process':>14}")
    for name, times in results.items():
        med = statistics.median(times)
        print(f"{name:<16} {med * 1e3:>10.2f} {p95(times) * 1e3:>8.2f} {args.batch / med:>10.0f} "
              f"{med / base:>13.2f}x")
    print("bytes on the wire per sample (site -> server):")
    for name, value in wire_bytes.items():
        print(f"  {name:<16} {value:>8.0f}")
    print(f"  float16 / float32 = {wire_bytes['gRPC float16'] / wire_bytes['gRPC']:.3f}")


def grpc_load(n_sites: int, args: argparse.Namespace) -> dict[str, Any]:
    """``n_sites`` site processes against one echo gRPC server in this process."""
    party = EchoParty(args.width, 10)
    service = SplitLearningService(party, secure=False)  # type: ignore[arg-type]
    server, port = serve(service, "127.0.0.1:0", tls_dir=None, workers=max(16, 2 * n_sites))
    sites = [f"site-{i + 1}" for i in range(n_sites)]
    try:
        procs = [subprocess.Popen(
            [sys.executable, str(HERE / "transport_sites.py"), "grpc", "--target", f"127.0.0.1:{port}",
             "--site", site, "--steps", str(args.load_steps), "--batch", str(args.batch),
             "--width", str(args.width), "--size", str(args.size)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for site in sites]
        reports = {}
        for site, proc in zip(sites, procs, strict=True):
            stdout, stderr = proc.communicate(timeout=1800)
            if proc.returncode != 0:
                raise RuntimeError(f"gRPC site {site} failed: {stderr[-2000:]}")
            reports[site] = json.loads(stdout)
    finally:
        server.stop(0)
    return {"sites": reports, "answered": party.answered, "server_seconds": party.last - party.first,
            "last_step": dict(service.last_step)}


def load(args: argparse.Namespace, work: Path) -> None:
    counts = [int(n) for n in args.load.split(",") if n]
    print(f"\n2. load: N sites (separate processes, loopback) x {args.load_steps} steps each against "
          f"one echo server; batch {args.batch} of {args.width}x{args.size}x{args.size}")
    print(f"{'runtime':<8} {'sites':>5} {'server steps/s':>15} {'site p95 ms (min-max)':>22} "
          f"{'answered':>10} {'lost':>5}")
    for runtime in ("gRPC", "FLARE"):
        for n in counts:
            t0 = time.perf_counter()
            summary = (grpc_load(n, args) if runtime == "gRPC"
                       else flare_job("sim", n, args, args.load_steps, True, work))
            wall = time.perf_counter() - t0
            expected = n * args.load_steps
            lost = expected - summary["answered"]
            in_order = all(summary["last_step"].get(f"site-{i + 1}") == args.load_steps
                           for i in range(n))
            if lost or not in_order:
                raise RuntimeError(f"{runtime} with {n} sites lost steps: answered "
                                   f"{summary['answered']} of {expected}, last steps {summary['last_step']}")
            p95s = [p95(r["latencies"][5:]) * 1e3 for r in summary["sites"].values()]
            rate = (summary["answered"] - 1) / max(summary["server_seconds"], 1e-9)
            print(f"{runtime:<8} {n:>5} {rate:>15.0f} {min(p95s):>10.1f} - {max(p95s):<9.1f} "
                  f"{summary['answered']:>10} {lost:>5}   ({wall:.0f} s with start-up)", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--size", type=int, default=14, help="activation map side (MNIST: 14)")
    ap.add_argument("--preset", default="quick")
    ap.add_argument("--echo", action="store_true", help="time the runtime alone")
    ap.add_argument("--no-poc", action="store_true", help="skip FLARE's proof of concept")
    ap.add_argument("--load", default="1,4,16", help="site counts of the load run ('' skips it)")
    ap.add_argument("--load-steps", type=int, default=100)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        latency(args, Path(tmp))
        if args.load:
            load(args, Path(tmp))


if __name__ == "__main__":
    main()
