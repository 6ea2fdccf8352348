"""Singular value thresholding and the other proximal operators of robust PCA, batched.

``singular_value_threshold`` is the proximal operator of ``tau * ||.||_*`` by one of several
routes (exact SVD, float64 Gram/eigh, CUDA's batched ``gesvda``; the warm-started subspace route
lives in :mod:`pgsl.recovery.subspace` and is reached through :class:`BatchSVT`), chosen per size
and device by :func:`resolve_svt`. The solvers (:mod:`pgsl.recovery.rpca`: APG,
:mod:`pgsl.recovery.admm`: ADMM) call them once per iteration.
"""

from __future__ import annotations

import logging
import re

import torch
from torch import Tensor

from pgsl.recovery.products import svt_products
from pgsl.recovery.subspace import SubspaceSVT
from pgsl.recovery.threads import threaded

log = logging.getLogger(__name__)


SVT_METHODS = ("auto", "svd", "gram", "gesvda", "subspace", "products")


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
    SVD), ``"products"`` (Newton-Schulz iterations, :mod:`pgsl.recovery.products`: no eigensolver,
    no host sync on CUDA; float32-accurate, never chosen by ``"auto"`` until measured on a GPU) or
    ``"auto"`` (:func:`resolve_svt`). A fast path that fails to converge falls back to the exact SVD.
    """
    tau_t = torch.as_tensor(tau, dtype=x.dtype, device=x.device)
    if tau_t.ndim == 0:
        tau_t = tau_t.expand(*x.shape[:-2], 1, 1)
    method = resolve_svt(method, x)
    if method == "subspace":  # it needs the previous iterate's basis: alone, the exact SVD
        method = "svd"
    if method == "products":
        return svt_products(x, tau_t)
    try:
        if method == "gram":
            return _svt_gram(x, tau_t)
        if method == "gesvda" and x.device.type == "cuda":
            return _svt_gesvda(x, tau_t)
    except torch.linalg.LinAlgError as exc:
        log.warning("%s SVT failed (%s); falling back to the exact SVD", method, exc)
    try:
        return _svt_svd(x, tau_t)
    except torch.linalg.LinAlgError as exc:  # LAPACK's gesdd can fail to converge on finite input
        if method == "gram":
            raise
        log.warning("the exact SVD failed (%s); falling back to the float64 Gram path", exc)
        return _svt_gram(x, tau_t)


def spectral_norm(x: Tensor, method: str = "svd") -> Tensor:
    """Largest singular value of every matrix, by the same route as ``method`` (see above; for
    ``"subspace"``, which needs a basis from earlier calls, the exact route; for ``"products"``,
    which has no spectrum to read, ``svdvals``: once per solve)."""
    method = resolve_svt(method, x)
    if method == "subspace":
        method = exact_svt(x)
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


class BatchSVT:
    """The SVT one solve calls every iteration on its working set of ``(count, m, n)`` matrices.

    ``method`` is a resolved SVT method (:func:`resolve_svt`). For ``"subspace"`` it holds the
    warm-started basis of every matrix, so when the solver drops rows from its working set it must
    :meth:`select` the same rows here; the other methods keep no state.
    """

    def __init__(self, method: str, count: int, m: int, n: int, dtype: torch.dtype,
                 device: torch.device) -> None:
        self.method = method
        self.subspace: SubspaceSVT | None = None
        if method == "subspace":
            exact = exact_svt(torch.empty(0, m, n, device=device))
            self.subspace = SubspaceSVT(count, m, n, dtype, device,
                                        exact=lambda x, tau: singular_value_threshold(x, tau, exact))

    def __call__(self, w: Tensor, tau: Tensor) -> Tensor:
        return self.subspace(w, tau) if self.subspace else singular_value_threshold(w, tau, self.method)

    def select(self, rows: Tensor) -> None:
        if self.subspace:
            self.subspace.select(rows)
