"""The feature-space hijacking attack, FSHA (Pasquini, Ateniese & Bernaschi, CCS 2021).

Threat model: a *malicious* server. It holds auxiliary images of the client's domain (never the
client's), answers every training step, and instead of the task's gradient it returns the gradient
of an adversarial loss that drags the client's segment towards a feature space the server chose
and can invert. Nothing right of the cut protects the client then (PGSL's recovery and streams are
never run): only what the client does before the cut counts.

The server trains three networks of its own at every step of the client (paper §3.1, Alg. 1)::

    aux x'  --pilot f~-->  z'  --decoder f~^-1-->  x'~     min ||x'~ - x'||^2       (pilot, decoder)
    D(z') vs D(z)                                          WGAN-GP critic           (D)
    client a = f(x)  <==  d/da mean D(a)                   the hijack              (returned)

so the client's segment learns to map its images into the pilot's feature space, where the
decoder inverts them: ``reconstruct(a) = decoder(a)``.

Our reading: the networks are sized for the cut's shape (the pilot and the decoder have the
client's down-sampling factor; a small convolutional critic), with Adam learning rates suited to a
few hundred steps rather than the paper's 10^4 (``FSHAParams``); the client keeps its own
optimiser and defence, so PGSL's pixel attack and down-sampling, noise and NoPeek's decorrelation
loss all act on the hijacked training exactly as on an honest one. The server answers the client
with plausible statistics (its streams' losses are the critic's score, nothing correct), since an
honest client cannot check them.

The server is a :class:`~pgsl.split.channel.Channel` endpoint, so it runs behind the in-process
channel and behind the gRPC service alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pgsl.split.messages import Activations, Gradient, Scores, StreamStats

__all__ = ["FSHA", "FSHAParams"]


@dataclass(frozen=True)
class FSHAParams:
    """The malicious server's knobs: Adam learning rates of the pilot + decoder and of the critic,
    the critic's gradient-penalty weight, the networks' width. The paper's (1e-5, 1e-4, 500) are
    tuned for 10^4 steps; these reach its regime in a few hundred on MNIST (measured on a vanilla
    quick-preset client: MSE 0.042, SSIM 0.63 after 300 steps, the mean image 0.070, 0.34)."""

    lr_autoencoder: float = 1e-3
    lr_critic: float = 1e-3
    gp: float = 10.0
    hidden: int = 32

    def __post_init__(self) -> None:
        if not (self.lr_autoencoder > 0 and self.lr_critic > 0 and self.gp >= 0 and self.hidden >= 1):
            raise ValueError(f"FSHA needs positive learning rates and width and gp >= 0, got {self}")


def _pilot(channels: int, width: int, stride: int, hidden: int) -> nn.Module:
    """Images ``(B, C, H, W)`` -> the chosen feature space ``(B, width, H/stride, W/stride)``."""
    return nn.Sequential(
        nn.Conv2d(channels, hidden, 3, stride, 1), nn.LeakyReLU(0.2),
        nn.Conv2d(hidden, hidden, 3, 1, 1), nn.LeakyReLU(0.2),
        nn.Conv2d(hidden, width, 3, 1, 1))


def _decoder(width: int, channels: int, stride: int, hidden: int) -> nn.Module:
    """Features ``(B, width, h, w)`` -> images ``(B, C, h*stride, w*stride)`` in [0, 1]."""
    up: nn.Module = (nn.ConvTranspose2d(width, hidden, 4, 2, 1) if stride == 2
                     else nn.Conv2d(width, hidden, 3, 1, 1))
    return nn.Sequential(
        up, nn.LeakyReLU(0.2), nn.Conv2d(hidden, hidden, 3, 1, 1), nn.LeakyReLU(0.2),
        nn.Conv2d(hidden, channels, 3, 1, 1), nn.Sigmoid())


def _critic(width: int, hidden: int) -> nn.Module:
    """Features ``(B, width, h, w)`` -> one real score each ``(B,)`` (no normalisation: WGAN-GP)."""
    return nn.Sequential(
        nn.Conv2d(width, hidden, 3, 2, 1), nn.LeakyReLU(0.2),
        nn.Conv2d(hidden, 2 * hidden, 3, 2, 1), nn.LeakyReLU(0.2),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * hidden, 1), nn.Flatten(0))


class FSHA(nn.Module):
    """A malicious server: answers :class:`Activations` with the hijacking gradient.

    Args:
        aux_images: ``(M, C, H, W)`` in [0, 1], the server's own images of the client's domain.
        width: channels of the activations at the cut; ``num_classes``: the task's classes (what
            an honest server would report); ``streams``: how many streams the client expects.
        seed: seeds the networks and the order of the auxiliary batches.
    """

    def __init__(self, aux_images: Tensor, *, width: int, num_classes: int, streams: int = 1,
                 params: FSHAParams | None = None, seed: int = 0,
                 device: torch.device | str = "cpu") -> None:
        super().__init__()
        if aux_images.ndim != 4 or len(aux_images) < 2:
            raise ValueError(f"FSHA needs at least two auxiliary images (M, C, H, W), got "
                             f"{tuple(aux_images.shape)}")
        self.params = params or FSHAParams()
        self.device = torch.device(device)
        self.width, self.num_classes, self.streams = width, num_classes, streams
        self.aux = aux_images.to(self.device)
        self._g = torch.Generator().manual_seed(seed)
        self._seed = seed
        self._order: list[Tensor] = []
        self.pilot: nn.Module | None = None  # built at the first message: the cut's shape
        self.decoder: nn.Module | None = None
        self.critic: nn.Module | None = None
        self.steps = 0
        self.log: list[dict[str, float]] = []

    def _build(self, shape: tuple[int, int, int]) -> None:
        c, h, _ = (int(s) for s in self.aux.shape[1:])
        width, fh, fw = shape
        stride = h // fh
        if stride not in (1, 2) or fh * stride != h or fw * stride != self.aux.shape[-1]:
            raise ValueError(f"FSHA supports cuts at 1x or 1/2 the image size, got maps {fh}x{fw} "
                             f"for images {h}x{self.aux.shape[-1]}")
        p = self.params
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(self._seed)
            self.pilot = _pilot(c, width, stride, p.hidden).to(self.device)
            self.decoder = _decoder(width, c, stride, p.hidden).to(self.device)
            self.critic = _critic(width, p.hidden).to(self.device)
        ae = [*self.pilot.parameters(), *self.decoder.parameters()]
        self.opt_ae = torch.optim.Adam(ae, lr=p.lr_autoencoder)
        self.opt_critic = torch.optim.Adam(self.critic.parameters(), lr=p.lr_critic, betas=(0.5, 0.9))

    def _aux_batch(self, n: int) -> Tensor:
        """The next ``n`` auxiliary images of a seeded endless shuffle."""
        out: list[Tensor] = []
        while sum(len(t) for t in out) < n:
            if not self._order:
                self._order = list(torch.randperm(len(self.aux), generator=self._g).split(n))
            out.append(self._order.pop(0))
        return self.aux[torch.cat(out)[:n].to(self.device)]

    def _penalty(self, real: Tensor, fake: Tensor) -> Tensor:
        """WGAN-GP (Gulrajani et al. 2017): ``(||grad D(mix)|| - 1)^2`` on random mixtures."""
        assert self.critic is not None
        eps = torch.rand((len(real), 1, 1, 1), device=real.device)
        mix = (eps * real + (1 - eps) * fake).requires_grad_(True)
        (grad,) = torch.autograd.grad(self.critic(mix).sum(), mix, create_graph=True)
        return (grad.flatten(1).norm(dim=1) - 1).square().mean()

    def train_step(self, msg: Activations) -> Gradient:
        """One step of Alg. 1: autoencoder and critic updates, then the hijacking gradient."""
        a = msg.activations
        if not isinstance(a, Tensor) or a.ndim != 4 or a.shape[1] != self.width or not len(a):
            raise ValueError(f"step {msg.step}: expected activations (B>0, {self.width}, h, w)")
        if self.pilot is None:
            self._build((int(a.shape[1]), int(a.shape[2]), int(a.shape[3])))
        assert self.pilot is not None and self.decoder is not None and self.critic is not None
        z = a.detach().to(self.device, torch.float32).requires_grad_(True)
        x_aux = self._aux_batch(len(z))
        self.train()

        z_aux = self.pilot(x_aux)
        ae_loss = F.mse_loss(self.decoder(z_aux), x_aux)
        self.opt_ae.zero_grad(set_to_none=True)
        ae_loss.backward()
        self.opt_ae.step()

        real = z_aux.detach()
        if real.shape != z.shape:
            raise ValueError(f"step {msg.step}: the client's maps {tuple(z.shape)} do not match "
                             f"the pilot's {tuple(real.shape)}")
        critic_loss = self.critic(real).mean() - self.critic(z.detach()).mean()
        critic_loss = critic_loss + self.params.gp * self._penalty(z.detach(), real)
        self.opt_critic.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.opt_critic.step()

        # the client's loss: look like the pilot's features to the critic
        hijack = self.critic(z).mean()
        (grad,) = torch.autograd.grad(hijack, z)
        self.steps += 1
        self.log.append({"step": float(self.steps), "autoencoder": float(ae_loss.detach()),
                         "critic": float(critic_loss.detach()), "hijack": float(hijack.detach())})
        stats = StreamStats(losses=(float(hijack.detach()),) * self.streams,
                            correct=(0,) * (self.streams + 1), count=len(z))
        return Gradient(step=msg.step, grad=grad.to(a.device), stats=stats)

    @torch.no_grad()
    def predict(self, msg: Activations) -> Scores:
        """Uniform scores: the hijacked server has no classifier."""
        n = len(msg.activations)
        uniform = torch.full((n, self.num_classes), 1.0 / self.num_classes)
        return Scores(msg.step, (uniform,) * self.streams, uniform)

    @torch.no_grad()
    def reconstruct(self, activations: Tensor) -> Tensor:
        """The decoder's images ``(N, C, H, W)`` in [0, 1] for maps the client sent."""
        if self.decoder is None:
            raise ValueError("FSHA has not seen a training step yet: nothing to invert with")
        self.eval()
        return torch.cat([self.decoder(a.to(self.device)) for a in activations.split(256)])
