"""Reversible down-/up-sampling (paper §IV-B)."""

from __future__ import annotations

import pytest
import torch

from pgsl.client.sampling import downsample
from pgsl.layers import upsample


@pytest.mark.parametrize("channels", [1, 3])
def test_downsample_shape_and_exact_inverse(channels: int, device: torch.device) -> None:
    x = torch.rand(5, channels, 28, 36, device=device)
    sal = torch.rand(5, 1, 28, 36, device=device)
    out = downsample(x, sal)
    assert out.shape == (5, 4 * channels + 1, 14, 18)
    # the image part comes back bit for bit
    assert torch.equal(upsample(out[:, : 4 * channels]), x)
    # the last channel is the 2x2 average of the saliency map
    assert torch.allclose(out[:, -1], sal.unfold(2, 2, 2).unfold(3, 2, 2).mean((-1, -2))[:, 0])


def test_polyphase_layout() -> None:
    x = torch.arange(16.0).view(1, 1, 4, 4)
    out = downsample(x, torch.zeros(1, 1, 4, 4))
    # channel 0 holds the even-row even-column pixels
    assert out[0, 0].tolist() == [[0.0, 2.0], [8.0, 10.0]]


@pytest.mark.parametrize(
    "x, sal, message",
    [
        (torch.rand(2, 1, 27, 28), torch.rand(2, 1, 27, 28), "even"),
        (torch.rand(2, 1, 28, 28), torch.rand(2, 2, 28, 28), "saliency"),
        (torch.rand(2, 1, 28, 28), torch.rand(3, 1, 28, 28), "does not match"),
        (torch.rand(1, 28, 28), torch.rand(1, 1, 28, 28), "(B, C, H, W)"),
    ],
)
def test_bad_shapes(x: torch.Tensor, sal: torch.Tensor, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        downsample(x, sal)


def test_upsample_rejects_channels_not_multiple_of_four() -> None:
    with pytest.raises(ValueError, match="4k"):
        upsample(torch.rand(1, 6, 3, 3))
