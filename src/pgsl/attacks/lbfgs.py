"""Box-constrained L-BFGS over a batch of independent problems, in torch.

:func:`lbfgsb` minimises ``N`` objectives ``f_i(x_i)``, ``x_i`` in the box ``[lower_i, upper_i]``
of ``R^n``, all at once: every evaluation is one batched call, every piece of state lives on the
input's device, and a victim's problem never reads another's. It stands in for scipy's
L-BFGS-B (Byrd, Lu, Nocedal & Zhu 1995) run one problem at a time, with the same stopping rules
(``maxiter``, ``maxfun``, ``ftol``, ``gtol``, a failed line search) but a simpler, projected
method (Bertsekas 1982; Kim, Sra & Dhillon 2010) in place of the generalized Cauchy point:

- **Direction.** Per problem, ``-H g`` with ``H`` the L-BFGS matrix of its own ``memory`` latest
  pairs ``(s, y)`` (the two-loop recursion's result, Nocedal & Wright Alg. 7.4, computed from the
  compact form of Byrd, Nocedal & Schnabel 1994 with batched products), applied to the gradient
  on the free variables and zero on the fixed ones (a variable at a bound whose gradient pushes
  it outward). Where that is not a descent direction: the projected steepest descent, and the
  memory is dropped.
- **Step.** Backtracking along the projected path ``P(x + t p)`` from ``t = 1`` until Armijo's
  condition ``f(P(x + t p)) <= f(x) + c1 <g, P(x + t p) - x>`` holds (safeguarded quadratic
  interpolation). A non-finite value (or ``FloatingPointError``) at a trial point rejects the
  step, as scipy's ``inf``. After ``max_ls`` rejected trials the line search fails: with memory,
  the memory is dropped and the iteration retried; without, the problem stops (scipy: ABNORMAL),
  at its last accepted point.
- **Batching.** The problems do not wait for each other: every call of the objective evaluates
  one trial point of each running problem, at its own step -- the first trial of a new iteration
  for one, a backtracking step for another -- so a batch costs as many calls as its most
  expensive problem needs evaluations. Stopped problems are no longer evaluated.
- **Memory.** A pair is kept when ``s^T y > eps y^T y`` (scipy's rule); ``H0 = (s^T y / y^T y) I``.

Each call of the objective comes with two syncs with the host (which problems run, whether any
needs a direction), never one per problem; the solver's arithmetic is per problem (elementwise, and
products of each problem's own matrices), so its iterates do not depend on the rest of the batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["CONVERGED", "EVALUATIONS", "ITERATIONS", "LINE_SEARCH", "NOT_FINITE", "LBFGSBResult",
           "lbfgsb"]

RUNNING = -1
CONVERGED = 0  # the projected gradient or the relative decrease of f fell below its tolerance
ITERATIONS = 1  # max_iter iterations
EVALUATIONS = 2  # more than max_eval evaluations
LINE_SEARCH = 3  # the line search failed from the steepest descent direction
NOT_FINITE = 4  # the objective is not finite at the start

Objective = Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class LBFGSBResult:
    """``x`` ``(N, n)``: each problem's last accepted point (its lowest value); ``f`` ``(N,)``
    there; ``iterations``, ``evaluations`` ``(N,)`` int64; ``status`` ``(N,)``: one of
    :data:`CONVERGED`, :data:`ITERATIONS`, :data:`EVALUATIONS`, :data:`LINE_SEARCH`,
    :data:`NOT_FINITE`."""

    x: Tensor
    f: Tensor
    iterations: Tensor
    evaluations: Tensor
    status: Tensor


def _evaluate(fun: Objective, x: Tensor, rows: Tensor) -> tuple[Tensor, Tensor]:
    """Values ``(B,)`` and gradients ``(B, n)`` of the problems ``rows`` at ``x``; ``inf`` and a
    zero gradient where either is not finite. A batch whose evaluation raises
    ``FloatingPointError`` is split in halves until the problems that raise it are alone."""
    try:
        with torch.enable_grad():
            v = x.detach().requires_grad_(True)
            f = fun(v, rows)
            if f.shape != rows.shape:
                raise ValueError(f"the objective gave shape {tuple(f.shape)} for {len(rows)} problems")
            finite = torch.isfinite(f)
            g = (torch.autograd.grad(torch.where(finite, f, 0).sum(), v, allow_unused=True)[0]
                 if f.requires_grad else None)
    except FloatingPointError:
        if len(rows) == 1:
            return torch.full_like(x[:, 0], float("inf")), torch.zeros_like(x)
        h = len(rows) // 2
        (f1, g1), (f2, g2) = _evaluate(fun, x[:h], rows[:h]), _evaluate(fun, x[h:], rows[h:])
        return torch.cat([f1, f2]), torch.cat([g1, g2])
    g = torch.zeros_like(x) if g is None else g.to(x.dtype)
    bad = ~finite | ~torch.isfinite(g).all(1)
    return (torch.where(bad, float("inf"), f.detach().to(x.dtype)),
            torch.where(bad[:, None], 0.0, g))


def lbfgsb(fun: Objective, x0: Tensor, *, lower: Tensor | float, upper: Tensor | float,
           max_iter: int, max_eval: int | None = None, memory: int = 50, ftol: float = 2.2e-9,
           gtol: float = 1e-5, max_ls: int = 20, c1: float = 1e-4) -> LBFGSBResult:
    """Minimise ``N`` independent box-constrained problems at once (see the module's text).

    Args:
        fun: ``(x, rows) -> f``: ``x`` ``(B, n)`` points of the problems ``rows`` ``(B,)`` (int64
            indices into the batch) -> ``(B,)`` values, differentiable in ``x``, row ``b`` a
            function of ``x[b]`` alone. It may return non-finite values or raise
            ``FloatingPointError``; both reject the point.
        x0: ``(N, n)`` starting points (projected onto the box); the solver works in its dtype.
        lower, upper: the box, broadcastable to ``(N, n)``; ``lower <= upper``.
        max_iter: iterations per problem (scipy's ``maxiter``).
        max_eval: a problem stops at the first new point after more than this many evaluations
            (scipy's ``maxfun``); None: no limit.
        memory: pairs kept per problem (scipy's ``maxcor``).
        ftol: stop when ``(f_k - f_{k+1}) / max(|f_k|, |f_{k+1}|, 1) <= ftol``.
        gtol: stop when the projected gradient's largest entry is ``<= gtol``.
        max_ls: trial points per line search.
        c1: Armijo's sufficient-decrease constant.

    Returns:
        :class:`LBFGSBResult`, every tensor on ``x0``'s device.

    The problems do not wait for each other: every call of ``fun`` evaluates one trial point of
    each running problem -- the first of a new iteration for one, a backtracking step for another
    -- so a batch costs as many calls as its most expensive problem needs evaluations.
    """
    if x0.ndim != 2:
        raise ValueError(f"lbfgsb takes a batch of flat points (N, n), got {tuple(x0.shape)}")
    if max_iter < 1 or memory < 1 or max_ls < 1 or (max_eval is not None and max_eval < 1):
        raise ValueError("max_iter, memory, max_ls and max_eval must be >= 1")
    n_batch, n = x0.shape
    dev, dt = x0.device, x0.dtype
    lo = torch.as_tensor(lower, dtype=dt, device=dev).expand(n_batch, n)
    hi = torch.as_tensor(upper, dtype=dt, device=dev).expand(n_batch, n)
    if bool((lo > hi).any()):
        raise ValueError("lower bounds must not exceed upper bounds")
    mem = _Memory(n_batch, n, memory, x0)
    x = torch.clamp(x0.detach(), lo, hi)
    f, g = _evaluate(fun, x, torch.arange(n_batch, device=dev))
    evals = torch.ones(n_batch, dtype=torch.long, device=dev)
    iters, trials = torch.zeros_like(evals), torch.zeros_like(evals)
    status = torch.where(torch.isfinite(f), RUNNING, NOT_FINITE)
    p, t = torch.zeros_like(x), x.new_ones(n_batch)
    fresh = status == RUNNING  # problems at a new point, in need of a direction
    eps = torch.finfo(dt).eps
    while True:
        if bool(fresh.any()):
            converged = fresh & ((torch.clamp(x - g, lo, hi) - x).abs().amax(1) <= gtol)
            status = torch.where(converged, CONVERGED, status)
            p = mem.directions(fresh & ~converged, x, g, lo, hi, p)
        idx = (status == RUNNING).nonzero().squeeze(1)
        if len(idx) == 0:
            break
        xi, ti = x[idx], t[idx]
        xt = torch.clamp(xi + ti[:, None] * p[idx], lo[idx], hi[idx])
        ft, gt = _evaluate(fun, xt, idx)
        evals[idx] += 1
        trials[idx] += 1
        slope = (g[idx] * (xt - xi)).sum(1)  # the linear model's decrease along the path
        ok_i = (slope < 0) & (ft <= f[idx] + c1 * slope)
        # the minimiser of the quadratic through f(x), the slope and f(x_t), kept in [t/10, t/2]
        t_q = -slope * ti / (2 * (ft - f[idx] - slope))
        t[idx] = torch.where(torch.isfinite(t_q), t_q.clamp(0.1 * ti, 0.5 * ti), 0.1 * ti)

        ok = torch.zeros_like(fresh).index_put((idx,), ok_i)
        x_t, f_t, g_t = x.index_put((idx,), xt), f.index_put((idx,), ft), g.index_put((idx,), gt)
        mem.push(ok, x_t - x, g_t - g, eps)
        decrease = (f - f_t) / torch.maximum(torch.maximum(f.abs(), f_t.abs()), torch.ones_like(f))
        x, f, g = torch.where(ok[:, None], x_t, x), torch.where(ok, f_t, f), torch.where(ok[:, None], g_t, g)
        iters += ok.long()
        status = torch.where(ok & (decrease <= ftol), CONVERGED, status)
        status = torch.where(ok & (status == RUNNING) & (iters >= max_iter), ITERATIONS, status)
        if max_eval is not None:
            status = torch.where(ok & (status == RUNNING) & (evals > max_eval), EVALUATIONS, status)

        # a failed line search: retried from the steepest descent, or the end without memory
        exhausted = (status == RUNNING) & ~ok & (trials >= max_ls)
        status = torch.where(exhausted & (mem.count == 0), LINE_SEARCH, status)
        mem.forget(exhausted)
        fresh = (ok | exhausted) & (status == RUNNING)
        trials = torch.where(fresh, 0, trials)
        t = torch.where(fresh, 1.0, t)
    return LBFGSBResult(x, f, iters, evals, status)


def _dots(rows: Tensor, v: Tensor) -> Tensor:
    """``rows @ v^T`` per problem: ``(N, r, n)``, ``(N, k, n)`` -> ``(N, k, r)``. Written as row
    vectors times a matrix: as ``bmm(rows, v^T)`` it ran ~7x slower on a CPU, and its rounding
    changed with the batch size (a problem's iterates would have too)."""
    return torch.bmm(v, rows.transpose(1, 2))


class _Memory:
    """Every problem's latest ``memory`` pairs in one ring buffer ``w`` ``(N, 2 memory, n)``
    (``s`` in the first half, ``y`` in the second: one pass over memory serves both) and their
    inner products ``S^T Y``, ``Y^T Y`` ``(N, memory, memory)`` in slot order; ``head``: the next
    slot, ``count``: how many are kept, ``gamma``: ``H0``'s scale."""

    def __init__(self, n_batch: int, n: int, memory: int, like: Tensor) -> None:
        self.w = like.new_zeros(n_batch, 2 * memory, n)
        self.sy, self.yy = like.new_zeros(n_batch, memory, memory), like.new_zeros(n_batch, memory, memory)
        self.gamma = like.new_ones(n_batch)
        self.head = torch.zeros(n_batch, dtype=torch.long, device=like.device)
        self.count = torch.zeros_like(self.head)
        self.rows = torch.arange(n_batch, device=like.device)
        self.positions = torch.arange(memory, device=like.device)

    def push(self, where: Tensor, s: Tensor, y: Tensor, eps: float) -> None:
        """Keep ``(s, y)`` for the problems ``where`` whose curvature ``s^T y > eps y^T y``."""
        sy, yy = (s * y).sum(1), (y * y).sum(1)
        keep = where & (sy > eps * yy)
        m, rows, head, k = len(self.positions), self.rows, self.head, keep[:, None]
        self.w[rows, head] = torch.where(k, s, self.w[rows, head])
        self.w[rows, head + m] = torch.where(k, y, self.w[rows, head + m])
        prods = _dots(self.w, torch.stack([s, y], 1))  # (N, 2, 2m), the new pair included
        s_y, y_s, y_y = prods[:, 0, m:], prods[:, 1, :m], prods[:, 1, m:]  # s.y_j, s_i.y, y_i.y
        self.sy[rows, head] = torch.where(k, s_y, self.sy[rows, head])
        self.sy[rows, :, head] = torch.where(k, y_s, self.sy[rows, :, head])
        self.yy[rows, head] = torch.where(k, y_y, self.yy[rows, head])
        self.yy[rows, :, head] = torch.where(k, y_y, self.yy[rows, :, head])
        self.gamma = torch.where(keep, sy / yy, self.gamma)
        self.head = torch.where(keep, (head + 1) % m, head)
        self.count = torch.where(keep, (self.count + 1).clamp(max=m), self.count)

    def forget(self, where: Tensor) -> None:
        self.count = torch.where(where, 0, self.count)
        self.gamma = torch.where(where, 1.0, self.gamma)

    def inverse_hessian_times(self, g: Tensor) -> Tensor:
        """``H g`` ``(N, n)`` for every problem, from the compact form of the L-BFGS matrix (Byrd,
        Nocedal & Schnabel 1994, Theorem 2.2; the two-loop recursion's result in a handful of
        batched products): with the kept pairs oldest first, ``R = triu(S^T Y)``,
        ``D = diag(S^T Y)``, ``r = R^-1 S^T g``:
        ``H g = gamma g - gamma Y r + S R^-T ((D + gamma Y^T Y) r - gamma Y^T g)``."""
        m = len(self.positions)
        order = (self.head[:, None] + self.positions) % m  # slots, oldest first
        valid = self.positions >= m - self.count[:, None]  # the kept ones, in that order
        both = valid[:, :, None] & valid[:, None, :]

        def ordered(a: Tensor) -> Tensor:
            rows_first = a.gather(1, order[:, :, None].expand(-1, -1, m))
            return rows_first.gather(2, order[:, None, :].expand(-1, m, -1))
        sy, yy = torch.where(both, ordered(self.sy), 0.0), torch.where(both, ordered(self.yy), 0.0)
        r_mat = sy.triu() + torch.diag_embed((~valid).to(sy.dtype))  # identity on the empty slots
        prods = _dots(self.w, g[:, None, :]).squeeze(1)  # (N, 2m): S g, Y g
        stg = torch.where(valid, prods[:, :m].gather(1, order), 0.0)
        ytg = torch.where(valid, prods[:, m:].gather(1, order), 0.0)
        gamma = self.gamma[:, None]
        r = torch.linalg.solve_triangular(r_mat, stg[:, :, None], upper=True).squeeze(2)
        t = sy.diagonal(dim1=1, dim2=2) * r + gamma * (yy * r[:, None, :]).sum(2) - gamma * ytg
        u = torch.linalg.solve_triangular(r_mat.transpose(1, 2), t[:, :, None], upper=False).squeeze(2)
        coef = torch.cat([torch.zeros_like(u).scatter_(1, order, u),  # back to slot order
                          torch.zeros_like(r).scatter_(1, order, -gamma * r)], 1)
        return gamma * g + torch.bmm(coef[:, None, :], self.w).squeeze(1)

    def directions(self, where: Tensor, x: Tensor, g: Tensor, lo: Tensor, hi: Tensor, p: Tensor) -> Tensor:
        """``p`` with new directions for the problems ``where``: ``-H g`` on the free variables,
        zero on the fixed ones; the projected steepest descent (memory dropped) where that is not
        a descent direction."""
        fixed = ((x <= lo) & (g > 0)) | ((x >= hi) & (g < 0))
        gf = torch.where(fixed, 0.0, g)
        d = torch.where(fixed, 0.0, -self.inverse_hessian_times(gf))
        steep = where & ~((g * d).sum(1) < 0)
        self.forget(steep)
        return torch.where(where[:, None], torch.where(steep[:, None], -gf, d), p)
