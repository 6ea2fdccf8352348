"""PGSL training throughput against a plain CNN's, same batch size and device, in one run.

The plain CNN is the paper's centralised baseline: the same 7 conv (Conv3x3 -> ReLU -> BN) + 2 FC
network on the raw image, one stream, no attack, no recovery. PGSL is a full split step: the
client's JSMA + down-sampling + conv1-2, the server's APG recovery + three streams + fusion, the
gradient back and both optimiser steps. Real MNIST batches.

    .venv/bin/python bench/train.py [--preset quick|paper] [--batch 128] [--device cuda]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from pgsl.client.party import ClientParty
from pgsl.config import DataConfig, load_preset
from pgsl.data import batches, load_dataset
from pgsl.layers import conv_block
from pgsl.server.party import ServerParty
from pgsl.server.streams import StreamTail
from pgsl.split.channel import InProcessChannel
from pgsl.split.trainer import DECISION


def plain_cnn(channels: int, classes: int, width: int, pool: int, hidden: int) -> nn.Module:
    return nn.Sequential(conv_block(channels, width), conv_block(width, width),
                         StreamTail(width, classes, width=width, pool=pool, hidden=hidden))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def throughput(step, data: list[tuple[torch.Tensor, torch.Tensor]], device: torch.device,
               warmup: int) -> float:
    for x, y in data[:warmup]:
        step(x, y)
    sync(device)
    t0 = time.perf_counter()
    n = 0
    for x, y in data[warmup:]:
        step(x, y)
        n += len(y)
    sync(device)
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--preset", default="quick")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--svt", default=None, help="override recovery.svt: svd, gram, gesvda or auto")
    ap.add_argument("--profile", action="store_true", help="print the top PGSL-step kernels")
    ap.add_argument("--accuracy", type=Path, default=None, metavar="DIR",
                    help="also train the preset on full MNIST with the exact SVD and with --svt "
                         "(default auto) into DIR/svd and DIR/<svt>, and compare fused accuracy")
    ap.add_argument("--seeds", type=int, default=1,
                    help="with --accuracy: train both for seeds 0..N-1 (the difference between two "
                         "single runs is mostly seed noise) and report the mean difference")
    args = ap.parse_args()
    device = torch.device(args.device)
    cfg = load_preset(args.preset)
    if args.svt:
        cfg = cfg.replace(recovery={"svt": args.svt})
    n = (args.steps + args.warmup) * args.batch
    ds = load_dataset(DataConfig(limit_train=n, limit_test=1))
    data = list(batches(ds.train, args.batch, device=device))
    m = cfg.model

    torch.manual_seed(0)
    plain = plain_cnn(ds.channels, 10, m.width, m.pool, m.hidden).to(device)
    opt = torch.optim.Adam(plain.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)

    def plain_step(x: torch.Tensor, y: torch.Tensor) -> None:
        loss = F.cross_entropy(plain(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    client = ClientParty(cfg, ds.channels, 10, device)
    channel = InProcessChannel(ServerParty(cfg, 10, device))
    client.defense.prepare(ds.train, send=client.rehearse, batch_size=args.batch, seed=0,
                           device=torch.device(device))

    def pgsl_step(x: torch.Tensor, y: torch.Tensor) -> None:
        client.train_step(x, y, channel)

    plain_rate = throughput(plain_step, data, device, args.warmup)
    pgsl_rate = throughput(pgsl_step, data, device, args.warmup)
    print(f"preset {args.preset} (width {m.width}, APG {cfg.recovery.max_iter} iterations, "
          f"svt {cfg.recovery.svt}), batch {args.batch}, {args.steps} steps, device {device}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"  plain CNN  {plain_rate:10.1f} img/s")
    print(f"  PGSL       {pgsl_rate:10.1f} img/s")
    print(f"  PGSL / plain = {pgsl_rate / plain_rate:.3f}")
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with profile(activities=acts) as prof:
            for x, y in data[:5]:
                pgsl_step(x, y)
            sync(device)
        key = "cuda_time_total" if device.type == "cuda" else "cpu_time_total"
        print(prof.key_averages().table(sort_by=key, row_limit=15))
    if args.accuracy:
        accuracy(args.preset, args.svt or "auto", args.accuracy, str(device), args.seeds)


def accuracy(preset: str, svt: str, out: Path, device: str, seeds: int = 1) -> None:
    """Fused test accuracy of the exact-SVD solver against ``svt``: same preset, seed and data.

    Each seed fixes the data subset, the initial weights, the shuffles and the dropout masks for
    both solvers, so a seed's difference is the solver's effect plus the chaos of training
    (a different rounding in one solve sends SGD elsewhere); the spread over seeds measures that.
    """
    from pgsl.runtime import train_run

    fused: dict[str, list[float]] = {"svd": [], svt: []}  # S_awa in %, per seed
    for seed in range(seeds):
        for method in ("svd", svt):
            cfg = load_preset(preset).replace(recovery={"svt": method}, train={"seed": seed})
            metrics = train_run(cfg, out / f"seed{seed}" / method, device=device, resume=False)
            fused[method].append(100 * metrics["test_accuracy"][DECISION])
            print(f"  seed {seed}  svt {method:<7} train {metrics['train_seconds']:7.1f} s  "
                  + "  ".join(f"{k} {v:.4f}" for k, v in metrics["test_accuracy"].items()),
                  flush=True)
        print(f"  seed {seed}  fused accuracy, {svt} - svd: "
              f"{fused[svt][-1] - fused['svd'][-1]:+.2f} points", flush=True)
    d = torch.tensor(fused[svt], dtype=torch.float64) - torch.tensor(fused["svd"], dtype=torch.float64)
    spread = ""
    if seeds > 1:  # the seed-to-seed spread of each solver alone: the noise the goal sits in
        spread = f" +- {d.std().item():.2f} (std over {seeds} seeds)"
        for method, values in fused.items():
            v = torch.tensor(values, dtype=torch.float64)
            print(f"  svt {method:<7} fused accuracy {v.mean().item():.2f} +- {v.std().item():.2f}")
    print(f"  fused accuracy, {svt} - svd: mean {d.mean().item():+.2f}{spread} points, "
          f"worst {d.abs().max().item():.2f} (goal: within 0.2)")


if __name__ == "__main__":
    main()
