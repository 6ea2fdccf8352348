"""Conv-sum fusion (eqs. 7-8) and adaptive weighted decision fusion (eqs. 9-11)."""

from __future__ import annotations

import pytest
import torch

from pgsl.server.fusion import ConvSumFusion, adaptive_weighted_fusion


def test_eqs_9_to_11_by_hand_per_sample() -> None:
    s_r = torch.tensor([[0.7, 0.2, 0.1]])
    s_f = torch.tensor([[0.2, 0.5, 0.3]])
    s_a = torch.tensor([[0.1, 0.1, 0.8]])
    # S^max: r 0.7, f 0.5, a 0.8; W = 0.5, 0.3, 0.2
    denom = 0.5 * 0.7 + 0.3 * 0.5 + 0.2 * 0.8  # 0.66
    gamma, rho = 0.35 / denom, 0.15 / denom
    expected = gamma * s_r + rho * s_f + (1 - gamma - rho) * s_a
    got = adaptive_weighted_fusion(s_r, s_f, s_a)
    assert torch.allclose(got, expected)
    # spelled out: gamma = 0.530303.., rho = 0.227272.., beta = 0.242424..
    assert torch.allclose(got, torch.tensor([[0.4409091, 0.2439394, 0.3151515]]), atol=1e-6)
    assert torch.allclose(got.sum(1), torch.ones(1))


def test_class_average_reading() -> None:
    s_r = torch.tensor([[0.6, 0.4], [0.2, 0.8]])  # per-class means 0.4, 0.6 -> max 0.6
    s_f = torch.tensor([[0.5, 0.5], [0.5, 0.5]])  # 0.5
    s_a = torch.tensor([[1.0, 0.0], [1.0, 0.0]])  # 1.0
    denom = 0.5 * 0.6 + 0.3 * 0.5 + 0.2 * 1.0
    gamma, rho = 0.3 / denom, 0.15 / denom
    got = adaptive_weighted_fusion(s_r, s_f, s_a, confidence="class")
    assert torch.allclose(got, gamma * s_r + rho * s_f + (1 - gamma - rho) * s_a)


def test_confident_stream_dominates() -> None:
    sure = torch.tensor([[0.98, 0.01, 0.01]])
    unsure = torch.tensor([[0.34, 0.33, 0.33]])
    fused = adaptive_weighted_fusion(unsure, unsure, sure, weights=(0.4, 0.4, 0.2))
    plain = 0.4 * unsure + 0.4 * unsure + 0.2 * sure
    assert fused[0, 0] > plain[0, 0]  # the adaptive weights shift mass to the confident stream


def test_shape_mismatch_and_unknown_reading() -> None:
    with pytest.raises(ValueError, match="share"):
        adaptive_weighted_fusion(torch.rand(2, 3), torch.rand(2, 4), torch.rand(2, 3))
    with pytest.raises(ValueError, match="confidence"):
        adaptive_weighted_fusion(torch.rand(2, 3), torch.rand(2, 3), torch.rand(2, 3),
                                 confidence="mean")  # type: ignore[arg-type]


def test_conv_sum_fusion_is_conv_plus_first_input() -> None:
    fusion = ConvSumFusion(4)
    u, v = torch.randn(2, 4, 5, 5), torch.randn(2, 4, 5, 5)
    with torch.no_grad():
        fusion.reduce.weight.zero_()
        fusion.reduce.bias.zero_()
    assert torch.equal(fusion(u, v), u)  # eq. 8 with zero filters and bias leaves f_u
    with torch.no_grad():
        fusion.reduce.weight.copy_(torch.cat([torch.zeros(4, 4), torch.eye(4)], 1)[..., None, None])
    assert torch.allclose(fusion(u, v), u + v)  # filters that pick f_v give the plain sum
