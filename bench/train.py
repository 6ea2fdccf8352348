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

import torch
import torch.nn.functional as F
from torch import nn

from pgsl.client.party import ClientParty
from pgsl.client.surrogate import train_surrogate
from pgsl.config import DataConfig, load_preset
from pgsl.data import batches, load_dataset
from pgsl.layers import conv_block
from pgsl.server.party import ServerParty
from pgsl.server.streams import StreamTail
from pgsl.split.channel import InProcessChannel


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
    ap.add_argument("--svt", default=None, help="override recovery.svt: svd, gram or auto")
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
    train_surrogate(client.surrogate, ds.train, epochs=1, batch_size=args.batch, seed=0,
                    device=device)

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


if __name__ == "__main__":
    main()
