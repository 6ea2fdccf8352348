"""The eigensolver-free SVT (recovery/products.py) against the exact SVD."""

from __future__ import annotations

import pytest
import torch

from pgsl.recovery.rpca import robust_pca
from pgsl.recovery.svt import singular_value_threshold as svt
from tests.test_rpca import _adversarial_inputs, planted


def _relu_maps(n: int, count: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    low = torch.randn(count, n, max(2, n // 8), generator=g) @ torch.randn(count, max(2, n // 8), n,
                                                                          generator=g)
    return torch.relu(low + 0.3 * torch.randn(count, n, n, generator=g))


@pytest.mark.parametrize("n", [14, 28])
def test_float32_agrees_with_the_exact_svt_on_relu_maps(n: int) -> None:
    x = _relu_maps(n, 128)
    s_max = torch.linalg.svdvals(x.double())[:, :1, None]
    for frac in (0.003, 0.03, 0.125, 0.5, 0.9):
        tau = frac * s_max  # one threshold per matrix, as APG's continuation gives
        ref = svt(x.double(), tau, "svd")
        got = svt(x, tau.float(), "products")
        assert got.dtype == torch.float32
        err = (got.double() - ref).flatten(1).norm(dim=1) / ref.flatten(1).norm(dim=1)
        assert err.max() < 1e-5, (frac, err.max().item())  # measured <= 3.8e-6


@pytest.mark.parametrize("name", list(_adversarial_inputs()))
def test_adversarial_inputs(name: str) -> None:
    x = _adversarial_inputs()[name]
    scale = float(torch.linalg.svdvals(x.double()).max()) or 1.0
    for frac in (0.01, 0.1, 0.5, 1.0, 3.0):
        ref = svt(x.double(), frac * scale, "svd")
        got32 = svt(x.float(), frac * scale, "products").double()
        got64 = svt(x.double(), frac * scale, "products")
        assert torch.isfinite(got32).all() and torch.isfinite(got64).all(), name
        assert (got32 - ref).abs().max() <= 1e-5 * scale, (name, frac)
        assert (got64 - ref).abs().max() <= 1e-9 * scale, (name, frac)


def test_zero_matrix_and_zero_threshold() -> None:
    zero = torch.zeros(4, 14, 14)
    for tau in (0.0, 1e-30, 1.0, 1e30):
        assert torch.equal(svt(zero, tau, "products"), zero)  # exactly zero, never NaN
    x = _relu_maps(14, 32)
    # tau = 0 is the identity, up to the singular values the method cannot resolve: float32 drops
    # those under ~sqrt(16 eps) = 1.4e-3 of ||X||_F (G's rounding); in float64 the 28 sign steps
    # only partly decide eigenvalues of G/c under ~2e-8 (singular values under ~1.5e-4 of ||X||_F)
    for dtype, bound in ((torch.float32, 2e-3), (torch.float64, 1e-4)):
        got = svt(x.to(dtype), 0.0, "products")
        err = (got.double() - x.double()).flatten(1).norm(dim=1) / x.flatten(1).norm(dim=1)
        assert err.max() < bound, (dtype, err.max().item())


def test_threshold_above_every_singular_value_gives_zero() -> None:
    x = _relu_maps(28, 16)
    s_max = torch.linalg.svdvals(x)[:, :1, None]
    assert svt(x, 1.01 * s_max, "products").abs().max() < 1e-6 * s_max.max()


def test_scale_equivariant_without_overflow() -> None:
    x = _relu_maps(14, 16)
    tau = 0.1 * torch.linalg.svdvals(x)[:, :1, None]
    base = svt(x, tau, "products")
    for scale in (1e30, 1e-30):  # the Gram matrix of 1e30 * x overflows float32 unscaled
        got = svt(scale * x, scale * tau, "products") / scale
        assert torch.isfinite(got).all()
        assert (got - base).abs().max() <= 1e-5 * base.abs().max(), scale


def test_apg_with_products_gives_the_float32_svd_answer() -> None:
    low, sparse = planted(batch=8, n=28, rank=2, density=0.05, device=torch.device("cpu"))
    d = (low + sparse).float()
    ref = robust_pca(d, mu=0.5, max_iter=50, tol=1e-5, svt="svd")
    got = robust_pca(d, mu=0.5, max_iter=50, tol=1e-5, svt="products")
    assert torch.equal(got.iterations, ref.iterations)
    err = (got.low_rank - ref.low_rank).flatten(1).norm(dim=1) / ref.low_rank.flatten(1).norm(dim=1)
    assert err.max() < 1e-4, err.max().item()


def test_on_device_matches_the_cpu(device: torch.device) -> None:
    x = _relu_maps(14, 64)
    tau = 0.1 * torch.linalg.svdvals(x)[:, :1, None]
    cpu = svt(x, tau, "products")
    got = svt(x.to(device), tau.to(device), "products").cpu()
    assert (got - cpu).abs().max() <= 1e-5 * cpu.abs().max()
