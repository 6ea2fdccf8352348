"""Conv-sum feature fusion (eqs. 7-8) and adaptive weighted decision fusion (eqs. 9-11)."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn


class ConvSumFusion(nn.Module):
    """``f_out = conv1x1(concat(f_u, f_v)) + f_u`` (eqs. 7-8, after Khowaja & Lee, ref. [33]).

    The 1x1 convolution is the "bank of filters and biases" that reduces ``2k`` channels to ``k``.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(2 * channels, channels, kernel_size=1)

    def forward(self, f_u: Tensor, f_v: Tensor) -> Tensor:
        return self.reduce(torch.cat([f_u, f_v], dim=1)) + f_u


def adaptive_weighted_fusion(
    s_r: Tensor,
    s_f: Tensor,
    s_a: Tensor,
    *,
    weights: tuple[float, float, float] = (0.5, 0.3, 0.2),
    confidence: Literal["sample", "class"] = "sample",
) -> Tensor:
    """``S_awa = gamma*S_r + rho*S_f + (1 - gamma - rho)*S_a`` (eqs. 9-11).

    Args:
        s_r, s_f, s_a: ``(B, K)`` class scores (softmax probabilities) of the recovered, fused and
            attacked streams.
        weights: fixed ``(W_gamma, W_rho, W_beta)`` for (r, f, a); the paper uses (0.5, 0.3, 0.2).
        confidence: how ``S^max`` is read. ``"sample"`` (default): each sample's own top score, so
            gamma and rho adapt per sample. ``"class"``: the paper's literal "maximum average score of
            a class label", the batch's per-class mean score maximised over classes, one gamma and rho
            for the whole batch.

    Returns:
        ``(B, K)`` fused scores.
    """
    if not (s_r.shape == s_f.shape == s_a.shape) or s_r.ndim != 2:
        raise ValueError(
            f"stream scores must share a (B, K) shape, got {tuple(s_r.shape)}, "
            f"{tuple(s_f.shape)}, {tuple(s_a.shape)}"
        )
    w_r, w_f, w_a = weights
    if confidence == "sample":
        m_r, m_f, m_a = (s.amax(dim=1, keepdim=True) for s in (s_r, s_f, s_a))
    elif confidence == "class":
        m_r, m_f, m_a = (s.mean(dim=0).amax() for s in (s_r, s_f, s_a))
    else:
        raise ValueError(f"confidence must be 'sample' or 'class', got {confidence!r}")
    denom = (w_r * m_r + w_f * m_f + w_a * m_a).clamp(min=torch.finfo(s_r.dtype).tiny)
    gamma = w_r * m_r / denom
    rho = w_f * m_f / denom
    return gamma * s_r + rho * s_f + (1.0 - gamma - rho) * s_a
