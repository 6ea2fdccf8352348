"""Singular value thresholding from batched matrix products alone (Newton-Schulz iterations).

``SVT(X, tau) = F(G) X`` for the smaller Gram matrix ``G = X X^T`` and the scalar function
``F(l) = max(1 - tau / sqrt(l), 0)`` of its eigenvalues. Instead of an eigensolver this evaluates
``F(G)`` by matrix iterations (Higham, *Functions of Matrices*, 2008, ch. 5-6):

1. scale: ``X`` by its Frobenius norm (so ``G`` cannot overflow in float32), then ``c >= l_max``
   for certain, the smaller of ``||G||_F`` and ``||G||_inf`` (and at least ``tau^2``);
2. ``P = (I + sign(G/c - t I)) / 2`` with ``t = tau^2 / c``: the projector onto the eigenvalues
   above the threshold, by quintic Newton-Schulz steps ``y <- y (15 - 10 y^2 + 3 y^4) / 8``. An
   eigenvalue too close to ``t`` for the steps to decide keeps a partial weight, where ``F`` is
   ~0 anyway;
3. ``Z = M^(-1/2)`` for ``M = P G/c + t' (I - P)`` (``t' = max(t, 16 eps)``, see below), whose
   spectrum lies in ``[t', 1]``, by coupled Newton-Schulz steps; then ``F(G) = P - sqrt(t) P Z``.

Why: ``torch.linalg.eigh`` and ``torch.linalg.svd`` on CUDA wait for the device on every call (to
check their error codes), so a solver that thresholds once per iteration synchronises with the
host once per iteration; this route never does, and it is made of batched products that a GPU
runs well (and that a CUDA graph can replay). On a CPU it is several times slower than LAPACK
(~175 small products against one eigh: 27 vs 6 us per 14x14 map, ``bench/svt_kernels.py``), so
``svt="auto"`` never picks it there. Its GPU speed is what ``bench/device.sh`` measures.

Accuracy (float32, relu-like 14x14 and 28x28 maps, thresholds 0.03-0.3 of the largest singular
value): worst relative error ~1.6e-6 against a float64 SVD with the step counts below; with 20/18
steps it was 4e-2 at the small thresholds, so they are not to be cut. Per-matrix thresholds from
0.003 to 0.9 of each map's largest singular value: worst 3.8e-6. What it cannot resolve: in
float32, singular values under ~1.4e-3 of ``||X||_F`` (the Gram matrix's rounding); in float64, an
eigenvalue of ``G/c`` within ~2e-8 of ``t`` is only partly decided by the 28 sign steps, which for
``tau -> 0`` leaves singular values under ~1.5e-4 of ``||X||_F`` partly kept (error 2.4e-5 measured),
and a threshold far below the largest singular value lets APG at tol 1e-7 stop short of the exact
SVD's answer (5e-6 at ``mu = 1e-3``, planted 28x28). It is a float32 training path; converged
float64 solves belong to ``svd``, ``gram`` or ``subspace``.
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
