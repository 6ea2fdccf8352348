"""GAN-based inversion: a generator conditioned on the observed maps, trained adversarially.

The attacker has what the learned inversion (:mod:`pgsl.attacks.mia`) has -- its auxiliary images
and the client pipeline's answers to them (an :class:`~pgsl.attacks.view.AttackerView`) -- and
:func:`gan_inversion` returns reconstructions ``(N, C, H, W)`` of the victims from their observed
maps ``(N, K, h, w)``. It trains a conditional GAN in the pix2pix manner (Isola et al. 2017) with
DCGAN building blocks (Radford et al. 2016): the generator is the same convolutional decoder from
observed maps to an image; the discriminator sees an image beside the observed maps (resized to
the image) and tells auxiliary pairs from generated ones. The generator's loss is

    MSE(G(obs), x) + adv_weight * BCE(D(G(obs), obs), real)

-- the pixel MSE plus ``adv_weight`` times the non-saturating adversarial loss (SRGAN's content +
adversarial weighting, Ledig et al. 2017) -- so it is pulled towards realistic, sharp images that
still agree with what crossed the cut. ``adv_weight`` is small (1e-2) because the pixel MSE of a
[0, 1] image is itself ~1e-2.

Measured behaviour (a large adversarial weight): docs/findings.md#gan-inversion
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pgsl.attacks.base import Attack, Budget, Reconstruction
from pgsl.attacks.decoder import Decoder
from pgsl.attacks.mia import MIABudget, fitted_decoder, invert
from pgsl.attacks.view import AttackerView, Need
from pgsl.layers import channels_last

__all__ = ["GAN", "Discriminator", "gan_inversion"]


class Discriminator(nn.Module):
    """DCGAN-style critic of (image, observation) pairs: strided 4x4 convolutions, LeakyReLU,
    BatchNorm after the first layer, then a global average and one logit."""

    def __init__(self, image_channels: int, obs_channels: int, width: int = 64) -> None:
        super().__init__()
        self.squeeze = nn.Conv2d(obs_channels, 8, 1)  # many maps -> a few, beside the image
        self.body = nn.Sequential(
            nn.Conv2d(image_channels + 8, width, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(width, 2 * width, 4, 2, 1), nn.BatchNorm2d(2 * width), nn.LeakyReLU(0.2),
            nn.Conv2d(2 * width, 2 * width, 3, 1, 1), nn.BatchNorm2d(2 * width), nn.LeakyReLU(0.2),
        )
        self.head = nn.Linear(2 * width, 1)
        channels_last(self)

    def forward(self, image: Tensor, obs: Tensor) -> Tensor:
        cond = F.interpolate(self.squeeze(obs), size=image.shape[-2:], mode="bilinear",
                             align_corners=False)
        return self.head(self.body(torch.cat([image, cond], 1)).mean((2, 3))).squeeze(1)


def gan_inversion(view: AttackerView, *, epochs: int = 10, batch_size: int = 64, lr: float = 1e-3,
                  adv_weight: float = 1e-2, width: int = 64, seed: int = 0,
                  generator: Decoder | None = None) -> Tensor:
    """Train the conditional GAN on the auxiliary pairs; return ``(N, C, H, W)`` reconstructions.

    ``generator``: a decoder already fitted by MSE (the learned inversion's), trained further here
    -- SRGAN's recipe, MSE pre-training then adversarial training -- instead of a fresh one.
    """
    device = view.observed.device
    k = view.observed.shape[1]
    gen = Decoder(k, view.image_shape, width).to(device) if generator is None else generator
    disc = Discriminator(view.image_shape[0], k, width).to(device)
    opt_g = torch.optim.Adam(gen.parameters(), lr=lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(disc.parameters(), lr=lr, betas=(0.5, 0.999))
    bce = F.binary_cross_entropy_with_logits
    g = torch.Generator().manual_seed(seed)
    gen.train()
    disc.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(view.aux_images), generator=g).split(batch_size):
            if len(idx) < 2:
                continue
            idx = idx.to(device)
            real, obs = view.aux_images[idx], view.aux_observed[idx]
            fake = gen(obs)
            ones, zeros = torch.ones(len(idx), device=device), torch.zeros(len(idx), device=device)
            d_loss = bce(disc(real, obs), ones) + bce(disc(fake.detach(), obs), zeros)
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
            g_loss = F.mse_loss(fake, real) + adv_weight * bce(disc(fake, obs), ones)
            opt_g.zero_grad(set_to_none=True)
            g_loss.backward()
            opt_g.step()
    return invert(gen, view.observed)


@dataclass(frozen=True)
class GANBudget(Budget):
    epochs: int = 5  # adversarial epochs after the generator's MSE pre-training
    pretrain_epochs: int = 10  # MSE pre-training (MIA's decoder, shared when MIA trains on MSE)
    batch_size: int = 64
    lr: float = 1e-3
    adv_weight: float = 1e-2
    width: int = 64


class GAN(Attack[GANBudget]):
    """Conditional GAN inversion, SRGAN's recipe: the generator is the learned inversion's
    decoder (MSE pre-training), then trained against a discriminator on the auxiliary pairs."""

    name = "gan"
    title = "GAN inversion (conditional, adversarial + MSE)"
    needs = frozenset({Need.AUX})
    Budget = GANBudget

    def reconstruct(self, view: AttackerView) -> Reconstruction:
        b = self.budget
        generator = None
        if b.pretrain_epochs > 0:
            pre = MIABudget(epochs=b.pretrain_epochs, batch_size=b.batch_size, lr=b.lr, width=b.width)
            generator = copy.deepcopy(fitted_decoder(view, pre, self.seed))
            torch.manual_seed(self.seed)  # the adversarial phase starts from the same RNG state
        return Reconstruction(gan_inversion(view, epochs=b.epochs, batch_size=b.batch_size, lr=b.lr,
                                            adv_weight=b.adv_weight, width=b.width, seed=self.seed,
                                            generator=generator))
