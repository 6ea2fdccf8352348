"""Time the building blocks of singular value thresholding per map size on one device.

What the size/device choice in :func:`pgsl.recovery.rpca.singular_value_threshold` rests on:
``torch.linalg.svd`` (CUDA drivers gesvdj, gesvda and the default), ``torch.linalg.eigh`` of the
Gram matrix in float32/float64, and a batched matrix product for scale. Prints milliseconds per
batch and microseconds per matrix, and each SVT's relative error against a float64 CPU SVD.

``svt:products`` is :mod:`pgsl.recovery.products`: an SVT from batched matrix products alone, no
eigensolver, hence no host synchronisation on CUDA (``torch.linalg.eigh`` waits for the device on
every call, to check its error codes); ``svt:products-graph`` replays it as one CUDA graph (no
launch overhead). On a CPU it is far slower than LAPACK; the question is what it costs on a GPU.

    python bench/svt_kernels.py --device cuda [--sizes 14 28 32 64 128 256]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

BATCH = {14: 8192, 28: 4096, 32: 4096, 64: 1024, 128: 256, 256: 64}


def timed(fn: Callable[[], object], device: torch.device, repeat: int = 5) -> tuple[object, float]:
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return out, sorted(times)[len(times) // 2]


def relu_maps(n: int, count: int, device: torch.device) -> torch.Tensor:
    g = torch.Generator(device="cpu").manual_seed(n)
    rank = max(2, n // 8)
    low = torch.randn(count, n, rank, generator=g) @ torch.randn(count, rank, n, generator=g)
    return torch.relu(low + 0.3 * torch.randn(count, n, n, generator=g)).to(device)


def graphed(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> Callable[[], object]:
    """``fn(x)`` captured once as a CUDA graph; the returned call replays it."""
    static = x.clone()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(2):  # warm-up outside the graph, as the CUDA graphs notes ask
            fn(static)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn(static)

    def replay() -> object:
        graph.replay()
        return out

    return replay


def kernels(x: torch.Tensor, tau: float, device: torch.device) -> dict[str, Callable[[], object]]:
    from pgsl.recovery.svt import singular_value_threshold as svt

    cases: dict[str, Callable[[], object]] = {
        "bmm": lambda: x @ x.mT,
        "svd": lambda: torch.linalg.svd(x, full_matrices=False),
        "eigh32(gram)": lambda: torch.linalg.eigh(x @ x.mT),
        "eigh64(gram)": lambda: torch.linalg.eigh((x @ x.mT).double()),
        "svt:svd": lambda: svt(x, tau, "svd"),
        "svt:gram": lambda: svt(x, tau, "gram"),
        "svt:gesvda": lambda: svt(x, tau, "gesvda"),
        "svt:auto": lambda: svt(x, tau, "auto"),
        "svt:products": lambda: svt(x, tau, "products"),
    }
    if device.type == "cuda":
        try:  # captured once here; the timed calls replay it
            # tau as a device tensor made before the capture (a float would be copied to the
            # device inside it, which a capturing stream refuses)
            tau_d = torch.full((len(x), 1, 1), tau, dtype=x.dtype, device=device)
            cases["svt:products-graph"] = graphed(lambda a: svt(a, tau_d, "products"), x)
        except Exception as exc:  # noqa: BLE001 - a probe reports and goes on
            print(f"svt:products-graph: capture failed: {type(exc).__name__}: {str(exc)[:80]}")
        for drv in ("gesvdj", "gesvda", "gesvd"):
            def svd_driver(drv: str = drv) -> object:
                return torch.linalg.svd(x, full_matrices=False, driver=drv)

            cases[f"svd:{drv}"] = svd_driver
    return cases


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--sizes", type=int, nargs="+", default=[14, 28, 32, 64, 128, 256])
    ap.add_argument("--methods", nargs="+", default=None)
    args = ap.parse_args()
    device = torch.device(args.device)
    from pgsl.recovery.svt import singular_value_threshold as svt

    print(f"device {device} torch {torch.__version__}"
          + (f" {torch.cuda.get_device_name()}" if device.type == "cuda" else ""))
    print(f"{'size':>5} {'batch':>6} {'method':<18} {'ms/batch':>10} {'us/matrix':>10} {'rel.err':>9}")
    for n in args.sizes:
        count = BATCH.get(n, 64)
        x = relu_maps(n, count, device)
        tau = 0.5 * torch.linalg.matrix_norm(x[:1], ord=2).item() / 4
        ref = svt(x[:64].double().cpu(), tau, "svd")
        cases = kernels(x, tau, device)
        for name, fn in cases.items():
            if args.methods and name not in args.methods:
                continue
            if name in ("svd:gesvd",) and n >= 64:
                continue  # looped one matrix at a time: minutes
            try:
                out, sec = timed(fn, device)
            except Exception as exc:  # noqa: BLE001 - a probe reports and goes on
                print(f"{n:>5} {count:>6} {name:<18} failed: {type(exc).__name__}: {str(exc)[:60]}")
                continue
            err = ""
            if name.startswith("svt:"):
                got = out[:64].double().cpu()  # type: ignore[index]
                err = f"{((got - ref).norm() / ref.norm()).item():9.2e}"
            print(f"{n:>5} {count:>6} {name:<18} {sec * 1e3:10.2f} {sec * 1e6 / count:10.2f} {err:>9}",
                  flush=True)


if __name__ == "__main__":
    main()
