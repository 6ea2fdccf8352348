"""ADMM for APG's robust-PCA problem (``robust_pca(..., solver="admm")``): the same minimiser, faster."""

from __future__ import annotations

import pytest
import torch

from pgsl.recovery.rpca import robust_pca
from tests.test_rpca import _adversarial_inputs, _large_adversarial_inputs, planted


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).double().norm() / max(float(b.double().norm()), 1e-30))


def test_recovers_planted_low_rank_plus_sparse(device: torch.device) -> None:
    low, sparse = planted(batch=6, n=40, rank=2, density=0.05, device=device)
    result = robust_pca((low + sparse).double(), mu=1e-5, max_iter=300, tol=1e-9, solver="admm")
    assert result.converged.all()
    assert _rel(result.low_rank, low) < 1e-5 and _rel(result.sparse, sparse) < 1e-5
    s = torch.linalg.svdvals(result.low_rank)
    assert (s[:, 2:] < 1e-6 * s[:, :1]).all()  # exactly the planted rank: A comes out of an SVT


@pytest.mark.parametrize("name", ["relu maps", "rank-deficient", "tall", "wide", "huge scale",
                                  "tiny scale", "repeated singular values"])
@pytest.mark.slow
def test_reaches_the_converged_apg_minimiser(name: str) -> None:
    x = _adversarial_inputs()[name].double()
    scale = float(torch.linalg.matrix_norm(x, ord=2).mean()) or 1.0
    mu = 0.05 * scale
    # APG to convergence without continuation's shortcut: the minimiser itself
    apg = robust_pca(x, mu=mu, max_iter=20_000, tol=1e-12, svt="svd")
    admm = robust_pca(x, mu=mu, max_iter=2_000, tol=1e-10, svt="svd", solver="admm")
    assert apg.converged.all() and admm.converged.all()
    # Lin et al.'s test is absolute below unit scale (max(scale, 1)); so is ADMM's (max(||D||, 1))
    bound = max(1e-6, 1e-7 / scale)
    assert _rel(admm.low_rank, apg.low_rank) < bound, name
    assert _rel(admm.sparse, apg.sparse) < max(bound, 1e-6 * scale / max(float(apg.sparse.norm()), 1e-30))


def test_needs_fewer_iterations_than_apg_for_the_same_accuracy() -> None:
    low, sparse = planted(batch=8, n=40, rank=2, density=0.05, device=torch.device("cpu"))
    d = (low + sparse).double()
    mu = 1e-5  # the minimiser lies ~3e-7 from the planted truth
    apg = robust_pca(d, mu=mu, max_iter=3_000, tol=1e-7, svt="svd")
    admm = robust_pca(d, mu=mu, max_iter=3_000, tol=1e-7, svt="svd", solver="admm")
    err_apg = (apg.low_rank - low).flatten(1).norm(dim=1) / low.flatten(1).norm(dim=1)
    err_admm = (admm.low_rank - low).flatten(1).norm(dim=1) / low.flatten(1).norm(dim=1)
    # measured: APG 148 iterations, worst error 1.4e-5; ADMM 38, worst 3.2e-7
    assert float(err_admm.max()) < 1e-6 and float(err_admm.max()) <= float(err_apg.max())
    assert float(admm.iterations.float().mean()) * 3 < float(apg.iterations.float().mean())


@pytest.mark.parametrize("name", ["low rank + spikes", "relu maps", "mixed ranks", "all zero",
                                  "repeated singular values", "tall", "huge scale"])
def test_subspace_svt_gives_the_exact_svds_answer(name: str) -> None:
    x = _large_adversarial_inputs()[name].double()
    scale = float(torch.linalg.matrix_norm(x, ord=2).mean()) or 1.0
    mu = 0.05 * scale
    exact = robust_pca(x, mu=mu, max_iter=1_000, tol=1e-9, svt="svd", solver="admm")
    fast = robust_pca(x, mu=mu, max_iter=1_000, tol=1e-9, svt="subspace", solver="admm")
    assert torch.equal(fast.converged, exact.converged) and fast.converged.all(), name
    assert _rel(fast.low_rank, exact.low_rank) < max(1e-6, 1e-8 / scale), name


