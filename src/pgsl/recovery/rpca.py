"""Batched robust PCA by accelerated proximal gradient (paper §IV-C, DESIGN §2.4).

Solves, independently for every ``m x n`` matrix ``D`` of a ``(..., m, n)`` batch,

    min_{A, E}  mu * ||A||_*  +  mu * lam * ||E||_1  +  1/2 * ||D - A - E||_F^2

with the APG algorithm of Lin, Ganesh, Wright, Wu, Chen and Ma (2009, "Fast convex optimization
algorithms for exact recovery of a corrupted low-rank matrix", Algorithm 2; the paper's ref. [31]).
``A`` is the low-rank part (what PGSL keeps as the recovered map), ``E`` the sparse part (the pixel
attack). ``mu`` is the paper's relaxation parameter (eq. 4; 0.55 in §V-B). As in Lin et al. we use
continuation: ``mu_k`` starts at ``0.99 * ||D||_2`` and shrinks by ``eta`` per iteration down to
``mu``; this does not change the solution, only how fast it is reached. ``eta = 1`` disables it.

The same function serves activations in training (``B * channels`` maps) and images in the mu sweep.
Each matrix stops on its own (Lin et al.'s criterion) and leaves the batch, so a batch gives exactly
the per-matrix answers (on a GPU, up to 7 further steps of a stopped matrix: the stop is checked
every 8 steps to spare host synchronisation).
"""

from __future__ import annotations

import logging
import math
import re
from typing import NamedTuple

import torch
from torch import Tensor, nn

from pgsl.recovery.subspace import SubspaceSVT
from pgsl.recovery.threads import threaded

log = logging.getLogger(__name__)


class RPCAResult(NamedTuple):
    """Shapes: ``low_rank`` and ``sparse`` as the input; ``iterations`` and ``converged`` its batch."""

    low_rank: Tensor
    sparse: Tensor
    iterations: Tensor
    converged: Tensor


SVT_METHODS = ("auto", "svd", "gram", "gesvda", "subspace")


def _svt_svd(x: Tensor, tau: Tensor, driver: str | None = None) -> Tensor:
    def svd(c: Tensor) -> tuple[Tensor, ...]:
        return tuple(torch.linalg.svd(c, full_matrices=False, driver=driver))

    u, s, vh = threaded(svd, x)
    return (u * torch.clamp(s - tau.squeeze(-1), min=0.0).unsqueeze(-2)) @ vh


def _gram(x: Tensor) -> tuple[bool, Tensor, Tensor]:
    """``(wide, x in float64, the smaller Gram matrix in float64)``."""
    wide = x.shape[-2] <= x.shape[-1]
    xd = x.double()
    return wide, xd, (xd @ xd.mT if wide else xd.mT @ xd)


def _svt_gram(x: Tensor, tau: Tensor) -> Tensor:
    """SVT through the eigen-decomposition of the smaller Gram matrix, in float64.

    With ``X X^T = U diag(s^2) U^T``, ``SVT(X) = U diag(max(s - tau, 0) / s) U^T X``. Squaring
    loses half the digits of the small singular values, which is why this runs in float64 (an
    error of ~1e-8 * s_max, far below any threshold); singular values under ``tau`` are zeroed
    whatever their accuracy. ~2x cheaper than an SVD for small maps on a CPU, and on CUDA up to
    32x32, where cuSOLVER's batched Jacobi ``syevjBatched`` serves ``eigh`` (measured on an H100:
    0.33 vs 0.64 us per 14x14 matrix, ``bench/svt_kernels.py``).
    """
    wide, xd, gram = _gram(x)
    lam, vec = threaded(lambda c: tuple(torch.linalg.eigh(c)), gram)
    s = lam.clamp(min=0.0).sqrt()
    t = tau.double().squeeze(-1)
    factor = torch.where(s > t, (s - t) / s.clamp(min=torch.finfo(torch.float64).tiny), 0.0)
    proj = (vec * factor.unsqueeze(-2)) @ vec.mT
    return (proj @ xd if wide else xd @ proj).to(x.dtype)


_GESVDA_RETRIES = 4
_FAILED_ELEMENT = re.compile(r"Batch element (\d+)")


