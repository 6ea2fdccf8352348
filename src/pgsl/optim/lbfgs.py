"""Box-constrained L-BFGS over a batch of independent problems, in torch.

:func:`lbfgsb` minimises ``N`` objectives ``f_i(x_i)``, ``x_i`` in the box ``[lower_i, upper_i]``
of ``R^n``, all at once: every evaluation is one batched call, every piece of state lives on the
input's device, and a problem never reads another's. It stands in for scipy's L-BFGS-B (Byrd, Lu,
Nocedal & Zhu 1995) run one problem at a time, with the same stopping rules (``maxiter``,
``maxfun``, ``ftol``, ``gtol``, a failed line search) and the same line search, but a simpler,
projected method (Bertsekas 1982; Kim, Sra & Dhillon 2010) in place of the generalized Cauchy
point:

- **Direction.** Per problem, ``-H g`` with ``H`` the L-BFGS matrix of its own ``memory`` latest
  pairs ``(s, y)`` (the two-loop recursion's result, Nocedal & Wright Alg. 7.4, computed from the
  compact form of Byrd, Nocedal & Schnabel 1994 with batched products), applied to the gradient
  on the free variables and zero on the fixed ones (a variable at a bound whose gradient pushes
  it outward) and on those it would push through their bound at once. Where that is not a descent
  direction: the projected steepest descent, and the memory is dropped.
- **Step.** A line search for the strong Wolfe conditions along the projected path
  ``phi(t) = f(P(x + t p))``: ``phi(t) <= phi(0) + c1 t phi'(0)`` and
  ``|phi'(t)| <= c2 |phi'(0)|``, with ``phi'(t) = <g(P(x + t p)), p>`` over the variables not yet
  at their bound. It is Moré & Thuente's (1994) bracketing search with safeguarded cubic and
  quadratic steps -- MINPACK-2's ``dcsrch``, the search scipy's L-BFGS-B runs, trial for trial
  (tests) -- with scipy's constants (``c1 = 1e-3``, ``c2 = 0.9``, ``xtol = 0.1``) and first
  trial ``t = 1``: in the first iteration the projected gradient step ``P(x - g)``, the step
  capped at 1 (scipy's); later the L-BFGS step, capped at the path's last breakpoint. Where
  ``dcsrch`` would stop with a warning (its bracket shrunk to ``xtol`` or stalled by rounding: it
  evaluates its best point ``stx`` once more and stops there), the search ends at ``stx`` at once;
  after ``max_ls`` trial points it ends at ``stx`` too (scipy: a failed search). ``stx`` meets the
  sufficient-decrease condition, so ``f`` never increases. A non-finite value (or
  ``FloatingPointError``) at a trial point rejects it, as scipy's ``inf``: it closes the bracket,
  and the next trial retreats to a tenth of the way from ``stx``. A search that ends without any
  point below ``f(x)`` fails: with memory, the memory is dropped and the iteration retried;
  without, the problem stops (scipy: ABNORMAL), at its last accepted point.
- **Batching.** The problems do not wait for each other: every call of the objective evaluates
  one trial point of each running problem, at its own step -- the first trial of a new iteration
  for one, a later trial of its line search for another -- so a batch costs as many calls as its
  most expensive problem needs evaluations. Stopped problems are no longer evaluated.
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

STEP_MAX = 1e10  # the longest step of a line search (scipy's)

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
           gtol: float = 1e-5, max_ls: int = 20, c1: float = 1e-3, c2: float = 0.9,
           xtol: float = 0.1) -> LBFGSBResult:
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
        c1, c2: the strong Wolfe conditions' constants (sufficient decrease, curvature).
        xtol: the line search ends when its bracket is this narrow, relative to its right end.

    Returns:
        :class:`LBFGSBResult`, every tensor on ``x0``'s device.

    The problems do not wait for each other: every call of ``fun`` evaluates one trial point of
    each running problem -- the first of a new iteration for one, a later trial of its line search
    for another -- so a batch costs as many calls as its most expensive problem needs evaluations.
    """
    if x0.ndim != 2:
        raise ValueError(f"lbfgsb takes a batch of flat points (N, n), got {tuple(x0.shape)}")
    if max_iter < 1 or memory < 1 or max_ls < 1 or (max_eval is not None and max_eval < 1):
        raise ValueError("max_iter, memory, max_ls and max_eval must be >= 1")
    if not 0 < c1 < c2 < 1 or not xtol >= 0:
        raise ValueError("the line search needs 0 < c1 < c2 < 1 and xtol >= 0")
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
    iters = torch.zeros_like(evals)
    status = torch.where(torch.isfinite(f), RUNNING, NOT_FINITE)
    p = torch.zeros_like(x)
    search = _LineSearch(n_batch, x, c1, c2, xtol, max_ls)
    g_best = g.clone()  # the gradient at each search's best point (dcsrch's stx)
    fresh = status == RUNNING  # problems at a new point, in need of a direction
    eps = torch.finfo(dt).eps
    while True:
        if bool(fresh.any()):
            converged = fresh & ((torch.clamp(x - g, lo, hi) - x).abs().amax(1) <= gtol)
            status = torch.where(converged, CONVERGED, status)
            start = fresh & ~converged
            p = mem.directions(start, x, g, lo, hi, p)
            # the first iteration's step is capped at 1 (scipy's), later ones at the last breakpoint
            cap = torch.where(iters == 0, 1.0, _last_breakpoint(x, p, lo, hi))
            search.start(start, f, (g * p).sum(1), cap.clamp(max=1.0), cap)
            g_best = torch.where(start[:, None], g, g_best)
        idx = (status == RUNNING).nonzero().squeeze(1)
        if len(idx) == 0:
            break
        xi, pi, ti = x[idx], p[idx], search.stp[idx, None]
        unclipped = xi + ti * pi
        xt = torch.clamp(unclipped, lo[idx], hi[idx])
        ft, gt = _evaluate(fun, xt, idx)
        evals[idx] += 1
        inside = (unclipped > lo[idx]) & (unclipped < hi[idx])  # still moving along the path
        slope = torch.where(inside, gt * pi, 0.0).sum(1)  # phi'(t)

        tried = torch.zeros_like(fresh).index_put((idx,), torch.ones_like(idx, dtype=torch.bool))
        x_t, g_t = x.index_put((idx,), xt), g.index_put((idx,), gt)
        take_trial, take_best, moved = search.update(tried, f.index_put((idx,), ft),
                                                     torch.zeros_like(f).index_put((idx,), slope))
        g_best = torch.where(moved[:, None], g_t, g_best)
        # the search's best point, where it ended without a Wolfe point; none: it failed
        best_ok = take_best & (search.stx > 0)
        x_b = torch.clamp(x + search.stx[:, None] * p, lo, hi)
        ok = take_trial | best_ok
        x_n = torch.where(take_trial[:, None], x_t, x_b)
        f_n = torch.where(take_trial, f.index_put((idx,), ft), search.fx)
        g_n = torch.where(take_trial[:, None], g_t, g_best)

        mem.push(ok, x_n - x, g_n - g, eps)
        decrease = (f - f_n) / torch.maximum(torch.maximum(f.abs(), f_n.abs()), torch.ones_like(f))
        x, f, g = torch.where(ok[:, None], x_n, x), torch.where(ok, f_n, f), torch.where(ok[:, None], g_n, g)
        iters += ok.long()
        status = torch.where(ok & (decrease <= ftol), CONVERGED, status)
        status = torch.where(ok & (status == RUNNING) & (iters >= max_iter), ITERATIONS, status)
        if max_eval is not None:
            status = torch.where(ok & (status == RUNNING) & (evals > max_eval), EVALUATIONS, status)

        # a failed line search: retried from the steepest descent, or the end without memory
        failed = (status == RUNNING) & take_best & ~best_ok
        status = torch.where(failed & (mem.count == 0), LINE_SEARCH, status)
        mem.forget(failed)
        fresh = (ok | failed) & (status == RUNNING)
    return LBFGSBResult(x, f, iters, evals, status)


