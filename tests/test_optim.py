"""The optimisation tools (pgsl.optim) against ground truth: per-sample gradients against a loop
of autograd, the batched L-BFGS-B against known minimisers, MINPACK's line search and scipy."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from pgsl.attacks.dlg import DLGBudget
from pgsl.attacks.view import GradientLeak
from pgsl.optim.lbfgs import CONVERGED, LINE_SEARCH, NOT_FINITE, STEP_MAX, _LineSearch, _Memory, lbfgsb
from pgsl.optim.per_sample import logit_gradient_basis, parameter_owners, per_sample_grads

ROOT = Path(__file__).resolve().parents[1]
TINY = str(Path(__file__).parent / "tiny.toml")


def _net() -> nn.Module:
    """Every layer kind the per-sample gradients handle: padded, strided and "same" convolutions,
    eval-mode BatchNorm (2d and 1d), a Linear after Flatten, a Linear on a 3-d input."""
    net = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(4),
        nn.Conv2d(4, 3, 3, stride=2, padding=1, dilation=1), nn.Sigmoid(),
        nn.Conv2d(3, 3, 4, padding="same"), nn.Tanh(), nn.Flatten(), nn.Unflatten(1, (3, 16)),
        nn.Linear(16, 5), nn.Flatten(), nn.Linear(15, 6), nn.Tanh(), nn.BatchNorm1d(6), nn.Linear(6, 5),
    ).double()
    for bn in (net[2], net[13]):
        assert isinstance(bn, nn.BatchNorm2d | nn.BatchNorm1d)
        bn.running_mean.normal_()  # type: ignore[operator]
        bn.running_var.uniform_(0.5, 2.0)  # type: ignore[operator]
    return net.eval()


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths")
def test_per_sample_gradients_match_a_loop_of_autograd_to_second_order() -> None:
    net, b = _net(), 5
    params = list(net.parameters())
    owners = parameter_owners([net], params)
    x = torch.rand(b, 2, 8, 8, dtype=torch.float64, requires_grad=True)
    d = torch.randn(b, 5, dtype=torch.float64)
    target = [torch.randn_like(p) for p in params]

    got = per_sample_grads(net, x, lambda z: (z * d).sum(1), owners, create_graph=True)
    # a distance of each sample's gradients to a target, differentiated in the images
    dist = sum(((g - t) ** 2).flatten(1).sum(1) for g, t in zip(got, target, strict=True))
    assert isinstance(dist, torch.Tensor)
    (got_dx,) = torch.autograd.grad(dist.sum(), x)
    for i in range(b):
        xi = x[i:i + 1].detach().requires_grad_(True)
        ref = torch.autograd.grad((net(xi) * d[i:i + 1]).sum(), params, create_graph=True)
        for g, r in zip(got, ref, strict=True):
            torch.testing.assert_close(g[i], r, rtol=0, atol=1e-12)
        ref_dist = sum(((r - t) ** 2).sum() for r, t in zip(ref, target, strict=True))
        (ref_dx,) = torch.autograd.grad(ref_dist, xi)
        torch.testing.assert_close(got_dx[i], ref_dx[0], rtol=0, atol=1e-12)

    # the basis: a loss with logit gradient c has per-sample gradient sum_k c_k G_k
    c = torch.randn(b, 5, dtype=torch.float64)
    _, basis = logit_gradient_basis(net, x.detach(), owners)
    direct = per_sample_grads(net, x.detach(), lambda z: (z * c).sum(1), owners)
    for g_k, g in zip(basis, direct, strict=True):
        torch.testing.assert_close(torch.einsum("bk,bkp->bp", c, g_k), g.flatten(1), rtol=0, atol=1e-12)


def test_per_sample_gradients_refuse_what_they_cannot_compute() -> None:
    net = _net()
    with pytest.raises(ValueError, match="held by none of the given modules"):
        parameter_owners([net], [torch.zeros(3, requires_grad=True)])
    grouped = nn.Conv2d(4, 4, 3, groups=2)
    with pytest.raises(ValueError, match="groups=2"):
        parameter_owners([grouped], [grouped.weight])
    conv1d = nn.Conv1d(2, 2, 3)
    with pytest.raises(ValueError, match="Conv1d.weight"):
        parameter_owners([conv1d], [conv1d.weight])
    owners = parameter_owners([net], list(net.parameters()))
    x = torch.rand(3, 2, 8, 8, dtype=torch.float64)

    def loss(z: torch.Tensor) -> torch.Tensor:
        return z.sum(1)
    net.train()
    with pytest.raises(ValueError, match="batch statistics"):
        per_sample_grads(net, x, loss, owners)
    net.eval()
    twice = nn.Linear(4, 4).double()
    with pytest.raises(ValueError, match="runs twice"):
        per_sample_grads(lambda v: twice(twice(v)), torch.rand(2, 4, dtype=torch.float64), loss,
                         parameter_owners([twice], [twice.weight]))
    unused = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="did not run"):
        per_sample_grads(net, x, loss, parameter_owners([unused], [unused.weight]))
    leak = GradientLeak([], [grouped.weight], lambda v: v, 2)
    with pytest.raises(ValueError, match="names no modules"):
        leak.owners([0])
    with pytest.raises(ValueError, match="unknown solver 'newton'"):
        DLGBudget(solver="newton")


def _quadratics(n_batch: int, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Strictly convex quadratics ``x^T Q x / 2 - b^T x`` on ``[-1, 1]^n`` with a planted minimiser
    ``x*``: a third of its entries at each bound, the rest inside; ``b`` chosen so that the gradient
    at ``x*`` is zero inside and pushes outward at the bounds (KKT)."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n_batch, n, n, generator=g, dtype=torch.float64)
    q = a @ a.transpose(1, 2) / n + 0.1 * torch.eye(n, dtype=torch.float64)
    x_star = torch.rand(n_batch, n, generator=g, dtype=torch.float64) * 1.6 - 0.8
    side = torch.randint(0, 3, (n_batch, n), generator=g)
    x_star = torch.where(side == 1, -1.0, torch.where(side == 2, 1.0, x_star))
    push = torch.rand(n_batch, n, generator=g, dtype=torch.float64) + 0.1
    grad_at_star = torch.where(side == 1, push, torch.where(side == 2, -push, 0.0))
    b = torch.einsum("bij,bj->bi", q, x_star) - grad_at_star
    return q, b, x_star


def test_the_compact_l_bfgs_matrix_equals_the_two_loop_recursion() -> None:
    """``H g`` from the kept pairs' inner products (the solver's) against the two-loop recursion
    written out per problem, through a full ring buffer, a rejected pair and a dropped memory."""
    g = torch.Generator().manual_seed(0)
    n_batch, n, memory = 5, 12, 4
    mem = _Memory(n_batch, n, memory, torch.zeros(1, dtype=torch.float64))
    kept: list[list[tuple[torch.Tensor, torch.Tensor]]] = [[] for _ in range(n_batch)]
    for step in range(11):
        s = torch.randn(n_batch, n, generator=g, dtype=torch.float64)
        noise = torch.randn(n_batch, n, generator=g, dtype=torch.float64)
        y = 2 * s + 0.3 * s.sum(1, keepdim=True) + 0.01 * noise
        if step == 6:
            y[1] = -s[1]  # negative curvature: not kept
        where = torch.rand(n_batch, generator=g) < 0.8
        mem.push(where, s, y, 2.2e-16)
        for b in range(n_batch):
            if where[b] and float(s[b] @ y[b]) > 0:
                kept[b] = (kept[b] + [(s[b], y[b])])[-memory:]
        if step == 8:
            mem.forget(torch.arange(n_batch) == 2)
            kept[2] = []
    v = torch.randn(n_batch, n, generator=g, dtype=torch.float64)
    got = mem.inverse_hessian_times(v)
    assert {len(k) for k in kept} >= {2, 4}
    for b in range(n_batch):
        q, alphas = v[b].clone(), []
        for s_j, y_j in reversed(kept[b]):
            a = (s_j @ q) / (s_j @ y_j)
            q -= a * y_j
            alphas.append((s_j, y_j, a))
        if kept[b]:
            q *= (kept[b][-1][0] @ kept[b][-1][1]) / (kept[b][-1][1] @ kept[b][-1][1])
        for s_j, y_j, a in reversed(alphas):
            q += (a - (y_j @ q) / (s_j @ y_j)) * s_j
        torch.testing.assert_close(got[b], q, rtol=0, atol=1e-13)


def test_batched_lbfgs_finds_the_planted_minimiser_of_box_constrained_quadratics() -> None:
    q, b, x_star = _quadratics(6, 30)

    def fun(x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        return 0.5 * torch.einsum("bi,bij,bj->b", x, q[rows], x) - (b[rows] * x).sum(1)
    res = lbfgsb(fun, torch.zeros_like(b), lower=-1.0, upper=1.0, max_iter=500, ftol=1e-15, gtol=1e-9)
    assert (res.status == CONVERGED).all(), res.status
    assert (res.x - x_star).abs().max() < 1e-6
    # one problem alone: the same iterates (no problem reads another's state)
    alone = lbfgsb(lambda x, rows: fun(x, rows + 2), torch.zeros_like(b[2:3]), lower=-1.0, upper=1.0,
                   max_iter=500, ftol=1e-15, gtol=1e-9)
    assert torch.equal(alone.iterations, res.iterations[2:3])
    torch.testing.assert_close(alone.x, res.x[2:3], rtol=0, atol=1e-12)


def _more_thuente(kind: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Values and slopes of Moré & Thuente's (1994) line-search test functions at steps ``t``:
    kind 0: ``-t / (t^2 + 2)``; 1: ``(t + 0.004)^5 - 2 (t + 0.004)^4``; 2-4: Yanai, Ozawa & Kaneko's
    ``g(b1) sqrt((1 - t)^2 + b2^2) + g(b2) sqrt(t^2 + b1^2)``, ``g(b) = sqrt(1 + b^2) - b``, with
    ``(b1, b2)`` = (1e-3, 1e-3), (1e-2, 1e-3), (1e-3, 1e-2)."""
    t = t.detach().requires_grad_(True)
    b1 = torch.tensor([1.0, 1.0, 1e-3, 1e-2, 1e-3], dtype=t.dtype)[kind]  # 1: unused, and no 0/0
    b2 = torch.tensor([1.0, 1.0, 1e-3, 1e-3, 1e-2], dtype=t.dtype)[kind]
    with torch.enable_grad():
        def g(b: torch.Tensor) -> torch.Tensor:
            return (1 + b ** 2).sqrt() - b
        yanai = g(b1) * ((1 - t) ** 2 + b2 ** 2).sqrt() + g(b2) * (t ** 2 + b1 ** 2).sqrt()
        f = torch.where(kind == 0, -t / (t ** 2 + 2),
                        torch.where(kind == 1, (t + 0.004) ** 5 - 2 * (t + 0.004) ** 4, yanai))
        (d,) = torch.autograd.grad(f.sum(), t)
    return f.detach(), d


