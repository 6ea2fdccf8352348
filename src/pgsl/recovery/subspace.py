"""Warm-started, rank-adaptive singular value thresholding for an iterative solver.

APG (``pgsl.recovery.rpca``) thresholds the singular values of a slowly changing matrix ``W_k``
once per iteration, and keeps only those above ``tau``: a handful out of ``min(m, n)``. A full SVD
spends almost all its work on the discarded rest. This tracks the dominant right singular
subspace instead, one block power step per call, started from the previous call's Ritz vectors
(subspace iteration with Rayleigh-Ritz, Halko, Martinsson & Tropp 2011, Alg. 4.4, warm-started as
in Lin et al.'s APG with PROPACK's predicted rank):

    U = orth(W V)                  m x q, Householder QR: orthonormal even when W V is rank-deficient
    Y = W^T U                      n x q, so that U U^T W = U Y^T
    Y^T Y = R diag(s^2) R^T        q x q eigh in float64 (squares lose half the digits; float64
                                   keeps ~1e-8 of s_max, far under any threshold)
    SVT(U U^T W) = U R diag(max(s - tau, 0) / s) R^T Y^T,   next V = Y R diag(1 / s)

Contract: :class:`SubspaceSVT` is called with a batch ``W`` ``(B, m, n)`` and thresholds ``tau``
``(B, 1, 1)`` and returns the thresholded batch; it keeps the basis ``V`` ``(B, n, q)`` between
calls. Cost per matrix and call: three thin matmuls, a thin QR and a q x q eigh, all batched.

Rank adaptivity: ``q`` (shared by the batch) grows whenever some matrix keeps all ``q`` Ritz
values above ``tau`` (the step is then redone with the larger basis, since a value may have been
missed) or fewer than ``OVERSAMPLE`` spare directions (next step); once ``q`` would exceed half of
``min(m, n)`` the basis becomes the whole space and the step is exact.

The result is an *inexact* proximal step while the subspace settles; the solver therefore
finishes every matrix that stops with this method by exact APG iterations from where it stopped
(see ``robust_pca``), so the answer meets the exact method's stopping test.

Measured behaviour (cost per call and per solve against the SVD): docs/findings.md#the-subspace-svt
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from pgsl.recovery.threads import threaded

OVERSAMPLE = 4  # spare directions kept beyond the thresholded rank: they set the convergence rate
FIRST_Q = 4  # the first basis: continuation starts near rank 1
FIRST_POWER_STEPS = 3  # from a random start, a few power steps before the first Ritz values
_SMALL_PER_THREAD = 1_024  # elements: a thread pays off from ~16 thin QRs or small eighs


def _qr(x: Tensor) -> Tensor:
    return threaded(lambda c: (torch.linalg.qr(c).Q,), x, min_per_thread=_SMALL_PER_THREAD)[0]


def _eigh(x: Tensor) -> tuple[Tensor, Tensor]:
    lam, vec = threaded(lambda c: tuple(torch.linalg.eigh(c)), x, min_per_thread=_SMALL_PER_THREAD)
    return lam, vec


class SubspaceSVT:
    """Stateful SVT for a batch of ``(m, n)`` matrices whose values change a little per call.

    Call it with the batch ``w`` ``(B, m, n)`` and thresholds ``tau`` ``(B, 1, 1)``; after the
    solver drops rows from its working set, :meth:`select` the same rows here. ``exact`` is the
    SVT for matrices whose thresholded rank outgrows the subspace (``big`` rows: a shared basis
    sized for them would make every matrix pay).
    """

    def __init__(self, count: int, m: int, n: int, dtype: torch.dtype, device: torch.device,
                 exact: Callable[[Tensor, Tensor], Tensor], seed: int = 0) -> None:
        self.full = min(m, n)
        self.limit = max(self.full // 2, 1)  # beyond it a basis costs more than the exact SVT
        self.exact = exact
        self.generator = torch.Generator(device=device).manual_seed(seed)
        self.q = min(FIRST_Q, self.full)
        self.v = self._random((count, n, self.q), dtype, device)
        self.big = torch.zeros(count, dtype=torch.bool, device=device)
        self.fresh = True

    def _random(self, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> Tensor:
        return torch.randn(shape, generator=self.generator, dtype=dtype, device=device)

    def select(self, rows: Tensor) -> None:
        self.v, self.big = self.v[rows], self.big[rows]

    def _grow(self, wanted: int) -> bool:
        q = min(max(2 * self.q, wanted), self.limit)
        q = self.full if q >= self.limit and self.full <= 2 * FIRST_Q else q  # tiny maps: exact
        if q <= self.q:
            return False
        extra = self._random((self.v.shape[0], self.v.shape[1], q - self.q), self.v.dtype,
                             self.v.device)
        self.v = torch.cat((self.v, extra), dim=-1)
        self.q = q
        return True

    def _step(self, w: Tensor, tau: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(SVT of w in the subspace, next basis, rows whose rank the basis cannot hold, the
        number of values above tau per row)``."""
        t = tau.double().reshape(-1, 1)
        while True:
            u = _qr(w @ v)
            y = w.mT @ u
            y64 = y.double()
            lam, r = _eigh(y64.mT @ y64)  # ascending
            lam, r = lam.flip(-1), r.flip(-1)
            s = lam.clamp(min=0.0).sqrt()
            kept = (s > t).sum(-1)
            saturated = kept >= self.q  # a value above tau may lie outside the basis
            if self.q < self.full and bool(saturated.any()) and self._grow(int(kept.max()) + OVERSAMPLE):
                extra = self._random((len(v), v.shape[1], self.q - v.shape[-1]), v.dtype, v.device)
                v = torch.cat((v, extra), dim=-1)
                continue
            break
        tiny = torch.finfo(torch.float64).tiny
        factor = torch.where(s > t, (s - t) / s.clamp(min=tiny), 0.0)
        low = (u @ ((r * factor.unsqueeze(-2)) @ r.mT).to(w.dtype)) @ y.mT
        # next basis: the Ritz vectors; directions with no energy restart at random
        ritz = (y64 @ r) / s.clamp(min=tiny).unsqueeze(-2)
        dead = (s <= torch.finfo(torch.float64).eps * s[..., :1]).unsqueeze(-2)
        if bool(dead.any()):
            ritz = torch.where(dead, self._random(tuple(ritz.shape), torch.float64, ritz.device), ritz)
        if bool((kept + OVERSAMPLE > self.q).any()):
            self._grow(int(kept.max()) + OVERSAMPLE)  # for the next call
        big = saturated if self.q < self.full else torch.zeros_like(saturated)
        return low, ritz.to(w.dtype), big, kept

    def _hand_over(self, small: Tensor, big: Tensor, kept: Tensor) -> None:
        """Mark the rows of ``small`` flagged ``big`` for the exact SVT from now on, and cut the
        basis, which grew for them, back to what the others need (Ritz vectors come sorted, so the
        leading columns are the ones to keep)."""
        if not bool(big.any()):
            return
        self.big[small[big]] = True
        rest = kept[~big]
        q = min(self.q, max(FIRST_Q, int(rest.max()) + OVERSAMPLE if len(rest) else FIRST_Q))
        self.v, self.q = self.v[..., :q].contiguous(), q

    def __call__(self, w: Tensor, tau: Tensor) -> Tensor:
        if self.v.dtype != w.dtype:
            self.v = self.v.to(w.dtype)
        if self.fresh:  # random start: sharpen the basis before the first Ritz step
            for _ in range(FIRST_POWER_STEPS - 1):
                self.v = _qr(w.mT @ _qr(w @ self.v))
            self.fresh = False
        small = (~self.big).nonzero().squeeze(1)
        if len(small) == len(w):  # the usual case: every row in the subspace, no gather or scatter
            low, ritz, big, kept = self._step(w, tau, self.v)
            self.v[..., : ritz.shape[-1]] = ritz
            self._hand_over(small, big, kept)
        else:
            low = torch.empty_like(w)
            if len(small):
                low[small], ritz, big, kept = self._step(w[small], tau[small], self.v[small])
                self.v[small, :, : ritz.shape[-1]] = ritz
                self._hand_over(small, big, kept)
        if bool(self.big.any()):
            rows = self.big.nonzero().squeeze(1)
            low[rows] = self.exact(w[rows], tau[rows])
        return low
