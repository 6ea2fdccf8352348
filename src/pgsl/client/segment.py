"""The client's model segment: conv1, conv2 of the 7-conv network (paper §IV-F)."""

from __future__ import annotations

from torch import Tensor, nn

from pgsl.layers import conv_block


class ClientSegment(nn.Module):
    """``(B, in_channels, h, w)`` -> ``(B, width, h, w)``: what crosses the cut."""

    def __init__(self, in_channels: int, width: int = 64) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.conv1 = conv_block(in_channels, width)
        self.conv2 = conv_block(width, width)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"client segment expects (B, {self.in_channels}, h, w), got {tuple(x.shape)}"
            )
        return self.conv2(self.conv1(x))
