"""Shared building blocks: the CPU-fast dropout is nn.Dropout in distribution, scaling and gradient."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pgsl.layers import Dropout
from pgsl.server.streams import StreamTail


@pytest.mark.parametrize("p", [0.25, 0.5, 0.9])
def test_keeps_one_minus_p_and_scales_by_its_inverse(p: float) -> None:
    x = torch.full((200, 100, 50), 2.0)
    y = Dropout(p).train()(x)
    kept = y != 0
    n = kept.numel()
    # the kept fraction within 5 standard deviations of 1 - p
    assert abs(float(kept.float().mean()) - (1 - p)) < 5 * ((p * (1 - p)) / n) ** 0.5
    torch.testing.assert_close(y[kept], torch.full_like(y[kept], 2.0 / (1 - p)))
    assert abs(float(y.mean()) - 2.0) < 0.01 * 2.0 / (1 - p)  # unbiased


def test_gradient_is_the_mask_and_eval_is_identity() -> None:
    x = torch.randn(64, 8, 7, 7, requires_grad=True)
    layer = Dropout(0.25).train()
    y = layer(x)
    y.backward(torch.ones_like(y))
    assert x.grad is not None
    expected = torch.where(y != 0, 1 / 0.75, 0.0)
    torch.testing.assert_close(x.grad, expected)
    layer.eval()
    assert torch.equal(layer(x), x)


def test_edge_probabilities_and_seeded_masks() -> None:
    x = torch.randn(4, 3, 5, 5)
    assert torch.equal(Dropout(0.0).train()(x), x)
    assert torch.equal(Dropout(1.0).train()(x), torch.zeros_like(x))
    torch.manual_seed(7)
    a = Dropout(0.3).train()(x)
    torch.manual_seed(7)
    b = Dropout(0.3).train()(x)
    assert torch.equal(a, b)


def test_streams_use_it_and_stay_an_nn_dropout() -> None:
    tail = StreamTail(16, 10, width=8)
    drops = [m for m in tail.modules() if isinstance(m, nn.Dropout)]
    assert len(drops) == 2 and all(isinstance(m, Dropout) for m in drops)  # after conv3 and conv6