def test_batch_equals_one_by_one_while_the_working_set_shrinks() -> None:
    d = torch.cat([torch.zeros(6, 9, 9, dtype=torch.float64), torch.randn(3, 9, 9, dtype=torch.float64),
                   torch.relu(torch.randn(3, 9, 9, dtype=torch.float64))])
    batched = robust_pca(d, mu=0.3, max_iter=500, tol=1e-9, solver="admm")
    assert int(batched.iterations.min()) < int(batched.iterations.max())
    for i in range(len(d)):
        one = robust_pca(d[i], mu=0.3, max_iter=500, tol=1e-9, solver="admm")
        assert torch.equal(batched.iterations[i], one.iterations)
        torch.testing.assert_close(batched.low_rank[i], one.low_rank, atol=1e-12, rtol=0)
        torch.testing.assert_close(batched.sparse[i], one.sparse, atol=1e-12, rtol=0)


def test_zero_matrix_stops_at_once_and_stays_zero() -> None:
    r = robust_pca(torch.zeros(3, 6, 6), mu=0.55, solver="admm")
    assert torch.equal(r.low_rank, torch.zeros(3, 6, 6)) and torch.equal(r.sparse, torch.zeros(3, 6, 6))
    assert r.converged.all() and r.iterations.tolist() == [1, 1, 1]


def test_scale_equivariant() -> None:
    x = _adversarial_inputs()["relu maps"].double()[:8]
    base = robust_pca(x, mu=0.3, max_iter=1_000, tol=1e-10, solver="admm")
    for c in (4.0, 1e4):  # above unit scale the stopping test is relative: the same iterates, scaled
        scaled = robust_pca(c * x, mu=0.3 * c, max_iter=1_000, tol=1e-10, solver="admm")
        assert torch.equal(scaled.iterations, base.iterations), c
        assert _rel(scaled.low_rank / c, base.low_rank) < 1e-9, c
    # below it the test is absolute (max(||D||_F, 1)): a looser answer, still the minimiser's
    tiny = robust_pca(1e-4 * x, mu=0.3e-4, max_iter=1_000, tol=1e-10, solver="admm")
    assert tiny.converged.all() and _rel(tiny.low_rank / 1e-4, base.low_rank) < 1e-4


def test_float32_and_leading_dims() -> None:
    x = torch.relu(torch.randn(2, 3, 14, 14))
    r32 = robust_pca(x, mu=0.55, max_iter=1_000, tol=1e-6, solver="admm")
    r64 = robust_pca(x.double(), mu=0.55, max_iter=1_000, tol=1e-10, solver="admm")
    assert r32.low_rank.dtype == torch.float32 and r32.iterations.shape == (2, 3)
    assert r32.converged.all() and _rel(r32.low_rank, r64.low_rank) < 1e-4


def test_bad_input_and_parameters() -> None:
    with pytest.raises(ValueError, match="NaN or Inf"):
        robust_pca(torch.tensor([[float("nan"), 1.0], [0.0, 1.0]]), mu=0.5, solver="admm")
    with pytest.raises(ValueError, match="unknown solver"):
        robust_pca(torch.ones(3, 3), mu=0.5, solver="alm")
    with pytest.raises(ValueError, match="mu"):
        robust_pca(torch.ones(3, 3), mu=-1.0, solver="admm")


def test_on_device_matches_the_cpu(device: torch.device) -> None:
    x = _large_adversarial_inputs()["low rank + spikes"].double()
    mu = 0.05 * float(torch.linalg.matrix_norm(x, ord=2).mean())
    cpu = robust_pca(x, mu=mu, max_iter=1_000, tol=1e-9, svt="svd", solver="admm")
    dev = robust_pca(x.to(device), mu=mu, max_iter=1_000, tol=1e-9, svt="auto", solver="admm")
    assert dev.converged.all() and _rel(dev.low_rank.cpu(), cpu.low_rank) < 1e-5
