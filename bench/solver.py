"""Robust-PCA solvers side by side, in one run: tensorly (the external reference, with corrected
settings), a plain per-matrix NumPy APG, and ours (batched; ``auto`` -- float64 Gram/eigh SVT up to
32x32, warm-started subspace SVT above on a CPU -- beside the exact SVD).

On planted low-rank + sparse data every solver is scored against the planted truth; on real
activation maps (``--run DIR``: a trained pgsl run; MNIST test images through its client
segment) against a converged float64 APG reference at mu = 0.55 (tensorly solves the constrained
problem there, a different one: its error column on real maps is not an accuracy). Prints time
per matrix, iterations, error, and our speed-up over tensorly.

    pip install tensorly   # bench-only dependency
    .venv/bin/python bench/solver.py [--sizes 14 28 64 128 256] [--run runs/q] [--device cuda]

On CUDA our solver also runs on the CPU (all threads), for the GPU-vs-CPU-cores comparison.

tensorly's ``robust_pca`` is robust *tensor* PCA by ALM: for a matrix it penalises the nuclear
norms of both unfoldings, i.e. ``2 ||A||_*``, so the classic ``lambda = 1/sqrt(max(m, n))`` is
``reg_E = 2/sqrt(max(m, n))``. Its defaults (``reg_E = 1``, 100 iterations) give wrong answers from
28x28 up, and with ``reg_E = 1/sqrt(n)`` it converges to the wrong split (relative error 0.2-0.5,
measured); we pass ``reg_E = 2/sqrt(max(m, n))``, ``mu_init = 1.25/||D||_2`` (Lin, Chen & Ma),
``learning_rate = 1.1``, 1000 iterations, ``tol = 1e-7`` (error ~5e-8 on planted data). Our APG solves the
penalised problem; with ``mu = 1e-6`` (relative to the planted data's unit scale) and continuation
its minimiser is within ~1e-7 of the planted truth (median; measured). tensorly also runs at
``tol = 1e-5``, where its error (~2e-7 at 64x64) is about our float32 rows': the second ratio is the
speed-up at equal accuracy.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from pgsl.recovery.reference import apg_rpca
from pgsl.recovery.rpca import resolve_svt, robust_pca

BATCH = {14: 512, 28: 256, 64: 64, 128: 16, 256: 4}  # ours on a CPU: realistic batches per size
BATCH_CUDA = {14: 8192, 28: 4096, 64: 1024, 128: 256, 256: 64}  # one training batch of maps
SLOW_COUNT = 4  # matrices given to the per-matrix solvers
PLANTED_MU = 1e-6  # small enough that the penalised minimiser is the planted truth to ~1e-7


def planted(n: int, count: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    rank = max(1, n // 10)
    low = torch.randn(count, n, rank, generator=g) @ torch.randn(count, rank, n, generator=g) / rank**0.5
    mask = torch.rand(count, n, n, generator=g) < 0.05
    sparse = torch.where(mask, torch.rand(count, n, n, generator=g) * 10 - 5, torch.zeros(()))
    return low + sparse, low


def real_maps(run: Path, count: int) -> torch.Tensor:
    from pgsl.checkpoint import load_checkpoint
    from pgsl.config import load_config
    from pgsl.data import load_dataset, to_float
    from pgsl.experiments.train import Run

    cfg = load_config(run / "config.json")
    dataset = load_dataset(cfg.data.__class__(**{**cfg.data.__dict__, "limit_train": 64}))
    r = Run(cfg, dataset, torch.device("cpu"))
    r.restore(load_checkpoint(run / "checkpoint.pt"))
    with torch.no_grad():
        x = to_float(dataset.test.images[: max(1, count // cfg.model.width + 1)])
        r.client.segment.eval()
        a = r.client.segment(r.client.encode(x, None))
    return a.flatten(0, 1)[:count].contiguous()


def timed(fn: Callable[[], object], repeat: int = 1) -> tuple[object, float]:
    fn()  # warm-up
    t0 = time.perf_counter()
    for _ in range(repeat):
        out = fn()
    return out, (time.perf_counter() - t0) / repeat


def tensorly_solve(d: np.ndarray, tol: float = 1e-7) -> tuple[np.ndarray, int]:
    import tensorly as tl
    from tensorly.decomposition import robust_pca as tl_rpca

    tl.set_backend("numpy")
    m, n = d.shape
    low, _, errors = tl_rpca(d, reg_E=2 / np.sqrt(max(m, n)), mu_init=1.25 / np.linalg.norm(d, 2),
                             learning_rate=1.1, n_iter_max=1000, tol=tol, return_errors=True,
                             verbose=0)
    return low, len(errors)


def row(name: str, seconds_per_matrix: float, iterations: float, error: float, error_all: float | None,
        references: tuple[float, ...] = ()) -> str:
    speed = " ".join(f"{r / seconds_per_matrix:7.1f}x" for r in references)
    err_all = f"{error_all:10.2e}" if error_all is not None else " " * 10
    return (f"  {name:<40} {seconds_per_matrix * 1e3:10.3f} ms {iterations:7.1f} it "
            f"{error:10.2e} {err_all} {speed}")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_case(label: str, d: torch.Tensor, truth: torch.Tensor, mu: float, device: torch.device,
               slow_count: int) -> None:
    print(f"{label}: {d.shape[0]} x {d.shape[1]}x{d.shape[2]}, mu {mu:g} "
          f"(per-matrix solvers: first {slow_count})")
    print(f"  {'solver':<40} {'time/matrix':>13} {'iters':>10} {'err first':>10} {'err all':>10} "
          f"{'vs tensorly tol 1e-7, 1e-5':>26}")
    few = d[:slow_count].double().numpy()
    few_truth = truth[:slow_count].double().numpy()

    def rel(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-12))

    refs: list[float] = []
    try:
        for tl_tol in (1e-7, 1e-5):  # tight, and the accuracy our float32 rows reach
            outs, t = timed(lambda tl_tol=tl_tol: [tensorly_solve(m, tl_tol) for m in few])
            refs.append(t / slow_count)
            lows = np.stack([o[0] for o in outs])  # type: ignore[union-attr]
            its = float(np.mean([o[1] for o in outs]))  # type: ignore[union-attr]
            print(row(f"tensorly robust_pca (ALM), f64 tol {tl_tol:g}", refs[-1], its,
                      rel(lows, few_truth), None))
    except ImportError:
        print("  tensorly not installed: pip install tensorly")
    outs, t = timed(lambda: [apg_rpca(m, mu, max_iter=500, tol=1e-7) for m in few])
    lows = np.stack([o[0] for o in outs])  # type: ignore[union-attr]
    its = float(np.mean([o[2] for o in outs]))  # type: ignore[union-attr]
    print(row("NumPy APG per matrix, f64", t / slow_count, its, rel(lows, few_truth), None, tuple(refs)))
    # ours: float64 at the tight tolerance, float32 at what float32 can reach; the exact SVD beside
    cases = [(torch.float64, 1e-7, "auto"), (torch.float64, 1e-7, "svd"), (torch.float32, 1e-5, "auto"),
             (torch.float32, 1e-5, "svd")]
    devices = [device] + ([torch.device("cpu")] if device.type == "cuda" else [])
    for dev in devices:
        for dtype, tol, svt in cases:
            if dev != device and svt == "svd":
                continue
            x = d.to(dev, dtype)

            def solve(x: torch.Tensor = x, tol: float = tol, svt: str = svt) -> object:
                r = robust_pca(x, mu=mu, max_iter=500, tol=tol, svt=svt)
                sync(x.device)
                return r

            result, t = timed(solve)
            low = result.low_rank.cpu().double().numpy()  # type: ignore[attr-defined]
            its = float(result.iterations.float().mean())  # type: ignore[attr-defined]
            where = f"{dev.type}" + (f" {torch.get_num_threads()} thr" if dev.type == "cpu" else "")
            name = f"pgsl {where}, {str(dtype)[6:]} {svt}->{resolve_svt(svt, x)} tol {tol:g}"
            print(row(name, t / d.shape[0], its, rel(low[:slow_count], few_truth),
                      rel(low, truth.double().numpy()), tuple(refs)), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[14, 28, 64])
    ap.add_argument("--run", type=Path, help="a pgsl run folder, for real activation maps")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    device = torch.device(args.device)
    batch = BATCH_CUDA if device.type == "cuda" else BATCH
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, device {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""))
    print("time per matrix; err = relative error of the low-rank part against the planted truth "
          "(real maps: a converged float64 APG), on the matrices the per-matrix solvers got and "
          "on the whole batch")
    for n in args.sizes:
        d, truth = planted(n, batch.get(n, 4))
        bench_case(f"planted rank {max(1, n // 10)} + 5% sparse", d, truth, PLANTED_MU, device,
                   SLOW_COUNT if n <= 64 else 2)
    if args.run:
        maps = real_maps(args.run, batch[14])
        converged = robust_pca(maps.double().to(device), mu=0.55, max_iter=3000,
                               tol=1e-10).low_rank.float().cpu()
        bench_case(f"real activation maps from {args.run}", maps, converged, 0.55, device, SLOW_COUNT)


if __name__ == "__main__":
    main()