@pytest.mark.parametrize("c2", [0.1, 0.9])
def test_the_batched_line_search_takes_the_trial_steps_of_minpack_dcsrch(c2: float) -> None:
    """Every problem's line search on its own 1-D function, all at once, against scipy's port of
    MINPACK-2's dcsrch run on each alone: the same trial steps, to rounding; the same end -- a
    point that meets the strong Wolfe conditions, or, where dcsrch warns (it evaluates its best
    point ``stx`` once more, then stops), that best point, one evaluation sooner."""
    dcsrch = pytest.importorskip("scipy.optimize._dcsrch").DCSRCH
    kind = torch.arange(5).repeat_interleave(4)
    first = torch.tensor([1e-3, 1e-1, 1e1, 1e3], dtype=torch.float64).repeat(5)
    n = len(kind)
    f0, d0 = _more_thuente(kind, torch.zeros(n, dtype=torch.float64))
    search = _LineSearch(n, f0, c1=1e-3, c2=c2, xtol=0.1, max_ls=50)
    everyone = torch.ones(n, dtype=torch.bool)
    search.start(everyone, f0, d0, first, torch.full((n,), STEP_MAX, dtype=torch.float64))
    trials: list[list[float]] = [[] for _ in range(n)]
    running, wolfe = everyone.clone(), torch.zeros(n, dtype=torch.bool)
    accepted = torch.zeros(n, dtype=torch.float64)
    while bool(running.any()):
        for i in running.nonzero().squeeze(1).tolist():
            trials[i].append(float(search.stp[i]))
        stp = search.stp.clone()
        f, d = _more_thuente(kind, stp)
        take_trial, take_best, _ = search.update(running, f, d)
        accepted = torch.where(take_trial, stp, torch.where(take_best, search.stx, accepted))
        wolfe |= take_trial
        running &= ~(take_trial | take_best)
    fa, da = _more_thuente(kind, accepted)
    assert (fa <= f0 + 1e-3 * accepted * d0).all()
    assert (da.abs() <= c2 * d0.abs())[wolfe].all() and int(wolfe.sum()) >= n - 4
    for i in range(n):
        expected: list[float] = []

        def phi(t: float, i: int = i, log: list[float] = expected) -> float:
            log.append(t)
            return float(_more_thuente(kind[i:i + 1], torch.tensor([t], dtype=torch.float64))[0])

        def dphi(t: float, i: int = i) -> float:
            return float(_more_thuente(kind[i:i + 1], torch.tensor([t], dtype=torch.float64))[1])
        stp, _, _, task = dcsrch(phi, dphi, 1e-3, c2, 0.1, 0.0, STEP_MAX)(
            float(first[i]), float(f0[i]), float(d0[i]), maxiter=50)
        if task.startswith(b"CONV"):
            assert bool(wolfe[i]) and stp == expected[-1]
        else:
            assert task.startswith(b"WARN") and not bool(wolfe[i])
            expected, stx = expected[:-1], expected[-1]
            assert float(accepted[i]) == pytest.approx(stx, rel=1e-9)
        assert len(trials[i]) == len(expected), (i, trials[i], expected)
        torch.testing.assert_close(torch.tensor(trials[i], dtype=torch.float64),
                                   torch.tensor(expected, dtype=torch.float64), rtol=1e-9, atol=0)


