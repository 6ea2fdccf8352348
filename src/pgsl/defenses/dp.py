"""Differential privacy on the cut: per-sample L2 clipping and Gaussian noise on the activations.

The client clips each sample's activation map ``a`` ``(C_a, h, w)`` to L2 norm at most ``C`` and
adds i.i.d. ``N(0, (sigma C)^2)`` noise to every element, in training and at inference, so that the
server (and an eavesdropper) only ever sees the Gaussian mechanism's output (Dwork & Roth 2014,
Thm. A.1; the "embedding DP" of split-learning libraries). ``C`` is set per coordinate:
``C = clip_rms * sqrt(C_a h w)``, so ``clip_rms = 1`` keeps the order-1 scale of BatchNorm outputs.

What the guarantee covers, and what it does not
-----------------------------------------------
Covered: the activations released for each *training* sample during split training. Each epoch
sends every training sample's activations once (a SplitGuard fake batch replaces a regular batch,
it does not add one), so a sample is released ``epochs`` times. Not covered: the labels (sent in
the clear), the gradients the server returns, the test images' activations at evaluation and at
inference (each such release is one more Gaussian mechanism on that image), and the trained client
segment itself.

Two numbers, both from Opacus's RDP accountant (Mironov 2017; Mironov, Talwar & Zhang 2019):

- ``epsilon`` — **per-sample (local) DP**, the guarantee this threat model supports. The server
  sees each sample's own noisy row, so there is no amplification by subsampling; two inputs'
  clipped activations differ by at most ``2C`` (replace-one), so each release is a Gaussian
  mechanism with noise multiplier ``sigma / 2``, composed over the ``epochs`` releases.
- ``epsilon_subsampled`` — the number split-learning libraries usually report (SecretFlow's
  embedding DP): the subsampled Gaussian mechanism with sampling rate ``q = B / N``, sensitivity
  ``C`` and ``epochs * ceil(N / B)`` steps, as if only a DP-SGD-style aggregate were released and
  batches were Poisson samples. Neither holds here (the server sees every row; batches are
  shuffled, fixed-size); it is given only to compare with papers that report it.

On a high-dimensional cut the noise needed for a small ``epsilon`` dwarfs the signal (per
coordinate, signal ``~clip_rms`` against noise ``sigma clip_rms sqrt(C_a h w)``): expect a useful
model only at an ``epsilon`` that guarantees nothing. The measured frontier is in the README.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from pgsl.defenses.base import Defense, Setting

__all__ = ["DPParams", "GaussianDP", "clip_and_noise", "local_epsilon", "subsampled_epsilon"]

# Opacus' RDP accountant's own orders, written here so that building a Config (which checks a
# defence's options) does not import Opacus; a test compares them with RDPAccountant.DEFAULT_ALPHAS
ORDERS: list[float] = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64))


def clip_and_noise(a: Tensor, clip: float, sigma: float, generator: torch.Generator | None = None) -> Tensor:
    """Each sample of ``a`` ``(B, ...)`` scaled to L2 norm ``<= clip``, plus ``N(0, (sigma clip)^2)``
    per element. Differentiable in ``a`` (the clipping factor included)."""
    if not clip > 0:
        raise ValueError(f"clip must be > 0, got {clip}")
    if not sigma >= 0:
        raise ValueError(f"sigma must be >= 0, got {sigma}")
    norms = a.flatten(1).norm(dim=1).view(-1, *([1] * (a.ndim - 1)))
    clipped = a * (clip / norms.clamp(min=clip))
    if sigma == 0:
        return clipped
    noise = torch.randn(a.shape, generator=generator, device=a.device, dtype=a.dtype)
    return clipped + (sigma * clip) * noise


def local_epsilon(sigma: float, releases: int, delta: float) -> float:
    """``epsilon`` of ``releases`` Gaussian releases of one sample's clipped activations (sensitivity
    ``2C`` under replacement, noise ``sigma C``): RDP with ``q = 1``, noise multiplier ``sigma / 2``."""
    return _epsilon(q=1.0, noise_multiplier=sigma / 2, steps=releases, delta=delta)


def subsampled_epsilon(sigma: float, batch_size: int, n_train: int, epochs: int, delta: float) -> float:
    """``epsilon`` as embedding-DP papers report it: the subsampled Gaussian mechanism with
    ``q = B / N``, noise multiplier ``sigma``, ``epochs * ceil(N / B)`` steps (see the module text
    for why it does not apply to per-sample releases)."""
    if n_train < 1 or batch_size < 1:
        raise ValueError(f"need n_train >= 1 and batch_size >= 1, got {n_train} and {batch_size}")
    q = min(1.0, batch_size / n_train)
    return _epsilon(q=q, noise_multiplier=sigma, steps=epochs * math.ceil(n_train / batch_size), delta=delta)


def _epsilon(q: float, noise_multiplier: float, steps: int, delta: float) -> float:
    if steps < 0 or not 0 < delta < 1:
        raise ValueError(f"need steps >= 0 and 0 < delta < 1, got {steps} and {delta}")
    if steps == 0:
        return 0.0
    if noise_multiplier == 0:
        return math.inf
    from opacus.accountants.analysis.rdp import compute_rdp, get_privacy_spent  # ~2 s to import

    rdp = compute_rdp(q=q, noise_multiplier=noise_multiplier, steps=steps, orders=ORDERS)
    eps, _ = get_privacy_spent(orders=ORDERS, rdp=rdp, delta=delta)
    return float(eps)


@dataclass(frozen=True)
class DPParams:
    sigma: float = 0.01  # noise multiplier: the Gaussian's std is sigma * C
    clip_rms: float = 1.0  # C = clip_rms * sqrt(number of activation elements per sample)
    delta: float = 1e-5

    def __post_init__(self) -> None:
        if not self.sigma >= 0:
            raise ValueError(f"DP sigma must be >= 0, got {self.sigma}")
        if not self.clip_rms > 0:
            raise ValueError(f"DP clip_rms must be > 0, got {self.clip_rms}")
        if not 0 < self.delta < 1:
            raise ValueError(f"DP delta must be in (0, 1), got {self.delta}")


class GaussianDP(Defense):
    """The vanilla split with each sample's activations clipped and Gaussian-noised before sending."""

    Params = DPParams
    settings = tuple(Setting.option("sigma", s) for s in (0.02, 0.05, 0.1))
    title = "Gaussian DP"
    summary = ("split + per-sample clipping and Gaussian noise on the activations, (epsilon, delta) "
               "from Opacus's RDP accountant; options sigma, clip_rms, delta")

    @classmethod
    def describe_guarantee(cls, g: Mapping[str, float]) -> str:
        return (f"({g['epsilon']:.4g}, {g['delta']:g})-DP per training sample's released activations "
                f"over {g['releases']:g} release(s) (epsilon as embedding-DP papers report it, with "
                f"subsampling: {g['epsilon_subsampled']:.4g}); labels and returned gradients are not "
                "covered")

    def perturb(self, a: Tensor) -> Tensor:
        p = self.params
        return clip_and_noise(a, p.clip_rms * math.sqrt(a[0].numel()), p.sigma)

    def guarantee(self, *, releases: int, n_train: int, batch_size: int) -> dict[str, float]:
        p = self.params
        return {"epsilon": local_epsilon(p.sigma, releases, p.delta),
                "epsilon_subsampled": subsampled_epsilon(p.sigma, batch_size, n_train, releases, p.delta),
                "delta": p.delta, "sigma": p.sigma, "releases": float(releases)}