def _svt_gesvda(x: Tensor, tau: Tensor) -> Tensor:
    """SVT through cuSOLVER's batched ``gesvda``, with per-matrix fallbacks.

    ``gesvda`` refuses some matrices (ill-conditioned, repeated singular values: seen on planted
    64x64 data and on 14x14 relu maps) and PyTorch then raises for the whole batch, naming the
    first failed element. We keep the batch: the matrices before it are redone with gesvda, the
    failed one with the exact SVD, and the rest retried; after a few failures the remainder goes
    to the float64 Gram path, which never refuses.
    """
    flat, taus = x.reshape(-1, *x.shape[-2:]), tau.reshape(-1, 1, 1)
    out = torch.empty_like(flat)
    start, failures = 0, 0
    while start < len(flat):
        try:
            out[start:] = _svt_svd(flat[start:], taus[start:], driver="gesvda")
            break
        except torch.linalg.LinAlgError as exc:
            found = _FAILED_ELEMENT.search(str(exc))
            failures += 1
            if found is None or failures > _GESVDA_RETRIES:
                log.debug("gesvda failed %d times; Gram path for %d matrices", failures,
                          len(flat) - start)
                out[start:] = _svt_gram(flat[start:], taus[start:])
                break
            bad = start + int(found.group(1))
            if bad > start:
                out[start:bad] = _svt_svd(flat[start:bad], taus[start:bad], driver="gesvda")
            out[bad:bad + 1] = _svt_svd(flat[bad:bad + 1], taus[bad:bad + 1])
            start = bad + 1
    if not bool(torch.isfinite(out).all()):  # gesvda does not report every bad matrix
        raise torch.linalg.LinAlgError("gesvda returned non-finite values")
    return out.view(x.shape)


_BATCHED_EIGH_MAX = 32  # cuSOLVER's batched eigh/SVD kernels stop here; PyTorch loops above it
_SUBSPACE_ABOVE = 16  # CPU: from 17x17 the warm-started subspace SVT wins (bench/solver.py)


def resolve_svt(method: str, x: Tensor) -> str:
    """The SVT method that ``method`` means for ``x`` (its device and map size).

    ``"auto"`` picks what ``bench/svt_kernels.py`` and ``bench/solver.py`` measured fastest at
    equal accuracy:

    - CPU: ``gram`` up to 16x16 (LAPACK ``syevd`` on the small Gram matrix beats ``gesdd``, and
      a basis would be half the space), ``subspace`` above: a whole APG solve is 3-4x faster at
      28-32 and 4-8x at 64 than with the SVD or the Gram path (the SVD computes every singular
      triplet per step to keep a handful). Short, unconverged solves (training's 5-50 steps) end
      as close to the converged answer as the exact SVD's iterates (measured on relu maps).
    - CUDA: ``gram`` up to 32x32 (batched Jacobi); above, ``gesvda`` -- cuSOLVER's batched
      approximate SVD, the only batched SVD PyTorch reaches beyond 32x32: 4.1 us per 64x64 matrix
      against 1,137 us for the default driver, which loops one matrix at a time with a host sync.
      (``subspace`` runs on CUDA too, but has not been measured there yet.)
    """
    if method not in SVT_METHODS:
        raise ValueError(f"unknown SVT method {method!r}; choose one of {SVT_METHODS}")
    if method != "auto":
        return method
    small = min(x.shape[-2:])
    if x.device.type == "cuda":
        return "gram" if small <= _BATCHED_EIGH_MAX else "gesvda"
    return "gram" if small <= _SUBSPACE_ABOVE else "subspace"


def exact_svt(x: Tensor) -> str:
    """The fastest SVT method for ``x`` that is exact (no warm start, no approximation)."""
    small = min(x.shape[-2:]) <= _BATCHED_EIGH_MAX
    return "gram" if small else ("gesvda" if x.device.type == "cuda" else "svd")


