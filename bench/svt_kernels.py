"""Time the building blocks of singular value thresholding per map size on one device.

What the size/device choice in :func:`pgsl.recovery.rpca.singular_value_threshold` rests on:
``torch.linalg.svd`` (CUDA drivers gesvdj, gesvda and the default), ``torch.linalg.eigh`` of the
Gram matrix in float32/float64, and a batched matrix product for scale. Prints milliseconds per
batch and microseconds per matrix, and each SVT's relative error against a float64 CPU SVD.

Also a candidate not in the library yet, ``svt:ns`` (:func:`svt_products`): an SVT from batched
matrix products alone, no eigensolver, hence no host synchronisation on CUDA (``torch.linalg.eigh``
waits for the device on every call, to check its error codes) and a chance of running on tensor
cores; ``svt:ns-graph`` replays it as one CUDA graph (no launch overhead). On a CPU it is far
slower than LAPACK (~175 small products); the question is only what it costs on a GPU.

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


NS_POWER, NS_SIGN, NS_SQRT = 4, 28, 28  # measured on relu maps, float32: worst error ~1e-6 at
# thresholds 0.03 ... 0.3 of the largest singular value, 14x14 and 28x28 (2e-2 with 20/18 steps)


def svt_products(x: torch.Tensor, tau: float) -> torch.Tensor:
    """``SVT(x, tau) = F(G) x`` for ``G = x x^T`` and ``F(l) = max(1 - tau / sqrt(l), 0)``, from
    matrix products only (the wide orientation; the tall one mirrors it):

    1. ``c >= l_max`` from a few power steps (x1.1, capped by the trace, which always bounds it).
    2. ``P = (I + sign(G/c - t I)) / 2``, ``t = tau^2 / c``: the projector onto the eigenvalues
       above the threshold, by quintic Newton-Schulz steps ``y (15 - 10 y^2 + 3 y^4) / 8``.
       An eigenvalue too close to ``t`` for them gets a partial weight, where ``F`` is ~0 anyway.
    3. ``Z = M^(-1/2)`` for ``M = P (G/c) P + (I - P)`` (spectrum in ``[t, 1]``: well posed),
       by coupled Newton-Schulz steps; then ``F(G) = P - tau / sqrt(c) * P Z``.
    """
    wide = x.shape[-2] <= x.shape[-1]
    g = x @ x.mT if wide else x.mT @ x
    eye = torch.eye(g.shape[-1], dtype=x.dtype, device=x.device)
    tiny = torch.finfo(x.dtype).tiny
    v = torch.ones(*g.shape[:-1], 1, dtype=x.dtype, device=x.device)
    for _ in range(NS_POWER):
        v = g @ v
        v = v / v.norm(dim=-2, keepdim=True).clamp(min=tiny)
    estimate = (v.mT @ g @ v)[..., 0, 0]
    trace = g.diagonal(dim1=-2, dim2=-1).sum(-1)
    c = torch.minimum(1.1 * estimate, trace)[..., None, None].clamp(min=tiny)
    t = tau * tau / c
    gh = g / c
    y = (gh - t * eye) / torch.maximum(t, 1 - t)
    for _ in range(NS_SIGN):
        y2 = y @ y
        y = y @ (15 * eye - 10 * y2 + 3 * (y2 @ y2)) / 8
    p = (eye + y) / 2
    m = p @ gh @ p + (eye - p)
    root, z = m, eye.expand_as(m)
    for _ in range(NS_SQRT):
        step = (3 * eye - z @ root) / 2
        root, z = root @ step, step @ z
    f = p - (tau / c.sqrt()) * (p @ z)
    return f @ x if wide else x @ f


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
        "svt:ns": lambda: svt_products(x, tau),
    }
    if device.type == "cuda":
        try:  # captured once here; the timed calls replay it
            cases["svt:ns-graph"] = graphed(lambda a: svt_products(a, tau), x)
        except Exception as exc:  # noqa: BLE001 - a probe reports and goes on
            print(f"svt:ns-graph: capture failed: {type(exc).__name__}: {str(exc)[:80]}")
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
