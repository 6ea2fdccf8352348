"""DLG and iDLG: the batched torch solver against the one-at-a-time scipy reference, in one run.

Both solve the same problems (``src/pgsl/attacks/dlg.py``: the layer-wise continuation from the
auxiliary start) for the same victims of one trained vanilla split, with the same settings; they
differ in the L-BFGS (scipy's L-BFGS-B per victim; ``pgsl.optim.lbfgs`` over the batch). Per
attack and solver: wall time (the attack only, the leak excluded), mean MSE and SSIM against the
clean images, label accuracy; then the MSE ratio (torch / scipy) and the speed ratio (scipy time /
torch time) measured in this process.

    .venv/bin/python bench/attacks.py [RUN_DIR] [--victims 32] [--iterations 150] [--starts 256]
                                     [--device cuda] [--batch 128] [--stages K ...]
                                     [--solvers torch]

Without RUN_DIR it first trains the quick preset's vanilla split on 6,000 MNIST images (one
epoch, about a minute on 2 CPU cores) into a temporary folder. Victims and auxiliary images are
drawn as ``pgsl privacy`` draws them (seed 0; the first half of the test set). ``--tiny``: a
correctness run in seconds (a width-8 network on 512 images, 3 victims, 3 iterations, 2 stages);
its numbers say nothing about either solver. ``--solvers torch`` times the batched solver alone
(budgets where the scipy reference would take too long, e.g. the quick plan's 128 victims).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from pgsl.attacks.dlg import gradient_inversion
from pgsl.attacks.view import reconstruction_scores
from pgsl.config import load_preset
from pgsl.data import to_float
from pgsl.experiments.privacy import gradient_leak
from pgsl.runtime import load_run, train_run

SOLVERS = ("scipy", "torch")


def train(out: Path, tiny: bool) -> Path:
    cfg = load_preset("quick").replace(data={"limit_train": 512 if tiny else 6000},
                                       defense={"kind": "none"})
    if tiny:
        cfg = cfg.replace(data={"limit_test": 128}, model={"width": 8, "hidden": 32, "pool": 2})
    train_run(cfg, out)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("run", nargs="?", type=Path, default=None, help="a trained run (default: train one)")
    ap.add_argument("--victims", type=int, default=32)
    ap.add_argument("--iterations", type=int, default=150)
    ap.add_argument("--starts", type=int, default=256)
    ap.add_argument("--stages", type=int, nargs="+", default=None, help="default: dlg.STAGES")
    ap.add_argument("--batch", type=int, default=128, help="victims per batch (torch solver)")
    ap.add_argument("--attacks", nargs="+", default=["dlg", "idlg"], choices=["dlg", "idlg"])
    ap.add_argument("--solvers", nargs="+", default=list(SOLVERS), choices=SOLVERS,
                    help="default: both, and their ratios")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--tiny", action="store_true", help="a correctness run in seconds")
    args = ap.parse_args()
    if args.tiny:
        args.victims, args.iterations, args.starts, args.stages = 3, 3, 16, [2, 0]
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        run_dir = args.run or train(Path(tmp) / "run", args.tiny)
        if args.run is None:
            print(f"trained {run_dir} in {time.perf_counter() - t0:.0f} s")
        run = load_run(run_dir, device, full_test=True)
    train_set, test_set = run.dataset.train, run.dataset.test
    g = torch.Generator().manual_seed(0)  # pgsl privacy's victim sample
    pick = torch.randperm(len(train_set), generator=g)[:args.victims]
    victims, labels = to_float(train_set.images[pick], device), train_set.labels[pick].to(device)
    aux = to_float(test_set.images[: len(test_set) // 2], device)
    leak = gradient_leak(run, victims, labels)
    shape = (int(victims.shape[1]), int(victims.shape[2]), int(victims.shape[3]))
    mean_image = reconstruction_scores(aux.mean(0, keepdim=True).expand_as(victims), victims)
    extra = {} if args.stages is None else {"stages": tuple(args.stages)}
    print(f"{run_dir}: {len(victims)} victims, {len(aux)} auxiliary images, {args.iterations} iterations "
          f"per stage, {args.starts} starts, {torch.get_num_threads()} threads, {device}; mean image "
          f"MSE {float(mean_image['mse'].mean()):.4f}")
    print(f"{'attack':<6} {'solver':<6} {'seconds':>9} {'MSE':>8} {'SSIM':>6} {'labels':>7}")
    for attack in args.attacks:
        seconds, mse = {}, {}
        for solver in args.solvers:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            images, used = gradient_inversion(
                leak, shape, idlg=attack == "idlg", aux_images=aux, iterations=args.iterations,
                starts=args.starts, batch=args.batch, solver=solver, seed=0, **extra)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds[solver] = time.perf_counter() - t0
            s = reconstruction_scores(images, victims)
            mse[solver] = float(s["mse"].mean())
            accuracy = float((used.cpu() == labels.cpu()).float().mean())
            print(f"{attack:<6} {solver:<6} {seconds[solver]:9.1f} {mse[solver]:8.4f} "
                  f"{float(s['ssim'].mean()):6.3f} {accuracy:7.2f}")
        if len(seconds) < len(SOLVERS):
            continue
        print(f"{attack:<6} ratio  MSE torch/scipy {mse['torch'] / mse['scipy']:.3f}   "
              f"speed scipy/torch {seconds['scipy'] / seconds['torch']:.1f}x")


if __name__ == "__main__":
    main()
