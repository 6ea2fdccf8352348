"""A convolutional decoder from observed maps ``(K, h, w)`` to an image ``(C, H, W)`` in [0, 1].

Shared by the learned inversion attack (MIA) and the GAN attack's generator.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from pgsl.layers import channels_last


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2))


class Decoder(nn.Module):
    def __init__(self, in_channels: int, image_shape: tuple[int, int, int], width: int = 64) -> None:
        super().__init__()
        self.image_shape = image_shape
        self.body = nn.Sequential(_block(in_channels, width), _block(width, width), _block(width, width))
        self.head = nn.Sequential(_block(width, width // 2),
                                  nn.Conv2d(width // 2, image_shape[0], 3, padding=1))
        channels_last(self)

    def forward(self, z: Tensor) -> Tensor:
        h = self.body(z)
        size = self.image_shape[1:]
        if tuple(h.shape[-2:]) != size:
            h = F.interpolate(h, size=size, mode="bilinear", align_corners=False)
        return self.head(h).sigmoid()
