"""Singular value thresholding from batched matrix products alone (Newton-Schulz iterations).

Contract: :func:`svt_products` takes ``x`` ``(..., m, n)`` and thresholds ``tau`` ``(..., 1, 1)``
and returns ``U diag(max(s - tau, 0)) V^T`` in ``x``'s shape and dtype, with no eigensolver and no
SVD. ``torch.linalg.eigh`` and ``torch.linalg.svd`` on CUDA wait for the device on every call (to
check their error codes), so a solver that thresholds once per iteration synchronises with the
host once per iteration; this route never does, and it is made of batched products that a GPU runs
well (and that a CUDA graph can replay). It is ``svt="products"``; ``svt="auto"`` never picks it
(on a CPU, LAPACK's eigh is faster).

``SVT(X, tau) = F(G) X`` for the smaller Gram matrix ``G = X X^T`` and the scalar function
``F(l) = max(1 - tau / sqrt(l), 0)`` of its eigenvalues. Instead of an eigensolver this evaluates
``F(G)`` by matrix iterations (Higham, *Functions of Matrices*, 2008, ch. 5-6):

1. scale: ``X`` by its Frobenius norm (so ``G`` cannot overflow in float32), then ``c >= l_max``
   for certain, the smaller of ``||G||_F`` and ``||G||_inf`` (and at least ``tau^2``);
2. ``P = (I + sign(G/c - t I)) / 2`` with ``t = tau^2 / c``: the projector onto the eigenvalues
   above the threshold, by :data:`SIGN_STEPS` quintic Newton-Schulz steps
   ``y <- y (15 - 10 y^2 + 3 y^4) / 8``. An eigenvalue too close to ``t`` for the steps to decide
   keeps a partial weight, where ``F`` is ~0 anyway;
3. ``Z = M^(-1/2)`` for ``M = P G/c + t' (I - P)`` (``t' = max(t, 16 eps)``, see below), whose
   spectrum lies in ``[t', 1]``, by :data:`ROOT_STEPS` coupled Newton-Schulz steps; then
   ``F(G) = P - sqrt(t) P Z``.

Resolution: eigenvalues of ``G/c`` under ``16 eps`` are the Gram matrix's rounding, so singular
values under ``sqrt(16 eps) ||X||_F`` (~1.4e-3 in float32) are not resolved; in float64 an
eigenvalue of ``G/c`` within ~2e-8 of ``t`` is only partly decided by the sign steps. It is a
float32 training path, accurate to a few 1e-6 relative on relu maps; converged float64 solves
belong to ``svd``, ``gram`` or ``subspace``.

Measured behaviour (accuracy per threshold and step count, CPU speed, training accuracy through
it): docs/findings.md#the-products-svt
"""

from __future__ import annotations

import torch
from torch import Tensor

NOISE = 16.0  # eigenvalues of G/c under NOISE * eps are rounding noise (see svt_products)
SIGN_STEPS = 28  # quintic steps: an eigenvalue gap of 1e-7 relative to c grows to O(1) in ~26
ROOT_STEPS = 28  # coupled steps: converge from an eigenvalue t ~ 1e-4 of c in ~25


def svt_products(x: Tensor, tau: Tensor) -> Tensor:
    """``U diag(max(s - tau, 0)) V^T`` for a ``(..., m, n)`` batch and ``(..., 1, 1)`` thresholds."""
    dtype = x.dtype
    tiny = torch.finfo(dtype).tiny
    # ||X||_F by way of max |X| (squares of 1e20 overflow float32), then every singular value of
    # the scaled X is <= 1: a threshold above 1 keeps nothing
    peak = x.abs().amax(dim=(-2, -1), keepdim=True).clamp(min=tiny)
    unit = torch.linalg.vector_norm(x / peak, dim=(-2, -1), keepdim=True).clamp(min=1.0)  # >= 1
    norm = peak * unit
    xs = x / peak / unit
    ts = (tau.to(dtype) / norm).clamp(min=0.0, max=2.0)
    wide = x.shape[-2] <= x.shape[-1]
    g = xs @ xs.mT if wide else xs.mT @ xs
    eye = torch.eye(g.shape[-1], dtype=dtype, device=x.device)
    # c >= l_max for certain: the smaller of two norms that bound it (a power-iteration estimate
    # can miss the top eigenvector and then the sign steps below diverge), and >= tau^2
    bound = torch.minimum(torch.linalg.matrix_norm(g), g.abs().sum(-1).amax(-1))
    c = torch.maximum(bound, (ts * ts)[..., 0, 0]).clamp(min=tiny)[..., None, None]
    t = ts * ts / c  # in [0, 1]
    gh = g / c  # spectrum in [0, 1]
    # G's rounding leaves eigenvalues of +-(m eps) where the true ones are 0; the sign steps would
    # blow that noise up to +-1. Eigenvalues under NOISE * eps count as zero: singular values under
    # ~sqrt(NOISE * eps) of ||X||_F are dropped whatever tau (float32: ~1.4e-3; float64: ~6e-8).
    floor = t.clamp(min=NOISE * torch.finfo(dtype).eps)
    y = (gh - floor * eye) / torch.maximum(floor, 1.0 - floor)  # spectrum in [-1, 1]
    for _ in range(SIGN_STEPS):
        y2 = y @ y
        y = y @ (15.0 * eye - 10.0 * y2 + 3.0 * (y2 @ y2)) / 8.0
    p = (eye + y) / 2.0
    # M agrees with G/c on the kept eigenvalues and is `floor` on the others, so its spectrum lies
    # in [floor, 1]; an eigenvalue the sign steps left undecided (within ~1e-7 of t) is ~t either way,
    # where F vanishes -- blending it towards 1 instead would leave an O(1) error in F there
    pg = p @ gh
    m = (pg + pg.mT) / 2.0 + floor * (eye - p)  # symmetric, as P G = G P in exact arithmetic
    root, z = m, eye.expand_as(m)
    for _ in range(ROOT_STEPS):
        step = (3.0 * eye - z @ root) / 2.0
        root, z = root @ step, step @ z
    f = p - t.sqrt() * (p @ z)
    return (f @ xs if wide else xs @ f) * norm