def singular_value_threshold(x: Tensor, tau: Tensor | float, method: str = "svd") -> Tensor:
    """``U diag(max(s - tau, 0)) V^T``: the proximal operator of ``tau * ||.||_*``.

    ``tau`` is a float or a ``(..., 1, 1)`` tensor (one threshold per matrix). ``method``:
    ``"svd"`` (exact LAPACK/cuSOLVER SVD, the reference), ``"gram"`` (float64 eigh of the Gram
    matrix), ``"gesvda"`` (CUDA's batched approximate SVD; the SVD elsewhere), ``"subspace"``
    (warm-started, :mod:`pgsl.recovery.subspace`; only inside :func:`robust_pca`, here the exact
    SVD) or ``"auto"`` (:func:`resolve_svt`). A fast path that fails to converge falls back to the exact SVD.
    """
    tau_t = torch.as_tensor(tau, dtype=x.dtype, device=x.device)
    if tau_t.ndim == 0:
        tau_t = tau_t.expand(*x.shape[:-2], 1, 1)
    method = resolve_svt(method, x)
    if method == "subspace":  # it needs the previous iterate's basis: alone, the exact SVD
        method = "svd"
    try:
        if method == "gram":
            return _svt_gram(x, tau_t)
        if method == "gesvda" and x.device.type == "cuda":
            return _svt_gesvda(x, tau_t)
    except torch.linalg.LinAlgError as exc:
        log.warning("%s SVT failed (%s); falling back to the exact SVD", method, exc)
    return _svt_svd(x, tau_t)


def spectral_norm(x: Tensor, method: str = "svd") -> Tensor:
    """Largest singular value of every matrix, by the same route as ``method`` (see above)."""
    method = resolve_svt(method, x)
    if method == "gram":
        gram = _gram(x)[2]
        return torch.linalg.eigvalsh(gram)[..., -1].clamp(min=0.0).sqrt().to(x.dtype)
    driver = "gesvda" if method == "gesvda" and x.device.type == "cuda" else None
    try:
        return torch.linalg.svdvals(x, driver=driver)[..., 0]
    except torch.linalg.LinAlgError:
        return torch.linalg.svdvals(x)[..., 0]


def soft_threshold(x: Tensor, tau: Tensor | float) -> Tensor:
    """The proximal operator of ``tau * ||.||_1``: ``x - clamp(x, -tau, tau)``, two passes over ``x``
    (the same numbers as ``sign(x) * max(|x| - tau, 0)``, which takes four)."""
    t = torch.as_tensor(tau, dtype=x.dtype, device=x.device)
    return x - torch.clamp(x, -t, t)


