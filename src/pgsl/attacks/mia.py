"""Learned black-box model inversion ("MIA"; He, Zhang & Lee 2019, the paper's ref. [5] / [20]).

The attacker queries the client pipeline with its auxiliary images, trains a decoder on the
(observed maps -> clean image) pairs, and applies it to the victims' observed maps. Against PGSL it
sees exactly what PGSL sends (the perturbed, down-sampled input's activations) and must still
reconstruct the *clean* image.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from pgsl.attacks.decoder import Decoder
from pgsl.attacks.view import AttackerView


def learned_inversion(view: AttackerView, *, epochs: int = 10, batch_size: int = 64, lr: float = 1e-3,
                      width: int = 64, seed: int = 0) -> Tensor:
    """Train a decoder on the auxiliary pairs; return ``(N, C, H, W)`` reconstructions of the victims."""
    torch.manual_seed(seed)
    device = view.observed.device
    decoder = Decoder(view.observed.shape[1], view.image_shape, width).to(device)
    opt = torch.optim.Adam(decoder.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    m = len(view.aux_images)
    decoder.train()
    for _ in range(epochs):
        for idx in torch.randperm(m, generator=g).split(batch_size):
            if len(idx) < 2:
                continue
            idx = idx.to(device)
            loss = F.mse_loss(decoder(view.aux_observed[idx]), view.aux_images[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    decoder.eval()
    with torch.no_grad():
        return torch.cat([decoder(o) for o in view.observed.split(256)])
