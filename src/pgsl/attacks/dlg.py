"""Gradient inversion: DLG (Zhu, Liu & Han 2019) and iDLG (Zhao, Mopuri & Bilen 2020).

The leak: the parameter gradients of one victim's training step -- the client segment's (shared
when client weights are aggregated across sites) and the server stream's own (the attacker *is* the
server). The attacker knows the architecture and the weights; it optimises a dummy image (and, in
DLG, a soft label) with L-BFGS so that its gradients match the leaked ones. iDLG first reads the
label off the last layer: with cross-entropy after a ReLU layer, ``dL/dW_k = (p_k - [k = y]) h``
with ``h >= 0``, so only the true class's row sums to a negative number.

One victim per optimisation, as in both papers (batch size 1). Both papers attack LeNets with
sigmoid activations (DLG replaces ReLU "because it needs twice-differentiable models"); there a
victim is recovered almost exactly (our test). On ReLU networks with BatchNorm and max-pooling --
PGSL's, and the vanilla split's -- the matching landscape is full of poor local minima: we
measured gradient distances that stall far above zero while the dummy image drifts away from the
victim, with L-BFGS, with Adam, and with the cosine distance of Geiping et al. (2020), at the
trained and at the initial weights. The table reports what the published attack achieves there.

Also measured (quick MNIST vanilla split, 4 victims, mean-image baseline MSE 0.05-0.07), none
better than the baseline: Geiping's recipe (signed Adam, per-layer cosine, TV 1e-4, step decay;
lr 0.1/0.01/0.003, 300-2,000 steps, from noise and from the auxiliary mean image): MSE 0.05-0.25;
the first FC layer's analytic leak (its weight-row / bias gradient ratio gives the pooled
features exactly, 2e-8) matched alone or with the gradients: 0.05-0.08 -- 256 pooled numbers do
not pin a 784-pixel image; softplus (beta 10, 50) in place of ReLU for a smooth landscape: worse.
Started *at the victim plus noise* (MSE 0.006), signed Adam only halves the error and L-BFGS on
a sigmoid-boxed image stops at once (its line search fails; MSE 0.007-0.009): the matching
objective is non-smooth and badly conditioned near its minimum, not only multi-modal. Coarse to
fine (7 -> 14 -> 28 pixels, Adam on a sigmoid-boxed image) from the mean image: 0.04-0.10.

Why, measured (session 5, same runs, float64 attacker model):
- The leak *does* pin the image locally: the Jacobian of the per-layer-normalised leaked gradient
  (48,490 numbers) with respect to the 784 pixels, taken at the victim, has full column rank
  (singular values 47 ... 9e-4, no zero column), so no flat direction hides the victim.
- But the basin is tiny and the objective jumps: ReLU' enters the gradient, so ``g(x)`` is
  discontinuous wherever a unit changes sign. Noise of std 0.1 on the victim (MSE 0.005) already
  makes each layer's normalised distance ~1; from there Levenberg-Marquardt with the exact
  (finite-difference) Jacobian lowers the distance 34 -> 3 in 8 steps while the MSE *rises*
  0.007 -> 0.019, and L-BFGS with a homotopy that smooths ReLU' to sigmoid(z/T), T = 0.1 -> 0,
  only moves 0.0047 -> 0.0038 from that start, 0.059 -> 0.047 (SSIM 0.36, baseline 0.33) from the
  auxiliary image with the closest gradients, and 0.26 from noise at the run's *initial* weights.
- Wrong images match well: signed Adam on Geiping's cosine reaches distance 0.02-0.2 at MSE 0.15.
So pixel-space matching needs a start inside a basin narrower than the 0.1-noise ball; the
paper's own DLG MSE on the vanilla split (0.12) is also worse than the mean image (0.059-0.069)
if its pixels are in [0, 1].
What does work on these networks is searching a learned image prior's latent space instead of
pixels: GGL, ``attacks/ggl.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class GradientLeak:
    """What leaks from the victims' training steps, and the attacker's white-box model of them.

    Attributes:
        gradients: per victim, the leaked gradients, in the order of ``params``.
        params: the parameters those gradients belong to; the last one is the final layer's weight.
        logits: a differentiable map from an image ``(1, C, H, W)`` to the logits whose
            cross-entropy produced the leak (the client's discrete pixel attack left out). It may
            raise ``FloatingPointError`` when an iterate drives it out of the finite range.
        num_classes: number of classes of that loss.
    """

    gradients: Sequence[Sequence[Tensor]]
    params: Sequence[Tensor]
    logits: Callable[[Tensor], Tensor]
    num_classes: int


def idlg_label(last_weight_grad: Tensor) -> int:
    """iDLG's analytic label: the class whose last-layer weight gradient row sums lowest."""
    return int(last_weight_grad.sum(dim=-1).argmin())


def _match(leak: GradientLeak, target: Sequence[Tensor], x: Tensor, label: Tensor | None,
           soft: Tensor | None) -> Tensor:
    logits = leak.logits(x)
    if label is not None:
        loss = F.cross_entropy(logits, label)
    else:
        assert soft is not None
        loss = torch.sum(-F.softmax(soft, -1) * F.log_softmax(logits, -1))
    grads = torch.autograd.grad(loss, leak.params, create_graph=True)
    # DLG's squared distance, divided by the leak's own squared norm: a trained model's gradients
    # are tiny, and an unscaled distance stops L-BFGS on its tolerances at the first step
    dist = sum(((g - t) ** 2).sum() for g, t in zip(grads, target, strict=True))
    return dist / sum((t ** 2).sum() for t in target).clamp(min=1e-30)  # type: ignore[union-attr, return-value]


def _invert_one(leak: GradientLeak, target: Sequence[Tensor], image_shape: tuple[int, int, int],
                idlg: bool, steps: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
    device = leak.params[0].device
    x = torch.rand((1, *image_shape), generator=g).to(device).requires_grad_(True)
    label: Tensor | None = None
    soft: Tensor | None = None
    if idlg:
        label = torch.tensor([idlg_label(target[-1])], device=device)
        variables = [x]
    else:
        soft = torch.randn((1, leak.num_classes), generator=g).to(device).requires_grad_(True)
        variables = [x, soft]
    opt = torch.optim.LBFGS(variables, lr=1.0, max_iter=20, history_size=100,
                            line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad(set_to_none=True)
        dist = _match(leak, target, x, label, soft)
        dist.backward()
        return dist.detach()  # L-BFGS needs only the value; the gradient is in .grad

    best, best_loss = x.detach().clone(), float("inf")
    for _ in range(steps):
        try:
            loss = float(opt.step(closure))  # type: ignore[no-untyped-call]
        except FloatingPointError:
            break  # a line-search trial point left the finite range: keep the best iterate
        if not (torch.isfinite(x).all() and loss == loss and loss < float("inf")):
            break  # L-BFGS diverged (seen on CUDA): keep the best finite iterate
        if loss < best_loss:
            best, best_loss = x.detach().clone(), loss
    used = label if label is not None else soft.detach().argmax(-1)  # type: ignore[union-attr]
    return best.clamp(0, 1), used


def gradient_inversion(leak: GradientLeak, image_shape: tuple[int, int, int], *, idlg: bool,
                       steps: int = 30, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Reconstruct every victim of ``leak``; returns images ``(N, C, H, W)`` clamped to [0, 1] and
    the labels used (iDLG: recovered; DLG: the argmax of the optimised soft label)."""
    g = torch.Generator().manual_seed(seed)
    out = [_invert_one(leak, t, image_shape, idlg, steps, g) for t in leak.gradients]
    return torch.cat([o[0] for o in out]), torch.cat([o[1] for o in out])