def robust_pca(
    d: Tensor,
    *,
    mu: float,
    lam: float | None = None,
    max_iter: int = 100,
    tol: float = 1e-6,
    eta: float = 0.9,
    svt: str = "svd",
) -> RPCAResult:
    """Split every matrix of ``d`` into low-rank + sparse by APG.

    Args:
        d: ``(..., m, n)`` real tensor; float16/bfloat16 are solved in float32, float64 in float64.
        mu: weight of the nuclear norm (the paper's relaxation parameter), > 0.
        lam: weight of the l1 norm relative to ``mu``; default ``1 / sqrt(max(m, n))``.
        max_iter: iteration cap.
        tol: relative stopping tolerance on Lin et al.'s subgradient residual.
        eta: continuation factor in (0, 1]; 1 solves at fixed ``mu`` from the first iteration.
        svt: how singular values are thresholded, see :func:`singular_value_threshold`;
            ``"subspace"`` (warm-started, :mod:`pgsl.recovery.subspace`) finishes every matrix it
            stopped with exact steps, so its answers meet the exact stopping test too.

    Returns:
        :class:`RPCAResult` with ``low_rank`` and ``sparse`` in ``d``'s dtype.

    Example::

        low = torch.randn(8, 40, 2) @ torch.randn(8, 2, 40)
        spikes = (torch.rand(8, 40, 40) < 0.05) * 5.0
        r = robust_pca(low + spikes, mu=1e-3, max_iter=600)  # r.low_rank ~ low, r.sparse ~ spikes
    """
    if d.ndim < 2:
        raise ValueError(f"robust_pca needs a (..., m, n) tensor, got shape {tuple(d.shape)}")
    if not d.is_floating_point():
        raise TypeError(f"robust_pca needs a floating-point tensor, got {d.dtype}")
    if mu <= 0 or not math.isfinite(mu):
        raise ValueError(f"mu must be a positive finite number, got {mu}")
    if not 0 < eta <= 1:
        raise ValueError(f"eta must lie in (0, 1], got {eta}")
    if svt not in SVT_METHODS:
        raise ValueError(f"unknown SVT method {svt!r}; choose one of {SVT_METHODS}")
    if max_iter < 1:
        raise ValueError(f"max_iter must be >= 1, got {max_iter}")
    if not torch.isfinite(d).all():
        raise ValueError("robust_pca input contains NaN or Inf")
    out_dtype = d.dtype
    if d.dtype in (torch.float16, torch.bfloat16):
        d = d.float()
    m, n = d.shape[-2:]
    lam = 1.0 / math.sqrt(max(m, n)) if lam is None else lam
    batch = d.shape[:-2]
    if d.numel() == 0:
        empty = torch.zeros(batch, dtype=torch.long, device=d.device)
        return RPCAResult(d.to(out_dtype), d.to(out_dtype), empty, empty.bool())
    svt = resolve_svt(svt, d)
    flat = d.reshape(-1, m, n)
    # per-matrix continuation schedule: mu_k = max(eta^k * mu_0, mu), mu_0 = 0.99 ||D||_2
    if eta < 1.0:
        mu_0 = (0.99 * spectral_norm(flat, exact_svt(flat) if svt == "subspace" else svt)
                ).clamp(min=mu)[:, None, None]
    else:
        mu_0 = torch.full((flat.shape[0], 1, 1), mu, dtype=d.dtype, device=d.device)
    z, iterations, converged = _apg(flat, mu_0, mu=mu, lam=lam, max_iter=max_iter, tol=tol, eta=eta,
                                    svt=svt)
    if svt == "subspace":
        # The subspace steps are inexact while the basis settles: every matrix they stopped is
        # finished by exact APG steps from where it stopped. At the exact fixed point (the usual
        # case) that is one SVD, which finds the stopping test met at once.
        rows = converged.nonzero().squeeze(1)
        if len(rows):
            budget = max(1, max_iter - int(iterations[rows].max()))
            polish, more, done = _apg(flat[rows], torch.full((len(rows), 1, 1), mu, dtype=d.dtype,
                                                             device=d.device),
                                      mu=mu, lam=lam, max_iter=budget, tol=tol, eta=1.0,
                                      svt=exact_svt(flat), start=z[:, rows])
            z[:, rows], iterations[rows], converged[rows] = polish, iterations[rows] + more, done
    return RPCAResult(z[0].view(d.shape).to(out_dtype), z[1].view(d.shape).to(out_dtype),
                      iterations.view(batch), converged.view(batch))


