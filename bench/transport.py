"""Per-step latency and throughput of the cut: in-process vs gRPC vs gRPC + mutual TLS, one run.

Every mode drives the same real server (``ServerParty``) with the same activations, so the
differences are the transport's cost. ``--echo`` replaces the server's computation by an echo (a
zero gradient of the right shape, computed in no time) to time the transport alone: codec,
gRPC, TLS. Also prints the bytes per sample on the wire for float32 and float16.
Run: ``.venv/bin/python bench/transport.py [--echo] [--steps 60 --batch 32 --width 16]``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import torch

from pgsl.config import load_preset
from pgsl.server.party import ServerParty
from pgsl.split.channel import Channel, InProcessChannel
from pgsl.split.messages import Activations, Gradient, StreamStats
from pgsl.transport.client import GrpcChannel
from pgsl.transport.server import SplitLearningService, serve
from pgsl.transport.tls import make_certs


class EchoParty:
    """The server's interface without its computation: isolates the transport's cost."""

    def __init__(self, width: int, num_classes: int) -> None:
        self.model = SimpleNamespace(width=width, num_classes=num_classes)
        self.device = torch.device("cpu")

    def train_step(self, msg: Activations) -> Gradient:
        stats = StreamStats(losses=(0.0,), correct=(0, 0), count=int(msg.activations.shape[0]))
        return Gradient(msg.step, torch.zeros_like(msg.activations), stats)

    def state_dict(self) -> dict:
        return {}


def measure(channel: Channel, batches: list[Activations], warmup: int) -> list[float]:
    times = []
    for i, msg in enumerate(batches):
        t0 = time.perf_counter()
        channel.train_step(msg)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--size", type=int, default=14, help="activation map side (MNIST: 14)")
    ap.add_argument("--preset", default="quick")
    ap.add_argument("--echo", action="store_true", help="time the transport alone")
    args = ap.parse_args()

    cfg = load_preset(args.preset).replace(model={"width": args.width})
    g = torch.Generator().manual_seed(0)
    total = args.steps + args.warmup
    batches = [Activations(i + 1, torch.randn(args.batch, args.width, args.size, args.size,
                                              generator=g),
                           torch.randint(0, 10, (args.batch,), generator=g)) for i in range(total)]
    tls_dir = Path(tempfile.mkdtemp()) / "tls"
    make_certs(tls_dir, ["bench"])

    def fresh_party() -> ServerParty:
        torch.manual_seed(0)
        if args.echo:
            return EchoParty(args.width, 10)  # type: ignore[return-value]
        return ServerParty(cfg, 10)

    results: dict[str, list[float]] = {}
    results["in-process"] = measure(InProcessChannel(fresh_party()), batches, args.warmup)
    wire_bytes: dict[str, float] = {}
    for name, tls, wire in (("gRPC", None, None), ("gRPC + mTLS", tls_dir, None),
                            ("gRPC float16", None, torch.float16)):
        service = SplitLearningService(fresh_party(), secure=tls is not None)
        server, port = serve(service, "127.0.0.1:0", tls_dir=tls)
        host = "localhost" if tls else "127.0.0.1"
        try:
            with GrpcChannel(f"{host}:{port}", site="bench", tls_dir=tls, wire_dtype=wire) as ch:
                results[name] = measure(ch, batches, args.warmup)
                wire_bytes[name] = ch.bytes_sent / (total * args.batch)
        finally:
            server.stop(0)

    base = statistics.median(results["in-process"])
    print(f"{'echo server (transport only)' if args.echo else 'real PGSL server step'}: "
          f"batch {args.batch} of {args.width}x{args.size}x{args.size} activations, "
          f"{args.steps} steps after {args.warmup} warm-up, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print(f"{'mode':<14} {'median ms':>10} {'p95 ms':>8} {'samples/s':>10} {'vs in-process':>14}")
    for name, times in results.items():
        med = statistics.median(times)
        p95 = statistics.quantiles(times, n=20)[-1]
        print(f"{name:<14} {med * 1e3:>10.2f} {p95 * 1e3:>8.2f} {args.batch / med:>10.0f} "
              f"{med / base:>13.2f}x")
    print("bytes on the wire per sample (client -> server):")
    for name in ("gRPC", "gRPC float16"):
        print(f"  {name:<14} {wire_bytes[name]:>8.0f}")
    print(f"  float16 / float32 = {wire_bytes['gRPC float16'] / wire_bytes['gRPC']:.3f}")


if __name__ == "__main__":
    main()
