"""Gradient inversion with a learned image prior: GGL (Li, Gu, Wang, Chen & Zhu, CVPR 2022).

The leak is DLG's (:class:`~pgsl.attacks.view.GradientLeak`: one victim's parameter gradients and
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
- the label is iDLG's analytic one (:func:`~pgsl.attacks.dlg_settings.idlg_label`);
- the search starts at the latent code of the auxiliary image whose gradients, under that label,
  are closest to the leak, and runs a separable (mu, lambda) evolution strategy (GGL: CMA-ES) on
  the per-layer cosine distance of Geiping et al. (2020),
  ``1 - mean_i cos(grad_i(decode(z)), g_i)`` over the parameter tensors ``i``;
- the answer is the decoded best code.

Batched over victims: each victim runs its own evolution strategy, and one generation's
candidates of every victim (``victims x population`` images) are scored together, ``batch`` at a
time, by per-sample gradients (:mod:`pgsl.optim.per_sample`); the starts by one backward pass
per class (:func:`~pgsl.optim.per_sample.logit_gradient_basis`).

Measured behaviour: docs/findings.md#ggl (and, for pixel-space matching on this network,
docs/findings.md#dlg-and-idlg)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pgsl.attacks.base import Attack, Budget, Reconstruction
from pgsl.attacks.view import AttackerView, GradientLeak, Need
from pgsl.optim.per_sample import logit_gradient_basis, per_sample_grads


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


class _Victims:
    """The victims' leaks stacked per parameter tensor ``(N, numel)``, their iDLG labels, and the
    cosine distance of images to them."""

    def __init__(self, leak: GradientLeak) -> None:
        self.leak = leak
        self.owners = list(leak.owners(range(len(leak.params))).values())
        self.targets = [torch.stack([g[i].detach().flatten() for g in leak.gradients])
                        for i in range(len(leak.params))]
        self.labels = torch.stack([g[-1].detach() for g in leak.gradients]).sum(-1).argmin(-1)

    def distance(self, images: Tensor, rows: Tensor) -> Tensor:
        """``1 - mean_i cos(grad_i, g_i)`` ``(B,)`` of ``images`` ``(B, C, H, W)`` under the
        cross-entropy of victims ``rows`` ``(B,)``'s labels, against their leaks."""
        labels = self.labels[rows]
        grads = per_sample_grads(self.leak.logits, images,
                                 lambda z: F.cross_entropy(z, labels, reduction="none"), self.owners)
        cos = [_cosine((g.flatten(1) * t[rows]).sum(1), g.flatten(1).norm(dim=1), t[rows].norm(dim=1))
               for g, t in zip(grads, self.targets, strict=True)]
        return 1.0 - torch.stack(cos).mean(0)

    def start_distances(self, images: Tensor, chunk: int) -> Tensor:
        """The same distance ``(N, M)`` of every image ``(M, C, H, W)`` for every victim, from the
        logit-gradient basis (:func:`~pgsl.optim.per_sample.logit_gradient_basis`): under
        cross-entropy the gradient is ``G c`` with ``c = softmax - onehot(label)``, so
        ``<G c, g> = c^T G^T g`` and ``||G c||^2 = c^T G^T G c``."""
        k = self.leak.num_classes
        out = []
        for a in images.split(chunk):
            logits, basis = logit_gradient_basis(self.leak.logits, a, self.owners)
            c = logits.double().softmax(1)[:, None] - F.one_hot(self.labels, k).double()[None]
            cos = torch.zeros(len(a), len(self.labels), dtype=torch.float64, device=a.device)
            for b, t in zip(basis, self.targets, strict=True):
                b64, t64 = b.double(), t.double()
                dot = torch.einsum("mnk,mkn->mn", c, b64 @ t64.T)
                sq = torch.einsum("mnk,mkj,mnj->mn", c, b64 @ b64.transpose(1, 2), c)
                cos += _cosine(dot, sq.clamp(min=0).sqrt(), t64.norm(dim=1))
            out.append(1.0 - cos.T / len(self.targets))
        return torch.cat(out, 1)


def _cosine(dot: Tensor, norm_a: Tensor, norm_b: Tensor, eps: float = 1e-8) -> Tensor:
    """``F.cosine_similarity`` from a dot product and the two norms."""
    return dot / (norm_a.clamp(min=eps) * norm_b.clamp(min=eps))


