"""Batched robust PCA by accelerated proximal gradient (paper §IV-C, docs/design.md#the-pgsl-pipeline).

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
every 8 steps to spare host synchronisation). ``solver="admm"`` solves the same problem by ADMM
(:mod:`pgsl.recovery.admm`), for solves run to convergence; the SVT routes live in
:mod:`pgsl.recovery.svt`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor, nn

from pgsl.recovery.admm import ADMMState, admm
from pgsl.recovery.svt import SVT_METHODS, BatchSVT, exact_svt, resolve_svt, soft_threshold, spectral_norm
from pgsl.recovery.working_set import WorkingSet

SOLVERS = ("apg", "admm")


class RPCAResult(NamedTuple):
    """Shapes: ``low_rank`` and ``sparse`` as the input; ``iterations`` and ``converged`` its batch."""

    low_rank: Tensor
    sparse: Tensor
    iterations: Tensor
    converged: Tensor


def robust_pca(
    d: Tensor,
    *,
    mu: float,
    lam: float | None = None,
    max_iter: int = 100,
    tol: float = 1e-6,
    eta: float = 0.9,
    svt: str = "svd",
    solver: str = "apg",
) -> RPCAResult:
    """Split every matrix of ``d`` into low-rank + sparse by APG (or ADMM, for the same problem).

    Args:
        d: ``(..., m, n)`` real tensor; float16/bfloat16 are solved in float32, float64 in float64.
        mu: weight of the nuclear norm (the paper's relaxation parameter), > 0.
        lam: weight of the l1 norm relative to ``mu``; default ``1 / sqrt(max(m, n))``.
        max_iter: iteration cap.
        tol: relative stopping tolerance: APG, on Lin et al.'s subgradient residual; ADMM, on
            its primal and dual residuals (:mod:`pgsl.recovery.admm`).
        eta: APG's continuation factor in (0, 1]; 1 solves at fixed ``mu`` from the first
            iteration. ADMM continues through its penalty instead and ignores it.
        svt: how singular values are thresholded, see
            :func:`pgsl.recovery.svt.singular_value_threshold`; ``"subspace"`` (warm-started,
            :mod:`pgsl.recovery.subspace`) finishes every matrix it stopped with exact steps, so
            its answers meet the exact stopping test too.
        solver: ``"apg"`` (the paper's, docs/design.md#the-pgsl-pipeline: what training and the mu
            sweep use) or
            ``"admm"`` (:mod:`pgsl.recovery.admm`: the same minimiser in 3-10x fewer iterations,
            for solves run to convergence; its truncated iterates are not APG's).

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
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; choose one of {SOLVERS}")
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
    if solver == "admm":
        z, iterations, converged = _admm_solve(flat, mu=mu, lam=lam, max_iter=max_iter, tol=tol,
                                               svt=svt)
    else:
        z, iterations, converged = _apg_solve(flat, mu=mu, lam=lam, max_iter=max_iter, tol=tol,
                                              eta=eta, svt=svt)
    return RPCAResult(z[0].view(d.shape).to(out_dtype), z[1].view(d.shape).to(out_dtype),
                      iterations.view(batch), converged.view(batch))


def _apg_solve(flat: Tensor, *, mu: float, lam: float, max_iter: int, tol: float, eta: float,
               svt: str) -> tuple[Tensor, Tensor, Tensor]:
    # per-matrix continuation schedule: mu_k = max(eta^k * mu_0, mu), mu_0 = 0.99 ||D||_2
    if eta < 1.0:
        mu_0 = (0.99 * spectral_norm(flat, svt)).clamp(min=mu)[:, None, None]
    else:
        mu_0 = torch.full((flat.shape[0], 1, 1), mu, dtype=flat.dtype, device=flat.device)
    z, iterations, converged = _apg(flat, mu_0, mu=mu, lam=lam, max_iter=max_iter, tol=tol, eta=eta,
                                    svt=svt)
    if svt == "subspace":
        def finish(rows: Tensor, budget: int) -> tuple[Tensor, Tensor, Tensor]:
            fixed_mu = torch.full((len(rows), 1, 1), mu, dtype=flat.dtype, device=flat.device)
            return _apg(flat[rows], fixed_mu, mu=mu, lam=lam, max_iter=budget, tol=tol, eta=1.0,
                        svt=exact_svt(flat), start=z[:, rows])
        _finish_exactly(z, iterations, converged, max_iter, finish)
    return z, iterations, converged


def _admm_solve(flat: Tensor, *, mu: float, lam: float, max_iter: int, tol: float,
                svt: str) -> tuple[Tensor, Tensor, Tensor]:
    z, iterations, converged, state = admm(flat, mu=mu, lam=lam, max_iter=max_iter, tol=tol, svt=svt)
    if svt == "subspace":
        def finish(rows: Tensor, budget: int) -> tuple[Tensor, Tensor, Tensor]:
            return admm(flat[rows], mu=mu, lam=lam, max_iter=budget, tol=tol, svt=exact_svt(flat),
                        start=ADMMState(*(t[rows] for t in state)))[:3]
        _finish_exactly(z, iterations, converged, max_iter, finish)
    return z, iterations, converged


def _finish_exactly(z: Tensor, iterations: Tensor, converged: Tensor, max_iter: int,
                    finish: Callable[[Tensor, int], tuple[Tensor, Tensor, Tensor]]) -> None:
    """The subspace steps are inexact while the basis settles: every matrix they stopped is
    finished by exact steps from where it stopped (``finish(rows, budget)``), in place. At the exact
    fixed point (the usual case) that is one SVD, which finds the stopping test met at once."""
    rows = converged.nonzero().squeeze(1)
    if len(rows):
        budget = max(1, max_iter - int(iterations[rows].max()))
        polish, more, done = finish(rows, budget)
        z[:, rows], iterations[rows], converged[rows] = polish, iterations[rows] + more, done


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
    op = BatchSVT(svt, count, m, n, flat.dtype, device)
    if start is None:
        a, e = torch.zeros_like(flat), torch.zeros_like(flat)
    else:
        a, e = start[0].clone(), start[1].clone()
    out = torch.stack((a, e))
    ws = WorkingSet(count, device)
    # Only the difference P = A - E enters the next step: Nesterov's extrapolation is linear, so
    # Ya - Ye = P + c (P - P_prev), and the gradient step on f = ||D - A - E||^2 (Lipschitz 2),
    # W = Y - (Ya + Ye - D) / 2, gives Wa = (D + Ya - Ye) / 2 and We = (D - Ya + Ye) / 2.
    half_d, p = 0.5 * flat, a - e
    p_prev = p
    t, t_prev = 1.0, 1.0  # Nesterov's sequence (shared: all matrices start together)
    mn = (-2, -1)

    def write(rows: Tensor, where: Tensor) -> None:
        out[0, where], out[1, where] = a[rows], e[rows]

    # Each line below is one pass over the batch: on a CPU at 64x64 these passes, not the SVT,
    # set the speed, so there are six of them besides the SVT.
    for k in range(max_iter):
        h = torch.lerp(p_prev, p, 1.0 + (t_prev - 1.0) / t) if k else p  # Ya - Ye
        wa, we = torch.add(half_d, h, alpha=0.5), torch.add(half_d, h, alpha=-0.5)
        a = op(wa, mu_k / 2)
        e = soft_threshold(we, (0.5 * lam) * mu_k)
        p_prev, p = p, a - e
        reached = mu_k[:, 0, 0] <= mu
        if k + 1 >= max_iter or bool(reached.any()):  # no stopping test during continuation
            # Lin et al.'s stopping quantity, a subgradient (S_A, S_E) at the new point: with one
            # gradient step shared by both blocks, S_A = -S_E = (Ya - A) - (Ye - E) = h - P.
            residual = math.sqrt(2.0) * torch.linalg.vector_norm(h - p, dim=mn)
            scale = 2.0 * torch.hypot(torch.linalg.vector_norm(a, dim=mn),
                                      torch.linalg.vector_norm(e, dim=mn))
            ws.step((residual <= tol * scale.clamp(min=1.0)) & reached)
        else:
            ws.step()
        t_prev, t = t, (1.0 + math.sqrt(1.0 + 4.0 * t * t)) / 2.0
        mu_k = torch.clamp(mu_k * eta, min=mu)
        if (k + 1) % check_every == 0:
            finished, keep = ws.check(write)
            if finished:
                break
            if keep is not None:
                half_d, mu_k = half_d[keep], mu_k[keep]
                a, e, p, p_prev = a[keep], e[keep], p[keep], p_prev[keep]
                op.select(keep)
    ws.finish(write)
    return out, ws.iterations, ws.converged


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