def test_batched_lbfgs_needs_no_more_evaluations_than_scipy_on_rosenbrock() -> None:
    """The Rosenbrock function from eight starts, its minimiser inside the box: every problem
    converges, and the batch needs, on average, no more evaluations than scipy's L-BFGS-B."""
    from scipy.optimize import minimize, rosen, rosen_der

    x0 = torch.rand(8, 10, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2 - 1

    def fun(x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        return (100 * (x[:, 1:] - x[:, :-1] ** 2) ** 2 + (1 - x[:, :-1]) ** 2).sum(1)
    res = lbfgsb(fun, x0, lower=-2.0, upper=2.0, max_iter=1000, ftol=1e-15, gtol=1e-8)
    assert (res.status == CONVERGED).all() and (res.x - 1).abs().max() < 1e-5
    scipy_evals = [minimize(rosen, x.numpy(), jac=rosen_der, method="L-BFGS-B", bounds=[(-2.0, 2.0)] * 10,
                            options={"maxiter": 1000, "ftol": 1e-15, "gtol": 1e-8}).nfev for x in x0]
    assert float(res.evaluations.double().mean()) <= sum(scipy_evals) / len(scipy_evals)


def test_batched_lbfgs_rejects_non_finite_points_per_problem() -> None:
    """A value of inf, NaN or a FloatingPointError at a trial point rejects that problem's step
    only; the others end where they end without it."""
    q, b, x_star = _quadratics(4, 10, seed=1)
    j = [int(x_star[i].argmax()) for i in range(4)]  # a coordinate each minimiser has at 1

    def fun(x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        at = x.gather(1, torch.tensor(j)[rows, None]).squeeze(1)
        if bool(((rows == 1) & (at > 0.5)).any()):
            raise FloatingPointError("problem 1 left its domain")
        f = 0.5 * torch.einsum("bi,bij,bj->b", x, q[rows], x) - (b[rows] * x).sum(1)
        f = torch.where((rows == 0) & (at > 0.5), float("inf"), f)
        return torch.where((rows == 3) & (at > 0.5), float("nan"), f)

    assert all(float(x_star[i, j[i]]) == 1.0 for i in range(4))  # every wall is in the way
    x0 = torch.zeros_like(b)
    res = lbfgsb(fun, x0, lower=-1.0, upper=1.0, max_iter=300, ftol=0.0, gtol=1e-10)
    assert all(float(res.x[i, j[i]]) <= 0.5 for i in (0, 1, 3))
    assert torch.isfinite(res.f).all() and (res.f < fun(x0, torch.arange(4))).all()
    assert (res.x[2] - x_star[2]).abs().max() < 1e-6  # the well-behaved problem is untouched
    alone = lbfgsb(lambda x, rows: fun(x, rows + 2), x0[2:3], lower=-1.0, upper=1.0, max_iter=300,
                   ftol=0.0, gtol=1e-10)
    torch.testing.assert_close(alone.x, res.x[2:3], rtol=0, atol=1e-12)
    start_inf = lbfgsb(lambda x, rows: torch.full_like(x[:, 0], float("inf")), x0[:1], lower=-1.0,
                       upper=1.0, max_iter=5)
    assert int(start_inf.status) == NOT_FINITE and int(start_inf.evaluations) == 1
    # a non-smooth objective stops by a failed line search, at its lowest accepted point
    jump = lbfgsb(lambda x, rows: (x - 0.3).abs().sum(1) + (x > 0.31).double().sum(1),
                  torch.zeros(1, 3, dtype=torch.float64), lower=-1.0, upper=1.0, max_iter=100)
    assert int(jump.status) in (CONVERGED, LINE_SEARCH) and float(jump.f) < 0.9 - 1e-3


