"""Batched robust PCA by ADMM: the problem of :mod:`pgsl.recovery.rpca`, for solves run to convergence.

Contract: :func:`admm` takes a ``(count, m, n)`` batch and returns ``(z, iterations, converged,
state)``: ``z`` ``(2, count, m, n)`` stacks the low-rank part ``A`` and the sparse part ``E``,
``iterations`` and ``converged`` are ``(count,)``, and ``state`` (:class:`ADMMState`) is where
every matrix stopped, to continue from. Users reach it as ``robust_pca(d, ..., solver="admm")``.

For every ``m x n`` matrix ``D`` of the batch it solves APG's problem

    min_{A, E}  mu * ||A||_*  +  mu * lam * ||E||_1  +  1/2 * ||D - A - E||_F^2

(stable principal component pursuit; Zhou, Li, Wright, Candes & Ma 2010), written with a residual
``R = D - A - E`` and a copy ``B = E + R`` so that ADMM (Boyd et al. 2011) has two blocks, each
with a closed-form step:

    A     = SVT(D - B - U, mu / rho)                       the nuclear-norm block
    A'    = alpha A + (1 - alpha) (D - B)                   over-relaxation, alpha = 1.6
    W     = D - A' - U
    E     = soft(W, mu * lam * (1 + rho) / rho),  R = rho / (1 + rho) * (W - E)     per entry
    B     = E + R,   U += A' + B - D                        (scaled dual)

(``min_{e, r} mu*lam*|e| + r^2/2 + rho/2 (e + r - w)^2`` is solved exactly: ``r`` in closed form
for any ``e``, which leaves a soft threshold for ``e``). It stops when both the primal residual
``||A + B - D||`` and the dual residual ``rho ||B - B_prev||`` are below ``tol * max(||D||_F, 1)``;
a matrix that does not within ``max_iter`` is reported unconverged. The dual residual is ``rho``
times a change in ``B``, and ``rho`` stays far below 1 at small ``mu``, so a loose ``tol`` can
stop a hard matrix early: use ``tol <= 1e-7`` when the answer must be the minimiser.

The penalty ``rho`` starts at ``1.25 mu / ||D||_2`` (the first threshold is ``0.8 ||D||_2``, as in
the inexact ALM of Lin, Chen & Ma 2010 and APG's continuation) and is balanced per matrix (Boyd et
al. §3.4.1): x1.15 (:data:`GROWTH`) while the primal residual is 10x the dual one, /1.15 in the
opposite case, within ``[rho_min, 1e8 rho_min]``.

Why it is not PGSL's solver: the paper and docs/design.md#the-pgsl-pipeline name APG, and training
stops the solver after 5-50 iterations, where APG's continuation iterate (not the minimiser) is what
the server's streams learn from.

Measured behaviour (iterations and time against APG and tensorly, what ``tol`` guarantees, the
plateau at small ``mu``, the penalty schedules that were rejected):
docs/findings.md#admm-tolerance-and-plateau
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from pgsl.recovery.svt import BatchSVT, soft_threshold, spectral_norm
from pgsl.recovery.working_set import WorkingSet

GROWTH = 1.15  # rho's balancing factor
BALANCE = 10.0  # residual ratio that triggers it
RHO_SPAN = 1e8  # rho stays within [rho_min, RHO_SPAN * rho_min]
RELAX = 1.6  # over-relaxation (Boyd et al. §3.4.3): relu maps in 43 iterations at tol 1e-7, not 61


class ADMMState(NamedTuple):
    """Where ADMM stands for each matrix: ``b`` (= E + R), the scaled dual ``u``, ``rho``."""

    b: Tensor
    u: Tensor
    rho: Tensor


def admm(
    flat: Tensor, *, mu: float, lam: float, max_iter: int, tol: float, svt: str,
    start: ADMMState | None = None,
) -> tuple[Tensor, Tensor, Tensor, ADMMState]:
    """ADMM on a ``(count, m, n)`` batch with the resolved SVT method ``svt``, from ``start``.

    Returns ``(z, iterations, converged, state)``: ``z`` stacks the final A and E, ``state`` is
    where every matrix stopped (to continue it, e.g. with exact steps after inexact ones).
    """
    count, m, n = flat.shape
    device = flat.device
    mn = (-2, -1)
    check_every = 1 if device.type == "cpu" else 8  # on a GPU a check waits for the device
    size = torch.linalg.vector_norm(flat, dim=mn)[:, None, None]
    scale = tol * size.clamp(min=1.0)[:, 0, 0]
    rho_min = 1.25 * mu / size.clamp(min=mu)  # ||D||_F >= ||D||_2
    if start is None:
        norm2 = spectral_norm(flat, svt)
        rho = 1.25 * mu / norm2.clamp(min=mu)[:, None, None]
        b, u = torch.zeros_like(flat), torch.zeros_like(flat)
    else:
        b, u, rho = (t.clone() for t in start)
    rho_max = RHO_SPAN * rho_min
    op = BatchSVT(svt, count, m, n, flat.dtype, device)
    a, e = torch.zeros_like(flat), torch.zeros_like(flat)
    out = torch.zeros(2, count, m, n, dtype=flat.dtype, device=device)
    final = ADMMState(b.clone(), u.clone(), rho.clone())
    ws = WorkingSet(count, device)
    d = flat
    # The loop carries Y = D - U and DB = D - B besides B: each line below is then one pass over
    # the batch, eleven besides the SVT and two norms (seventeen with U itself).
    y, db = d - u, d - b

    def write(rows: Tensor, where: Tensor) -> None:
        out[0, where], out[1, where] = a[rows], e[rows]
        final.b[where], final.u[where], final.rho[where] = b[rows], d[rows] - y[rows], rho[rows]

    for k in range(max_iter):
        a = op(y - b, mu / rho)
        ah = torch.lerp(db, a, RELAX)  # the relaxed A: RELAX * A + (1 - RELAX) * (D - B_prev)
        w = y - ah
        e = soft_threshold(w, (mu * lam) * (1.0 + rho) / rho)
        b = torch.lerp(e, w, rho / (1.0 + rho))  # E + R
        db_prev, db = db, d - b
        primal = torch.linalg.vector_norm(a - db, dim=mn)  # ||A + B - D||
        dual = rho[:, 0, 0] * torch.linalg.vector_norm(db_prev - db, dim=mn)  # rho ||B - B_prev||
        y = w + db  # D - U_next, U_next = U + A' + B - D
        ws.step((primal <= scale) & (dual <= scale))
        factor = torch.where(primal > BALANCE * dual, GROWTH,
                             torch.where(dual > BALANCE * primal, 1.0 / GROWTH, 1.0))[:, None, None]
        rho_next = torch.minimum(torch.maximum(rho * factor, rho_min), rho_max)
        if device.type != "cpu" or bool((rho_next != rho).any()):  # (no host sync on a GPU)
            y = torch.lerp(d, y, rho / rho_next)  # the scaled dual follows rho: U *= rho / rho_next
        rho = rho_next
        if (k + 1) % check_every == 0:
            finished, keep = ws.check(write)
            if finished:
                break
            if keep is not None:
                d, a, e, b, db, y = d[keep], a[keep], e[keep], b[keep], db[keep], y[keep]
                rho, scale, rho_min, rho_max = rho[keep], scale[keep], rho_min[keep], rho_max[keep]
                op.select(keep)
    ws.finish(write)
    return out, ws.iterations, ws.converged, final