def _apg(
    flat: Tensor, mu_k: Tensor, *, mu: float, lam: float, max_iter: int, tol: float, eta: float,
    svt: str, start: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """APG on a ``(count, m, n)`` batch from ``start`` (``(2, count, m, n)``: A and E; default 0).

    Returns ``(z, iterations, converged)``, ``z`` stacking the final A and E.
    """
    count, m, n = flat.shape
    device = flat.device
    # On a GPU, asking "has any matrix stopped?" waits for the device: ask every few steps. A
    # matrix that stopped keeps iterating until then (its answer only improves) and is written
    # out at the check; its iteration count is the one at which it met the test.
    check_every = 1 if device.type == "cpu" else 8
    subspace = None
    if svt == "subspace":
        exact = exact_svt(flat)
        subspace = SubspaceSVT(count, m, n, flat.dtype, device,
                               exact=lambda x, tau: singular_value_threshold(x, tau, exact))
    if start is None:
        a, e = torch.zeros_like(flat), torch.zeros_like(flat)
    else:
        a, e = start[0].clone(), start[1].clone()
    out = torch.stack((a, e))
    iterations = torch.zeros(count, dtype=torch.long, device=device)
    converged = torch.zeros(count, dtype=torch.bool, device=device)
    # Only the working set -- matrices not yet stopped -- is iterated: when at most half of it is
    # still running it is compacted, so a few slow matrices do not make the whole batch pay.
    index = torch.arange(count, device=device)  # working row -> matrix
    # Only the difference P = A - E enters the next step: Nesterov's extrapolation is linear, so
    # Ya - Ye = P + c (P - P_prev), and the gradient step on f = ||D - A - E||^2 (Lipschitz 2),
    # W = Y - (Ya + Ye - D) / 2, gives Wa = (D + Ya - Ye) / 2 and We = (D - Ya + Ye) / 2.
    half_d, p = 0.5 * flat, a - e
    p_prev = p
    active = torch.ones(count, dtype=torch.bool, device=device)
    written = torch.zeros(count, dtype=torch.bool, device=device)
    its = torch.zeros(count, dtype=torch.long, device=device)
    t, t_prev = 1.0, 1.0  # Nesterov's sequence (shared: all matrices start together)
    mn = (-2, -1)

    def retire(rows: Tensor) -> None:
        out[0, index[rows]], out[1, index[rows]] = a[rows], e[rows]
        iterations[index[rows]] = its[rows]
        converged[index[rows]] = ~active[rows]

    # Each line below is one pass over the batch: on a CPU at 64x64 these passes, not the SVT,
    # set the speed, so there are six of them besides the SVT.
    for k in range(max_iter):
        h = torch.lerp(p_prev, p, 1.0 + (t_prev - 1.0) / t) if k else p  # Ya - Ye
        wa, we = torch.add(half_d, h, alpha=0.5), torch.add(half_d, h, alpha=-0.5)
        a = subspace(wa, mu_k / 2) if subspace else singular_value_threshold(wa, mu_k / 2, svt)
        e = soft_threshold(we, (0.5 * lam) * mu_k)
        p_prev, p = p, a - e
        reached = mu_k[:, 0, 0] <= mu
        its += active
        if k + 1 >= max_iter or bool(reached.any()):  # no stopping test during continuation
            # Lin et al.'s stopping quantity, a subgradient (S_A, S_E) at the new point: with one
            # gradient step shared by both blocks, S_A = -S_E = (Ya - A) - (Ye - E) = h - P.
            residual = math.sqrt(2.0) * torch.linalg.vector_norm(h - p, dim=mn)
            scale = 2.0 * torch.hypot(torch.linalg.vector_norm(a, dim=mn),
                                      torch.linalg.vector_norm(e, dim=mn))
            active = active & ~((residual <= tol * scale.clamp(min=1.0)) & reached)
        t_prev, t = t, (1.0 + math.sqrt(1.0 + 4.0 * t * t)) / 2.0
        mu_k = torch.clamp(mu_k * eta, min=mu)
        if (k + 1) % check_every == 0:
            stopped = ~active & ~written
            if bool(stopped.any()):
                retire(stopped)
                written |= stopped
            running = int(active.sum())
            if running == 0:
                break
            if running <= len(active) // 2:
                rows = active.nonzero().squeeze(1)
                index, half_d, mu_k, its = index[rows], half_d[rows], mu_k[rows], its[rows]
                active, written = active[rows], written[rows]
                a, e, p, p_prev = a[rows], e[rows], p[rows], p_prev[rows]
                if subspace:
                    subspace.select(rows)
    retire(~written)
    return out, iterations, converged


class ProxRecovery(nn.Module):
    """Robust PCA on every channel map of a ``(B, C, h, w)`` batch; returns the low-rank maps.

    Runs without gradient: PGSL treats the recovered maps as data (only ``S_f``'s gradient reaches
    the client, through the attacked activations, never through the solver).
    """

    def __init__(
        self, *, mu: float, lam: float | None = None, max_iter: int = 30, tol: float = 1e-4,
        eta: float = 0.9, svt: str = "svd",
    ) -> None:
        super().__init__()
        self.mu, self.lam, self.max_iter, self.tol, self.eta = mu, lam, max_iter, tol, eta
        self.svt = svt

    def forward(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            return robust_pca(
                x.detach(), mu=self.mu, lam=self.lam, max_iter=self.max_iter, tol=self.tol,
                eta=self.eta, svt=self.svt,
            ).low_rank

    def extra_repr(self) -> str:
        return (f"mu={self.mu}, lam={self.lam}, max_iter={self.max_iter}, tol={self.tol}, "
                f"eta={self.eta}, svt={self.svt}")