def _last_breakpoint(x: Tensor, p: Tensor, lo: Tensor, hi: Tensor) -> Tensor:
    """``(N,)``: the step beyond which ``P(x + t p)`` no longer moves (every variable that ``p``
    moves is at its bound), at most :data:`STEP_MAX`."""
    to_bound = torch.where(p > 0, (hi - x) / p, torch.where(p < 0, (lo - x) / p, 0.0))
    return to_bound.amax(1).clamp(max=STEP_MAX)


class _LineSearch:
    """Every problem's Moré-Thuente line search (MINPACK-2's ``dcsrch``) as ``(N,)`` tensors:
    ``stp`` the next trial; ``[stx, sty]`` the bracket (``stx`` the best point, ``fx``, ``gx`` its
    value and slope); ``stmin``, ``stmax`` where the next trial may lie; ``cap`` the longest step."""

    def __init__(self, n_batch: int, like: Tensor, c1: float, c2: float, xtol: float, max_ls: int) -> None:
        z = like.new_zeros(n_batch)
        self.stp, self.cap, self.finit, self.ginit = z.clone(), z.clone(), z.clone(), z.clone()
        self.stx, self.fx, self.gx, self.sty, self.fy, self.gy = (z.clone() for _ in range(6))
        self.stmin, self.stmax, self.width, self.width1 = z.clone(), z.clone(), z.clone(), z.clone()
        self.bracketed = torch.zeros(n_batch, dtype=torch.bool, device=like.device)
        self.stage2 = self.bracketed.clone()
        self.trials = torch.zeros(n_batch, dtype=torch.long, device=like.device)
        self.c1, self.c2, self.xtol, self.max_ls = c1, c2, xtol, max_ls

    def start(self, where: Tensor, f: Tensor, slope: Tensor, stp: Tensor, cap: Tensor) -> None:
        """New searches for the problems ``where`` from value ``f`` and slope ``slope < 0``, first
        trial ``stp`` in ``(0, cap]``."""
        def new(value: Tensor | float, old: Tensor) -> Tensor:
            return torch.where(where, value, old)
        self.stp, self.cap = new(stp, self.stp), new(cap, self.cap)
        self.finit, self.ginit = new(f, self.finit), new(slope, self.ginit)
        self.stx, self.fx, self.gx = new(0.0, self.stx), new(f, self.fx), new(slope, self.gx)
        self.sty, self.fy, self.gy = new(0.0, self.sty), new(f, self.fy), new(slope, self.gy)
        self.stmin, self.stmax = new(0.0, self.stmin), new(5 * stp, self.stmax)
        self.width, self.width1 = new(cap, self.width), new(2 * cap, self.width1)
        self.bracketed, self.stage2 = new(False, self.bracketed), new(False, self.stage2)
        self.trials = new(0, self.trials)

    def update(self, tried: Tensor, f: Tensor, slope: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Take the value ``f`` and slope ``phi'`` at ``stp`` for the problems ``tried``; set the
        next trial. Returns, per problem: the search ends at this trial (a Wolfe point, or the cap
        with sufficient decrease); it ends at its best point ``stx`` (the bracket is too narrow, or
        ``max_ls`` trials); ``stx`` moved to this trial."""
        stp, stx, sty, fx, gx = self.stp, self.stx, self.sty, self.fx, self.gx
        gtest = self.c1 * self.ginit
        ftest = self.finit + stp * gtest
        finite = torch.isfinite(f)
        sufficient = f <= ftest
        wolfe = sufficient & (slope.abs() <= -self.c2 * self.ginit)
        at_cap = (stp >= self.cap) & sufficient & (slope <= gtest)
        take_trial = tried & (wolfe | at_cap)
        stage2 = self.stage2 | (sufficient & (slope >= 0))

        # dcstep on the auxiliary psi(t) = f(t) - t gtest until a point with psi <= 0 and
        # phi' >= 0 is found (stage 1), where f is not below psi's current best
        aux = ~stage2 & (f <= fx) & ~sufficient
        shift = torch.where(aux, gtest, 0.0)
        n_stx, n_fx, n_gx, n_sty, n_fy, n_gy, n_stp, n_br = _dcstep(
            stx, fx - stx * shift, gx - shift, sty, self.fy - sty * shift, self.gy - shift,
            stp, f - stp * shift, slope - shift, self.bracketed, self.stmin, self.stmax)
        n_fx, n_gx, n_fy, n_gy = n_fx + n_stx * shift, n_gx + shift, n_fy + n_sty * shift, n_gy + shift
        # a non-finite trial closes the bracket; the next trial retreats to a tenth of the way
        n_stx, n_fx, n_gx = (torch.where(finite, a, b) for a, b in ((n_stx, stx), (n_fx, fx), (n_gx, gx)))
        n_sty = torch.where(finite, n_sty, stp)
        n_fy = torch.where(finite, n_fy, float("inf"))
        n_gy = torch.where(finite, n_gy, 0.0)
        n_br = n_br | ~finite
        n_stp = torch.where(finite, n_stp, stx + 0.1 * (stp - stx))
        # an interpolation through an infinite end: bisect
        n_stp = torch.where(torch.isfinite(n_stp), n_stp,
                            torch.where(n_br, 0.5 * (n_stx + n_sty), stp + 4 * (stp - stx)))
        # bisect where the bracket did not shrink enough in two trials
        span = (n_sty - n_stx).abs()
        n_stp = torch.where(n_br & (span >= 0.66 * self.width1), n_stx + 0.5 * (n_sty - n_stx), n_stp)
        n_width1 = torch.where(n_br, self.width, self.width1)
        n_width = torch.where(n_br, span, self.width)
        # the range of the next extrapolation: 1.1 to 4 times the distance beyond the best point
        n_stmin = torch.where(n_br, torch.minimum(n_stx, n_sty), n_stp + 1.1 * (n_stp - n_stx))
        n_stmax = torch.where(n_br, torch.maximum(n_stx, n_sty), n_stp + 4.0 * (n_stp - n_stx))
        n_stp = torch.minimum(n_stp.clamp(min=0.0), self.cap)
        # dcsrch would evaluate stx again and stop with a warning: the search ends at stx now
        stalled = n_br & ((n_stp <= n_stmin) | (n_stp >= n_stmax)
                          | (n_stmax - n_stmin <= self.xtol * n_stmax))
        trials = self.trials + tried.long()
        take_best = tried & ~take_trial & (stalled | (trials >= self.max_ls))
        moved = tried & ~take_trial & (n_stx != stx)

        def upd(new: Tensor, old: Tensor) -> Tensor:
            return torch.where(tried, new, old)
        self.stp, self.stx, self.fx, self.gx = upd(n_stp, stp), upd(n_stx, stx), upd(n_fx, fx), upd(n_gx, gx)
        self.sty, self.fy, self.gy = upd(n_sty, sty), upd(n_fy, self.fy), upd(n_gy, self.gy)
        self.stmin, self.stmax = upd(n_stmin, self.stmin), upd(n_stmax, self.stmax)
        self.width, self.width1 = upd(n_width, self.width), upd(n_width1, self.width1)
        self.bracketed, self.stage2 = upd(n_br, self.bracketed), upd(stage2, self.stage2)
        self.trials = trials
        return take_trial, take_best, moved


def _dcstep(stx: Tensor, fx: Tensor, dx: Tensor, sty: Tensor, fy: Tensor, dy: Tensor, stp: Tensor,
            fp: Tensor, dp: Tensor, bracketed: Tensor, stpmin: Tensor, stpmax: Tensor) -> tuple[Tensor, ...]:
    """MINPACK-2's ``dcstep``, elementwise: the safeguarded step from the bracket end ``stx``
    (value ``fx``, slope ``dx``), the other end ``sty`` and the trial ``stp``, and the updated
    bracket. Returns ``stx, fx, dx, sty, fy, dy, next step, bracketed``. Moré & Thuente's four
    cases: (1) a higher value: the cubic step, or halfway to the quadratic one if that is closer
    to ``stx``; (2) a lower value and a slope of the other sign: the cubic or the secant step,
    whichever is farther; (3) a lower value, the same sign, a smaller slope: the cubic step if it
    lies beyond ``stp`` (else the end of the range), the closer of it and the secant step,
    safeguarded; (4) otherwise the cubic step through ``stp`` and ``sty`` (bracketed), or the end
    of the range."""
    sgnd = dp * torch.sign(dx)
    higher = fp > fx
    turned = ~higher & (sgnd < 0)
    flatter = ~higher & ~turned & (dp.abs() < dx.abs())

    def cubic_gamma(theta: Tensor, da: Tensor, db: Tensor) -> Tensor:
        s = torch.maximum(torch.maximum(theta.abs(), da.abs()), db.abs())
        return s * ((theta / s).square() - (da / s) * (db / s)).clamp(min=0.0).sqrt()

    theta = 3 * (fx - fp) / (stp - stx) + dx + dp
    gamma = cubic_gamma(theta, dx, dp)
    secant = stp + (dp / (dp - dx)) * (stx - stp)
    # case 1
    g1 = torch.where(stp < stx, -gamma, gamma)
    cubic1 = stx + ((g1 - dx) + theta) / (((g1 - dx) + g1) + dp) * (stp - stx)
    quad1 = stx + ((dx / ((fx - fp) / (stp - stx) + dx)) / 2) * (stp - stx)
    step1 = torch.where((cubic1 - stx).abs() < (quad1 - stx).abs(), cubic1, cubic1 + (quad1 - cubic1) / 2)
    # cases 2 and 3 share the cubic through stp
    g23 = torch.where(stp > stx, -gamma, gamma)
    cubic2 = stp + ((g23 - dp) + theta) / (((g23 - dp) + g23) + dx) * (stx - stp)
    step2 = torch.where((cubic2 - stp).abs() > (secant - stp).abs(), cubic2, secant)
    r = ((g23 - dp) + theta) / ((g23 + (dx - dp)) + g23)
    cubic3 = torch.where((r < 0) & (g23 != 0), stp + r * (stx - stp), torch.where(stp > stx, stpmax, stpmin))
    closer = torch.where((cubic3 - stp).abs() < (secant - stp).abs(), cubic3, secant)
    farther = torch.where((cubic3 - stp).abs() > (secant - stp).abs(), cubic3, secant)
    limit = stp + 0.66 * (sty - stp)
    step3 = torch.where(bracketed,
                        torch.where(stp > stx, torch.minimum(limit, closer), torch.maximum(limit, closer)),
                        torch.minimum(torch.maximum(farther, stpmin), stpmax))
    # case 4
    theta4 = 3 * (fp - fy) / (sty - stp) + dy + dp
    g4 = cubic_gamma(theta4, dy, dp)
    g4 = torch.where(stp > sty, -g4, g4)
    cubic4 = stp + ((g4 - dp) + theta4) / (((g4 - dp) + g4) + dy) * (sty - stp)
    step4 = torch.where(bracketed, cubic4, torch.where(stp > stx, stpmax, stpmin))
    step = torch.where(higher, step1, torch.where(turned, step2, torch.where(flatter, step3, step4)))

    # the new bracket: a higher value becomes its far end; else the trial its best end
    to_y = higher | turned
    n_sty = torch.where(higher, stp, torch.where(turned, stx, sty))
    n_fy = torch.where(higher, fp, torch.where(turned, fx, fy))
    n_dy = torch.where(higher, dp, torch.where(turned, dx, dy))
    n_stx, n_fx = torch.where(higher, stx, stp), torch.where(higher, fx, fp)
    n_dx = torch.where(higher, dx, dp)
    return n_stx, n_fx, n_dx, n_sty, n_fy, n_dy, step, bracketed | to_y


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
        zero on the fixed ones and on those it pushes through their bound at once (the projected
        path does not move them); the projected steepest descent (memory dropped) where that is
        not a descent direction."""
        fixed = ((x <= lo) & (g > 0)) | ((x >= hi) & (g < 0))
        gf = torch.where(fixed, 0.0, g)
        d = torch.where(fixed, 0.0, -self.inverse_hessian_times(gf))
        d = torch.where(((x <= lo) & (d < 0)) | ((x >= hi) & (d > 0)), 0.0, d)
        steep = where & ~((g * d).sum(1) < 0)
        self.forget(steep)
        return torch.where(where[:, None], torch.where(steep[:, None], -gf, d), p)
