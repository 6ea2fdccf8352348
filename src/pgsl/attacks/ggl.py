"""Gradient inversion with a learned image prior: GGL (Li, Gu, Wang, Chen & Zhu, CVPR 2022).

The leak is DLG's (:class:`~pgsl.attacks.dlg.GradientLeak`: one victim's parameter gradients and
the attacker's white-box model). DLG and iDLG search pixel space, where on ReLU + BatchNorm
networks the matching objective is non-smooth and badly conditioned; GGL searches the latent space
of a generative model of images like the victim's instead, with a gradient-free evolution
strategy, so the search stays on plausible images and needs no second-order gradients.

Contract: :func:`train_prior` fits an :class:`ImagePrior` (``(B, C, H, W)`` in [0, 1] <->
``(B, latent)``) to the attacker's auxiliary images; :func:`ggl_inversion` returns one image
``(C, H, W)`` in [0, 1] and one label per leaked gradient set, stacked as ``(N, C, H, W)`` and
``(N,)``. Our reading, for a split-learning adversary:

- the generative model is an autoencoder trained on the attacker's auxiliary images (GGL uses a
  GAN trained on public data; the decoder plays that role, the encoder gives starting points);
- the label is iDLG's analytic one (:func:`~pgsl.attacks.dlg.idlg_label`);
- the search starts at the latent code of the auxiliary image whose gradients, under that label,
  are closest to the leak, and runs a separable (mu, lambda) evolution strategy (GGL: CMA-ES) on
  the per-layer cosine distance of Geiping et al. (2020),
  ``1 - mean_i cos(grad_i(decode(z)), g_i)`` over the parameter tensors ``i``;
- the answer is the decoded best code.

Measured behaviour: docs/findings.md#ggl (and, for pixel-space matching on this network,
docs/findings.md#dlg-and-idlg)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pgsl.attacks.base import Attack, Budget, Reconstruction
from pgsl.attacks.base import Budget as BaseBudget
from pgsl.attacks.dlg import GradientLeak, idlg_label
from pgsl.attacks.view import AttackerView, Need


class ImagePrior(nn.Module):
    """A small convolutional autoencoder, ``(B, C, H, W)`` in [0, 1] <-> ``(B, latent)``."""

    def __init__(self, image_shape: tuple[int, int, int], latent: int = 32) -> None:
        super().__init__()
        c, h, w = image_shape
        if h % 4 or w % 4:
            raise ValueError(f"the image prior needs sides divisible by 4, got {h}x{w}")
        self.image_shape, self.latent = image_shape, latent
        self.encoder = nn.Sequential(
            nn.Conv2d(c, 32, 4, 2, 1), nn.ReLU(), nn.Conv2d(32, 64, 4, 2, 1), nn.ReLU(),
            nn.Flatten(), nn.Linear(64 * (h // 4) * (w // 4), latent),
        )
        self.decoder = nn.Sequential(
            nn.Linear(latent, 64 * (h // 4) * (w // 4)), nn.ReLU(), nn.Unflatten(1, (64, h // 4, w // 4)),
            nn.ConvTranspose2d(64, 32, 4, 2, 1), nn.ReLU(), nn.ConvTranspose2d(32, c, 4, 2, 1),
            nn.Sigmoid(),
        )

    def encode(self, x: Tensor) -> Tensor:
        return self.encoder(x)

    def decode(self, z: Tensor) -> Tensor:
        return self.decoder(z)


def train_prior(images: Tensor, *, latent: int = 32, epochs: int = 40, batch_size: int = 64,
                lr: float = 1e-3, seed: int = 0) -> ImagePrior:
    """Fit :class:`ImagePrior` to ``images`` ``(N, C, H, W)`` in [0, 1] by MSE; returned frozen."""
    if images.ndim != 4 or len(images) == 0:
        raise ValueError(f"train_prior needs a non-empty (N, C, H, W) batch, got {tuple(images.shape)}")
    prior = ImagePrior(tuple(images.shape[1:]), latent).to(images.device)  # type: ignore[arg-type]
    opt = torch.optim.Adam(prior.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(len(images), generator=g).split(batch_size):
            batch = images[idx.to(images.device)]
            opt.zero_grad(set_to_none=True)
            F.mse_loss(prior.decode(prior.encode(batch)), batch).backward()
            opt.step()
    prior.eval().requires_grad_(False)
    return prior


def gradient_distance(leak: GradientLeak, target: Sequence[Tensor], x: Tensor, label: Tensor) -> float:
    """Mean over parameter tensors of ``1 - cos(grad(x), leaked grad)`` (Geiping et al. 2020)."""
    loss = F.cross_entropy(leak.logits(x), label)
    grads = torch.autograd.grad(loss, leak.params)
    cos = [F.cosine_similarity(g.flatten(), t.flatten(), dim=0) for g, t in zip(grads, target, strict=True)]
    return float(1.0 - torch.stack(cos).mean())


def _invert_one(leak: GradientLeak, target: Sequence[Tensor], prior: ImagePrior, starts: Tensor,
                start_codes: Tensor, population: int, generations: int,
                g: torch.Generator) -> tuple[Tensor, Tensor]:
    device = starts.device
    label = torch.tensor([idlg_label(target[-1])], device=device)
    dist = torch.tensor([gradient_distance(leak, target, s[None], label) for s in starts])
    best = int(dist.argmin())
    best_d, best_z = float(dist[best]), start_codes[best].clone()
    mean, sigma = best_z.clone(), 0.5 * start_codes.std(0).clamp(min=1e-3)
    elite = max(2, population // 4)
    with torch.no_grad():
        for _ in range(generations):
            z = mean + sigma * torch.randn((population, len(mean)), generator=g).to(device)
            images = prior.decode(z)
            with torch.enable_grad():
                d = torch.tensor([gradient_distance(leak, target, x[None], label) for x in images])
            order = d.argsort()[:elite]
            if float(d[order[0]]) < best_d:
                best_d, best_z = float(d[order[0]]), z[order[0]].clone()
            chosen = z[order.to(device)]
            mean = chosen.mean(0)
            sigma = 0.8 * sigma + 0.2 * chosen.std(0)
        return prior.decode(best_z[None]), label


def ggl_inversion(leak: GradientLeak, prior: ImagePrior, aux_images: Tensor, *, population: int = 32,
                  generations: int = 40, starts: int = 256, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Reconstruct every victim of ``leak``; returns images ``(N, C, H, W)`` in [0, 1] and the
    labels used (iDLG's). ``starts`` auxiliary images are tried as starting points."""
    if population < 2 or generations < 0:
        raise ValueError("population must be >= 2 and generations >= 0")
    g = torch.Generator().manual_seed(seed)
    pool = aux_images[torch.randperm(len(aux_images), generator=g)[:starts].to(aux_images.device)]
    with torch.no_grad():
        codes = prior.encode(pool)
    out = [_invert_one(leak, t, prior, pool, codes, population, generations, g) for t in leak.gradients]
    return torch.cat([o[0] for o in out]), torch.cat([o[1] for o in out])


