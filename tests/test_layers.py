"""Shared building blocks: the CPU-fast dropout is nn.Dropout in distribution, scaling and gradient;
the channels-last layout changes no number."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pgsl.attacks.decoder import Decoder
from pgsl.layers import Dropout, channels_last
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


def test_channels_last_decoder_trains_like_nchw() -> None:
    torch.manual_seed(0)
    nhwc = Decoder(16, (1, 28, 28), 8)  # channels-last from its constructor
    nchw = Decoder(16, (1, 28, 28), 8).to(memory_format=torch.contiguous_format)
    nchw.load_state_dict(nhwc.state_dict())
    assert nhwc.body[0][0].weight.is_contiguous(memory_format=torch.channels_last)
    assert not nchw.body[0][0].weight.is_contiguous(memory_format=torch.channels_last)
    z, target = torch.randn(6, 16, 14, 14), torch.rand(6, 1, 28, 28)
    for net in (nhwc, nchw):
        opt = torch.optim.SGD(net.parameters(), lr=0.1)
        for _ in range(3):
            loss = nn.functional.mse_loss(net(z), target)
            opt.zero_grad()
            loss.backward()
            opt.step()
    for a, b in zip(nhwc.state_dict().values(), nchw.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert channels_last(nchw) is nchw
    assert nchw.head[1].weight.is_contiguous(memory_format=torch.channels_last)
