"""The server's three stream tails (paper §IV-D, §IV-F; docs/design.md#the-pgsl-pipeline).

Each tail is conv3 ... conv7 (Conv3x3 -> ReLU -> BN, ``width`` channels), with dropout after every
third conv layer *of the whole network* (conv3 and conv6; conv1-2 are on the client), then the
pooling step the paper omits but any image size needs (adaptive average pooling to ``pool x pool``),
then FC -> ReLU -> FC.
"""

from __future__ import annotations

from torch import Tensor, nn

from pgsl.layers import Dropout, conv_block

FIRST_SERVER_CONV = 3
LAST_CONV = 7


class StreamTail(nn.Module):
    """``(B, in_channels, H, W)`` -> ``(B, num_classes)`` logits."""

    def __init__(
        self, in_channels: int, num_classes: int, *, width: int = 64, dropout: float = 0.25,
        pool: int = 4, hidden: int = 128,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for index in range(FIRST_SERVER_CONV, LAST_CONV + 1):
            layers.append(conv_block(c, width))
            if index % 3 == 0:
                layers.append(Dropout(dropout))
            c = width
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(pool), nn.Flatten())
        self.classifier = nn.Sequential(
            nn.Linear(width * pool * pool, hidden), nn.ReLU(), nn.Linear(hidden, num_classes)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))
