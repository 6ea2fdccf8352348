"""A plain per-matrix NumPy APG robust PCA (Lin et al. 2009, Alg. 2): the reference for tests and benchmarks.

Written independently of ``pgsl.recovery.rpca``: one matrix at a time, float64, NumPy's SVD.
"""

from __future__ import annotations

import math

import numpy as np


def apg_rpca(d: np.ndarray, mu: float, lam: float | None = None, max_iter: int = 100,
             tol: float = 1e-6, eta: float = 0.9) -> tuple[np.ndarray, np.ndarray, int]:
    m, n = d.shape
    lam = 1.0 / math.sqrt(max(m, n)) if lam is None else lam
    mu_k = max(0.99 * np.linalg.norm(d, 2), mu) if eta < 1 else mu
    a = np.zeros_like(d)
    e = np.zeros_like(d)
    a_old, e_old = a.copy(), e.copy()
    t, t_old = 1.0, 1.0
    for k in range(1, max_iter + 1):
        ya = a + (t_old - 1) / t * (a - a_old)
        ye = e + (t_old - 1) / t * (e - e_old)
        g = 0.5 * (ya + ye - d)
        u, s, vt = np.linalg.svd(ya - g, full_matrices=False)
        a_new = (u * np.maximum(s - mu_k / 2, 0)) @ vt
        ge = ye - g
        e_new = np.sign(ge) * np.maximum(np.abs(ge) - lam * mu_k / 2, 0)
        s_a = 2 * (ya - a_new) + (a_new + e_new - ya - ye)
        s_e = 2 * (ye - e_new) + (a_new + e_new - ya - ye)
        res = math.sqrt(np.sum(s_a**2) + np.sum(s_e**2))
        scale = 2 * math.sqrt(np.sum(a_new**2) + np.sum(e_new**2))
        reached = mu_k <= mu
        a_old, a, e_old, e = a, a_new, e, e_new
        t_old, t = t, (1 + math.sqrt(1 + 4 * t * t)) / 2
        mu_k = max(mu_k * eta, mu)
        if reached and res <= tol * max(scale, 1.0):
            return a, e, k
    return a, e, max_iter