@dataclass(frozen=True)
class GGLBudget(Budget):
    victims: int | None = 32
    prior_epochs: int = 40  # the auxiliary-image autoencoder's training
    population: int = 32
    generations: int = 40
    starts: int = 256  # auxiliary images tried as the search's start


class GGL(Attack):
    """Gradient inversion with a learned image prior (Li et al., GGL, CVPR 2022): an evolution
    strategy in an autoencoder's latent space on the per-layer gradient cosine."""

    name = "ggl"
    title = "GGL (gradient matching, learned image prior)"
    needs = frozenset({Need.GRADIENTS, Need.WHITE_BOX, Need.AUX})
    Budget = GGLBudget

    def __init__(self, budget: BaseBudget | None = None, *, seed: int = 0) -> None:
        super().__init__(budget, seed=seed)
        # the prior depends only on the auxiliary images: trained once per image set
        self._priors: dict[tuple[object, ...], ImagePrior] = {}

    def reconstruct(self, view: AttackerView) -> Reconstruction:
        b = self.budget
        assert isinstance(b, GGLBudget) and view.leak is not None
        aux = view.aux_images
        key = (tuple(aux.shape), str(aux.device), float(aux.double().sum()), b.prior_epochs)
        if key not in self._priors:
            self._priors[key] = train_prior(aux, epochs=b.prior_epochs, seed=self.seed)
        images, labels = ggl_inversion(view.leak, self._priors[key], aux, population=b.population,
                                       generations=b.generations, starts=b.starts, seed=self.seed)
        return Reconstruction(images, labels)