def ggl_inversion(leak: GradientLeak, prior: ImagePrior, aux_images: Tensor, *, population: int = 32,
                  generations: int = 40, starts: int = 256, batch: int = 256,
                  seed: int = 0) -> tuple[Tensor, Tensor]:
    """Reconstruct every victim of ``leak``; returns images ``(N, C, H, W)`` in [0, 1] and the
    labels used ``(N,)`` (iDLG's). ``starts`` auxiliary images are tried as starting points.

    Every victim runs its own evolution strategy (mean and step sizes ``(N, latent)``); each
    generation's ``N x population`` candidates are decoded and scored ``batch`` images at a time
    (per-sample gradients, :mod:`pgsl.optim.per_sample`). A victim's answer does not depend on
    ``batch`` or on the other victims (equal to rounding). The noise is drawn per generation,
    ``(N, population, latent)``, from one generator seeded with ``seed``.
    """
    if population < 2 or generations < 0 or batch < 1:
        raise ValueError("population must be >= 2, generations >= 0 and batch >= 1")
    if not leak.gradients:
        raise ValueError("the leak holds no victims")
    g = torch.Generator().manual_seed(seed)
    device = aux_images.device
    pool = aux_images[torch.randperm(len(aux_images), generator=g)[:starts].to(device)]
    victims = _Victims(leak)
    n_victims = len(victims.labels)
    with torch.no_grad():
        codes = prior.encode(pool)
    dist = victims.start_distances(pool, max(1, batch // leak.num_classes))
    best_d, best = dist.min(1)
    best_z = codes[best]
    mean = best_z.clone()
    sigma = (0.5 * codes.std(0).clamp(min=1e-3)).expand_as(mean).clone()
    elite = max(2, population // 4)
    rows = torch.arange(n_victims, device=device).repeat_interleave(population)
    for _ in range(generations):
        noise = torch.randn((n_victims, population, prior.latent), generator=g).to(device)
        z = mean[:, None] + sigma[:, None] * noise  # (N, population, latent)
        flat = z.flatten(0, 1)
        d = torch.cat([victims.distance(_decode(prior, zc), rc).detach().double()
                       for zc, rc in zip(flat.split(batch), rows.split(batch), strict=True)])
        order = d.view(n_victims, population).argsort(1)[:, :elite]
        top = d.view(n_victims, population).gather(1, order[:, :1]).squeeze(1)
        better = top < best_d
        best_d = torch.where(better, top, best_d)
        best_z = torch.where(better[:, None], z[torch.arange(n_victims, device=device), order[:, 0]], best_z)
        chosen = z.gather(1, order[..., None].expand(-1, -1, z.shape[-1]))
        mean = chosen.mean(1)
        sigma = 0.8 * sigma + 0.2 * chosen.std(1)
    return _decode(prior, best_z), victims.labels


def _decode(prior: ImagePrior, z: Tensor) -> Tensor:
    with torch.no_grad():
        return prior.decode(z)


@dataclass(frozen=True)
class GGLBudget(Budget):
    """GGL's knobs (:func:`train_prior`, :func:`ggl_inversion`). Cost: ``generations x
    population`` per-sample gradient evaluations per victim (first order, every leaked tensor),
    ``batch`` images per pass, plus ``starts`` forward and ``starts x K`` backward passes."""

    victims: int | None = 32
    prior_epochs: int = 40  # the auxiliary-image autoencoder's training
    population: int = 32
    generations: int = 40
    starts: int = 256  # auxiliary images tried as the search's start
    batch: int = 256  # candidate images scored per per-sample-gradient pass (victims x population)


class GGL(Attack[GGLBudget]):
    """Gradient inversion with a learned image prior (Li et al., GGL, CVPR 2022): an evolution
    strategy in an autoencoder's latent space on the per-layer gradient cosine."""

    name = "ggl"
    title = "GGL (gradient matching, learned image prior)"
    needs = frozenset({Need.GRADIENTS, Need.WHITE_BOX, Need.AUX})
    Budget = GGLBudget

    def __init__(self, budget: GGLBudget | None = None, *, seed: int = 0) -> None:
        super().__init__(budget, seed=seed)
        # the prior depends only on the auxiliary images: trained once per image set
        self._priors: dict[tuple[object, ...], ImagePrior] = {}

    def reconstruct(self, view: AttackerView) -> Reconstruction:
        b = self.budget
        assert view.leak is not None  # needs GRADIENTS
        aux = view.aux_images
        key = (tuple(aux.shape), str(aux.device), float(aux.double().sum()), b.prior_epochs)
        if key not in self._priors:
            self._priors[key] = train_prior(aux, epochs=b.prior_epochs, seed=self.seed)
        images, labels = ggl_inversion(view.leak, self._priors[key], aux, population=b.population,
                                       generations=b.generations, starts=b.starts, batch=b.batch,
                                       seed=self.seed)
        return Reconstruction(images, labels)
