"""Building blocks shared by both sides of the cut (no party logic here)."""

from __future__ import annotations

from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

M = TypeVar("M", bound=nn.Module)


def channels_last(module: M) -> M:
    """``module`` with its 4-d parameters in the channels-last (NHWC) layout, in place.

    oneDNN (CPU) and cuDNN convolve NHWC natively; in NCHW every convolution reorders its operands
    first. Activations follow the weights' layout, so the whole network runs NHWC from its first
    convolution on; the numbers are those of NCHW up to the order of float sums. Training the
    attacks' decoders (32-64 channels) took 0.75-0.85x the time per step on the 2-core CPU
    (torch 2.13). Later ``.to(device)`` calls keep the layout.
    """
    return module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # not in the stubs


def saved_buffers(module: nn.Module) -> dict[str, Tensor]:
    """Copies of ``module``'s buffers (BatchNorm's running statistics, which a training-mode
    forward pass updates), to put back with :func:`restore_buffers`."""
    return {name: b.clone() for name, b in module.named_buffers()}


@torch.no_grad()
def restore_buffers(module: nn.Module, saved: dict[str, Tensor]) -> None:
    """Put back the buffers :func:`saved_buffers` copied, in place."""
    for name, b in module.named_buffers():
        b.copy_(saved[name])


def conv_block(c_in: int, c_out: int) -> nn.Sequential:
    """Conv3x3 -> ReLU -> BatchNorm, the paper's layer (§IV-F), in that order."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(c_out))


class Dropout(nn.Dropout):
    """``nn.Dropout`` with a faster mask on a CPU; the same distribution and scaling.

    PyTorch's CPU dropout draws its mask with ``bernoulli_``, which is slow: forward + backward of
    a 128x16x28x28 batch took 11.5 ms against 5.5 ms for a uniform draw, a compare and a multiply
    (44 vs 19 ms at 64 channels; 2 threads, torch 2.13). In PGSL's CPU training step dropout was
    23% of the time (``bench/train.py --profile``). Each element is kept with probability
    ``1 - p`` and scaled by ``1 / (1 - p)``, as ``nn.Dropout``; on CUDA it is ``nn.Dropout``
    (a fused kernel).
    """

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or x.device.type != "cpu" or not 0.0 < self.p < 1.0:
            return super().forward(x)
        mask = torch.empty_like(x).uniform_().ge_(self.p).mul_(1.0 / (1.0 - self.p))
        return x.mul_(mask) if self.inplace else x * mask


def upsample(maps: Tensor) -> Tensor:
    """``pixel_shuffle`` by 2 (§IV-B): ``(B, 4k, h, w)`` -> ``(B, k, 2h, 2w)``.

    The exact inverse of the client's ``pixel_unshuffle``; on the server it lifts the activations
    and the recovered maps back to image resolution.
    """
    if maps.ndim != 4 or maps.shape[1] % 4:
        raise ValueError(f"expected (B, 4k, h, w) maps, got {tuple(maps.shape)}")
    return F.pixel_shuffle(maps, 2)
