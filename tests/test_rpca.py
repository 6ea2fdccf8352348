"""The batched APG robust-PCA solver: ground truth, a reference, and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pgsl.recovery.reference import apg_rpca
from pgsl.recovery.rpca import ProxRecovery, robust_pca


def planted(batch: int, n: int, rank: int, density: float, device: torch.device):
    g = torch.Generator().manual_seed(1)
    low = torch.randn(batch, n, rank, generator=g) @ torch.randn(batch, rank, n, generator=g)
    mask = torch.rand(batch, n, n, generator=g) < density
    sparse = torch.where(mask, torch.rand(batch, n, n, generator=g) * 10 - 5, torch.zeros(()))
    return low.to(device), sparse.to(device)


def test_recovers_planted_low_rank_plus_sparse(device: torch.device) -> None:
    low, sparse = planted(batch=6, n=40, rank=2, density=0.05, device=device)
    result = robust_pca(low + sparse, mu=1e-3, max_iter=600, tol=1e-7)
    err_low = (result.low_rank - low).norm() / low.norm()
    err_sparse = (result.sparse - sparse).norm() / sparse.norm()
    assert err_low < 1e-3, err_low
    assert err_sparse < 1e-3, err_sparse
    # the low-rank part really has the planted rank
    s = torch.linalg.svdvals(result.low_rank)
    assert (s[:, 2:] < 1e-2 * s[:, :1]).all()


@pytest.mark.parametrize("eta", [0.9, 1.0])
@pytest.mark.parametrize("shape", [(14, 14), (9, 17)])
def test_agrees_with_per_matrix_numpy_reference(shape: tuple[int, int], eta: float) -> None:
    rng = np.random.default_rng(3)
    d = np.maximum(rng.normal(size=(5, *shape)), 0) + rng.normal(size=(5, *shape)) * 0.1
    got = robust_pca(torch.from_numpy(d), mu=0.55, max_iter=200, tol=1e-8, eta=eta)
    for i in range(d.shape[0]):
        a, e, iters = apg_rpca(d[i], mu=0.55, max_iter=200, tol=1e-8, eta=eta)
        np.testing.assert_allclose(got.low_rank[i].numpy(), a, atol=1e-8)
        np.testing.assert_allclose(got.sparse[i].numpy(), e, atol=1e-8)
        assert int(got.iterations[i]) == iters


def test_float32_close_to_float64_solution() -> None:
    d = torch.relu(torch.randn(32, 14, 14))
    r32 = robust_pca(d, mu=0.55, max_iter=2000, tol=1e-6)
    r64 = robust_pca(d.double(), mu=0.55, max_iter=3000, tol=1e-10)
    assert r32.low_rank.dtype == torch.float32 and r32.converged.all() and r64.converged.all()
    # the relative error follows the tolerance (measured: 8e-5 at tol 1e-6)
    assert (r32.low_rank.double() - r64.low_rank).norm() / r64.low_rank.norm() < 1e-3


def test_batch_equals_one_by_one_and_any_leading_dims() -> None:
    d = torch.randn(2, 3, 8, 10, dtype=torch.float64)
    batched = robust_pca(d, mu=0.3, max_iter=50)
    assert batched.low_rank.shape == d.shape and batched.iterations.shape == (2, 3)
    single = robust_pca(d[1, 2], mu=0.3, max_iter=50)
    assert torch.allclose(batched.low_rank[1, 2], single.low_rank, atol=1e-12)


def test_larger_mu_gives_lower_rank() -> None:
    d = torch.randn(16, 14, 14, dtype=torch.float64)
    ranks = [
        (torch.linalg.svdvals(robust_pca(d, mu=mu, max_iter=300).low_rank) > 1e-6).sum()
        for mu in (0.05, 0.55, 2.0)
    ]
    assert ranks[0] > ranks[1] > ranks[2]


def test_zero_matrix_stays_zero() -> None:
    r = robust_pca(torch.zeros(3, 6, 6), mu=0.55)
    assert torch.equal(r.low_rank, torch.zeros(3, 6, 6)) and r.converged.all()


@pytest.mark.parametrize(
    "bad, message",
    [
        (torch.tensor([[float("nan"), 1.0], [0.0, 1.0]]), "NaN or Inf"),
        (torch.tensor([[float("inf"), 1.0], [0.0, 1.0]]), "NaN or Inf"),
        (torch.ones(5), "(..., m, n)"),
        (torch.ones(3, 3, dtype=torch.int64), "floating-point"),
    ],
)
def test_bad_input_raises_clear_error(bad: torch.Tensor, message: str) -> None:
    with pytest.raises((ValueError, TypeError), match=message.replace("(", r"\(").replace(")", r"\)")
                       .replace(".", r"\.")):
        robust_pca(bad, mu=0.55)


def test_bad_parameters() -> None:
    with pytest.raises(ValueError, match="mu"):
        robust_pca(torch.ones(3, 3), mu=0.0)
    with pytest.raises(ValueError, match="eta"):
        robust_pca(torch.ones(3, 3), mu=0.5, eta=1.5)


def test_module_has_no_gradient_path() -> None:
    x = torch.randn(2, 4, 7, 7, requires_grad=True)
    out = ProxRecovery(mu=0.55, max_iter=5)(x)
    assert out.shape == x.shape and not out.requires_grad


def _adversarial_inputs() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(4)
    q, _ = torch.linalg.qr(torch.randn(14, 14, generator=g, dtype=torch.float64))
    return {
        "relu maps": torch.relu(torch.randn(64, 14, 14, generator=g)),
        "rank-deficient": (torch.randn(32, 14, 2, generator=g) @ torch.randn(32, 2, 14, generator=g)),
        "repeated singular values": (3.0 * q).float().expand(8, 14, 14).clone(),
        "all zero": torch.zeros(8, 14, 14),
        "huge scale": 1e6 * torch.randn(8, 14, 14, generator=g),
        "tiny scale": 1e-6 * torch.randn(8, 14, 14, generator=g),
        "tall": torch.randn(8, 20, 9, generator=g),
        "wide": torch.randn(8, 9, 20, generator=g),
        "constant": torch.full((8, 14, 14), 2.5),
    }


@pytest.mark.parametrize("name", list(_adversarial_inputs()))
def test_gram_svt_agrees_with_svd(name: str) -> None:
    from pgsl.recovery.svt import singular_value_threshold

    x = _adversarial_inputs()[name]
    scale = float(x.abs().max()) or 1.0
    for tau in (0.05 * scale, 0.5 * scale, 3.0 * scale):
        ref = singular_value_threshold(x.double(), tau, "svd")
        got = singular_value_threshold(x, tau, "gram")
        assert got.dtype == x.dtype
        # float32 output; the float64 Gram path itself is accurate to ~1e-8 of the scale
        assert (got.double() - ref).abs().max() <= 1e-5 * scale * 14, name


@pytest.mark.parametrize("name", ["relu maps", "rank-deficient", "tall"])
def test_solver_with_gram_svt_matches_reference_solver(name: str) -> None:
    x = _adversarial_inputs()[name]
    exact = robust_pca(x.double(), mu=0.55, max_iter=80, tol=1e-9, svt="svd")
    fast = robust_pca(x, mu=0.55, max_iter=80, tol=1e-9, svt="gram")
    err = (fast.low_rank.double() - exact.low_rank).norm() / exact.low_rank.norm().clamp(min=1e-12)
    assert err < 1e-4, err


def test_unknown_svt_method() -> None:
    with pytest.raises(ValueError, match="SVT method"):
        robust_pca(torch.ones(3, 3), mu=0.5, svt="qr")


def test_stopped_matrices_leave_the_working_set_without_changing_answers() -> None:
    # zeros stop after one iteration, noise runs long: the working set is compacted mid-solve
    d = torch.cat([torch.zeros(6, 9, 9, dtype=torch.float64), torch.randn(3, 9, 9, dtype=torch.float64),
                   torch.relu(torch.randn(3, 9, 9, dtype=torch.float64))])
    batched = robust_pca(d, mu=0.3, max_iter=300, tol=1e-9)
    assert int(batched.iterations.min()) < int(batched.iterations.max())
    for i in range(len(d)):
        one = robust_pca(d[i], mu=0.3, max_iter=300, tol=1e-9)
        assert torch.equal(batched.iterations[i], one.iterations)
        torch.testing.assert_close(batched.low_rank[i], one.low_rank, atol=1e-12, rtol=0)
        torch.testing.assert_close(batched.sparse[i], one.sparse, atol=1e-12, rtol=0)


def test_spectral_norm_routes_agree(device: torch.device) -> None:
    from pgsl.recovery.svt import spectral_norm

    x = _adversarial_inputs()["relu maps"].to(device)
    ref = torch.linalg.svdvals(x.double().cpu())[..., 0]
    for method in ("svd", "gram", "gesvda", "auto"):
        got = spectral_norm(x, method).double().cpu()
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("n", [14, 48])
def test_fast_svt_paths_agree_with_exact_svd_on_device(device: torch.device, n: int) -> None:
    """``gesvda`` (CUDA's batched SVD; the exact SVD on a CPU) and ``auto`` on relu maps."""
    from pgsl.recovery.svt import singular_value_threshold

    g = torch.Generator().manual_seed(n)
    x = torch.relu(torch.randn(64, n, 3, generator=g) @ torch.randn(64, 3, n, generator=g)
                   + 0.3 * torch.randn(64, n, n, generator=g))
    tau = 0.2 * float(torch.linalg.matrix_norm(x, ord=2).mean())
    ref = singular_value_threshold(x.double(), tau, "svd")
    for method in ("gesvda", "auto"):
        got = singular_value_threshold(x.to(device), tau, method).double().cpu()
        assert ((got - ref).norm() / ref.norm()) < 1e-4, method


def _large_adversarial_inputs(n: int = 48) -> dict[str, torch.Tensor]:
    """Above the 32x32 line, where ``auto`` takes the subspace path on a CPU."""
    g = torch.Generator().manual_seed(n)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    low = torch.randn(16, n, 3, generator=g) @ torch.randn(16, 3, n, generator=g)
    spikes = (torch.rand(16, n, n, generator=g) < 0.05) * 8.0
    return {
        "low rank + spikes": low + spikes,
        "relu maps": torch.relu(low + 0.3 * torch.randn(16, n, n, generator=g)),
        "rank-deficient": low,
        "repeated singular values": (3.0 * q).float().expand(4, n, n).clone(),
        "all zero": torch.zeros(4, n, n),
        "huge scale": 1e6 * (low + spikes),
        "tiny scale": 1e-6 * (low + spikes),
        "tall": torch.randn(6, n + 20, 4, generator=g) @ torch.randn(6, 4, n, generator=g),
        "wide": torch.randn(6, n, 4, generator=g) @ torch.randn(6, 4, n + 20, generator=g),
        "constant": torch.full((4, n, n), 2.5),
        # one full-rank matrix among low-rank ones: it must not make the others pay for its basis
        "mixed ranks": torch.cat([low[:6], torch.randn(1, n, n, generator=g)]),
    }


@pytest.mark.slow
@pytest.mark.parametrize("name", list(_large_adversarial_inputs()))
def test_subspace_solver_matches_exact_solver(name: str) -> None:
    x = _large_adversarial_inputs()[name]
    scale = float(torch.linalg.matrix_norm(x.double(), ord=2).mean()) or 1.0
    mu = 0.05 * scale
    # float32 at tol 1e-5: two exact float32 solves stop ~1e-4 apart already; below unit scale the
    # stopping test (Lin et al.'s, max(scale, 1)) is absolute, so agreement is relative to tol/scale
    for dtype, tol, bound in ((torch.float64, 1e-9, 1e-6), (torch.float32, 1e-5, 1e-3)):
        bound = max(bound, 10 * tol / scale)
        exact = robust_pca(x.to(dtype), mu=mu, max_iter=500, tol=tol, svt="svd")
        fast = robust_pca(x.to(dtype), mu=mu, max_iter=500, tol=tol, svt="subspace")
        assert fast.low_rank.dtype == dtype and torch.equal(fast.converged, exact.converged), name
        low = (fast.low_rank - exact.low_rank).double().norm() / max(float(exact.low_rank.norm()), 1e-30)
        sparse = (fast.sparse - exact.sparse).double().norm() / max(float(exact.sparse.norm()), scale)
        assert max(float(low), float(sparse)) < bound, (name, dtype, float(low), float(sparse))
        # the subspace steps cost at most a few exact polishing steps more per matrix
        assert bool((fast.iterations <= exact.iterations + 3).all()), name


def test_auto_takes_the_subspace_path_above_16_on_a_cpu() -> None:
    from pgsl.recovery.svt import resolve_svt

    assert resolve_svt("auto", torch.zeros(2, 64, 64)) == "subspace"
    assert resolve_svt("auto", torch.zeros(2, 28, 28)) == "subspace"
    assert resolve_svt("auto", torch.zeros(2, 64, 12)) == "gram"  # the small side decides
    assert resolve_svt("auto", torch.zeros(2, 14, 14)) == "gram"


@pytest.mark.slow
def test_short_subspace_solves_end_as_close_to_the_answer_as_exact_ones() -> None:
    # training stops APG after a few steps, before the polish: the subspace iterates must be as
    # good as the exact SVD's there too
    x = _large_adversarial_inputs()["relu maps"][:8]
    converged = robust_pca(x.double(), mu=0.55, max_iter=1500, tol=1e-9).low_rank
    for steps in (5, 15, 50):
        dist = {}
        for svt in ("svd", "subspace"):
            r = robust_pca(x, mu=0.55, max_iter=steps, tol=1e-4, eta=0.5, svt=svt).low_rank.double()
            dist[svt] = float((r - converged).norm() / converged.norm())
        assert dist["subspace"] <= 1.05 * dist["svd"], (steps, dist)


def test_subspace_svt_tracks_a_small_basis_and_hands_full_rank_rows_to_the_exact_svt() -> None:
    from pgsl.recovery.subspace import SubspaceSVT
    from pgsl.recovery.svt import singular_value_threshold

    g = torch.Generator().manual_seed(0)
    n = 64
    low = torch.randn(5, n, 4, generator=g, dtype=torch.float64) @ torch.randn(
        5, 4, n, generator=g, dtype=torch.float64)
    x = torch.cat([low + 0.01 * torch.randn(5, n, n, generator=g, dtype=torch.float64),
                   torch.randn(1, n, n, generator=g, dtype=torch.float64)])
    tau = torch.full((6, 1, 1), 1.0, dtype=torch.float64)
    calls: list[int] = []

    def exact(w: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        calls.append(len(w))
        return singular_value_threshold(w, t, "svd")

    svt = SubspaceSVT(6, n, n, torch.float64, x.device, exact=exact)
    for _ in range(6):  # the same matrix each call: the warm-started basis converges onto it
        got = svt(x, tau)
    ref = singular_value_threshold(x, tau, "svd")
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-8 * float(ref.abs().max()))
    assert svt.q < n // 2  # rank 4 + noise below tau: a small basis, not the whole space
    assert svt.big.tolist() == [False] * 5 + [True]  # the noise matrix went to the exact SVT
    assert calls and set(calls) == {1}  # ... alone


@pytest.mark.slow
def test_subspace_solver_on_device_matches_the_exact_cpu_solver(device: torch.device) -> None:
    """The subspace path on the test device (``--device cuda`` on a GPU): the same answers."""
    inputs = _large_adversarial_inputs()
    x = torch.cat([inputs["low rank + spikes"], inputs["relu maps"], inputs["mixed ranks"]])
    mu = 0.05 * float(torch.linalg.matrix_norm(x.double(), ord=2).mean())
    exact = robust_pca(x.double(), mu=mu, max_iter=500, tol=1e-9, svt="svd")
    fast = robust_pca(x.double().to(device), mu=mu, max_iter=500, tol=1e-9, svt="subspace")
    low = fast.low_rank.cpu()
    # on CUDA the polish uses gesvda (approximate) and stops are checked every 8 steps
    assert ((low - exact.low_rank).norm() / exact.low_rank.norm()) < 1e-5
    assert torch.equal(fast.converged.cpu(), exact.converged)


def test_a_failing_exact_svd_falls_back_to_the_gram_path(monkeypatch: pytest.MonkeyPatch,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    """LAPACK's gesdd can fail to converge on finite input; the solve must go on, not crash."""
    from pgsl.recovery import svt as svt_module

    x = _adversarial_inputs()["relu maps"].double()
    expected = robust_pca(x, mu=0.55, max_iter=40, tol=1e-9, svt="svd")

    def refuse(*args: object, **kwargs: object) -> None:  # fault injection: gesdd's failure
        raise torch.linalg.LinAlgError("linalg.svd: The algorithm failed to converge")

    monkeypatch.setattr(svt_module.torch.linalg, "svd", refuse)
    with caplog.at_level("WARNING", logger="pgsl.recovery.svt"):
        got = robust_pca(x, mu=0.55, max_iter=40, tol=1e-9, svt="svd")
    assert "falling back to the float64 Gram path" in caplog.text
    torch.testing.assert_close(got.low_rank, expected.low_rank, atol=1e-8, rtol=0)
    assert torch.equal(got.iterations, expected.iterations)


def test_gesvda_fallback_reads_the_failed_batch_element_from_torchs_message() -> None:
    """The gesvda route reruns a batch from the element PyTorch names in its LinAlgError; the
    message format is PyTorch's shared batched-LAPACK check, raised here on a CPU by cholesky."""
    from pgsl.recovery.svt import _FAILED_ELEMENT

    batch = torch.eye(3).repeat(4, 1, 1)
    batch[2] = -batch[2]  # not positive definite: element 2 fails
    with pytest.raises(torch.linalg.LinAlgError) as info:
        torch.linalg.cholesky(batch)
    found = _FAILED_ELEMENT.search(str(info.value))
    assert found is not None and found.group(1) == "2", str(info.value)
