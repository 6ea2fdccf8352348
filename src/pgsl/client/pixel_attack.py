"""The client's intentional few-pixel JSMA attack (paper §IV-A, eq. 1; docs/design.md#the-pgsl-pipeline).

Eq. 1 with the correlation conditions inverted (non-targeted): a feature ``i`` is salient when
raising it lowers the true class ``y`` and raises the others,

    dZ_y/dx_i < 0   and   sum_{y' != y} dZ_{y'}/dx_i > 0,     Map_i = -dZ_y/dx_i * sum_{y'} dZ_{y'}/dx_i

We differentiate the *logits* Z, not the softmax: with the softmax, ``sum_{y'!=y} dF_{y'}/dx``
equals ``-dF_y/dx`` exactly and the two conditions collapse into one (Carlini & Wagner make the same
remark; Papernot's and ART's JSMA use logits too). The sum over the other classes is
``d(sum_c Z_c)/dx - dZ_y/dx``, so each step needs two backward passes whatever the class count.

Each step raises the ``pixels_per_step`` most salient unchanged features of every image by
``theta`` (clipped to [0, 1]) until the budget is spent; images with no salient feature left stop
early. The saliency map ``Map`` of the clean image, normalised to [0, 1] per image, is returned too:
PGSL sends it (pooled) beside the image.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn


class PixelAttackResult(NamedTuple):
    """Shapes: ``attacked`` (B, C, H, W); ``saliency`` (B, 1, H, W) in [0, 1]; ``changed`` bool as x."""

    attacked: Tensor
    saliency: Tensor
    changed: Tensor


def pixel_budget(pixels: float, n_features: int) -> int:
    """A count (``pixels >= 1``) or a fraction of the features (``0 < pixels < 1``), at least 1."""
    if pixels <= 0:
        raise ValueError(f"pixel budget must be positive, got {pixels}")
    count = int(round(pixels)) if pixels >= 1 else int(round(pixels * n_features))
    return max(1, min(count, n_features))


def _saliency(model: nn.Module, x: Tensor, y: Tensor, *, raising: bool,
              targeted: bool = False) -> tuple[Tensor, Tensor]:
    """Eq.-1 saliency of every input feature, ``(B, C, H, W)``, >= 0, and the logits at ``x``.

    Untargeted (PGSL's inverted eq. 1), for raising a feature: dZ_y/dx < 0 and sum_{y'} dZ_{y'}/dx
    > 0. Targeted (Papernot et al.'s eq. 1, towards class ``y``): dZ_y/dx > 0 and the others' sum
    < 0. Lowering a feature flips both conditions. The value is ``|dZ_y/dx| * |sum_{y'} dZ_{y'}/dx|``.
    """
    x = x.detach().requires_grad_(True)
    logits = model(x)
    (grad_true,) = torch.autograd.grad(logits.gather(1, y[:, None]).sum(), x, retain_graph=True)
    (grad_all,) = torch.autograd.grad(logits.sum(), x)
    grad_other = grad_all - grad_true
    if raising != targeted:
        salient = (grad_true < 0) & (grad_other > 0)
    else:
        salient = (grad_true > 0) & (grad_other < 0)
    value = torch.where(salient, -grad_true * grad_other, torch.zeros_like(grad_true))
    return value, logits.detach()


def jsma(
    model: nn.Module,
    x: Tensor,
    y: Tensor | None = None,
    *,
    pixels: float = 4,
    pixels_per_step: int = 1,
    theta: float = 1.0,
    targeted: bool = False,
    stop_when_fooled: bool = False,
) -> PixelAttackResult:
    """Batched JSMA: change at most ``pixel_budget(pixels)`` features of each image by ``theta``.

    Args:
        model: a classifier returning logits (kept in eval mode by the caller).
        x: ``(B, C, H, W)`` images in [0, 1].
        y: ``(B,)`` classes: the class to move away from (untargeted; ``None``: the model's own
            prediction) or the target class (``targeted=True``, required).
        pixels: budget, see :func:`pixel_budget`.
        pixels_per_step: features changed per saliency step. Each is ranked on its own; Papernot's
            search over feature *pairs* builds a (features^2) matrix per image and does not scale.
        theta: change per feature; positive raises pixels, negative lowers them.
        targeted: move towards ``y`` instead of away from it.
        stop_when_fooled: an image stops changing once the model's prediction is the target
            (targeted) or no longer ``y`` (untargeted) -- the test-time adversary. PGSL's client
            spends its whole budget instead.
    """
    if x.ndim != 4:
        raise ValueError(f"pixel attack expects (B, C, H, W) images, got {tuple(x.shape)}")
    if theta == 0:
        raise ValueError("theta must be non-zero")
    b = x.shape[0]
    if targeted and y is None:
        raise ValueError("a targeted JSMA needs the target classes")
    if y is not None and tuple(y.shape) != (b,):
        raise ValueError(f"labels must have shape ({b},), got {tuple(y.shape)}")
    n_features = x[0].numel()
    budget = pixel_budget(pixels, n_features)
    per_step = max(1, min(pixels_per_step, budget))
    with torch.enable_grad():
        if y is None:
            with torch.no_grad():
                y = model(x).argmax(1)
        x_adv = x.detach().clone()
        changed = torch.zeros_like(x, dtype=torch.bool)
        active = torch.ones(b, dtype=torch.bool, device=x.device)
        spent = 0
        map0: Tensor | None = None
        while spent < budget:
            # the test-time adversary works on the images not yet fooled only (a working set)
            idx = active.nonzero().squeeze(1) if stop_when_fooled else None
            xs = x_adv if idx is None else x_adv[idx]
            ys = y if idx is None else y[idx]
            sal, logits = _saliency(model, xs, ys, raising=theta > 0, targeted=targeted)
            if map0 is None:  # the first pass sees every image
                map0 = sal.sum(1, keepdim=True)
            if idx is not None:
                pred = logits.argmax(1)
                still = (pred != ys) if targeted else (pred == ys)
                active[idx] = still
                if not still.any():
                    break
                idx, xs, sal = idx[still], xs[still], sal[still]
            done = changed if idx is None else changed[idx]
            room = (xs < 1.0) if theta > 0 else (xs > 0.0)
            sal = torch.where(done | ~room, torch.zeros_like(sal), sal).flatten(1)
            k = min(per_step, budget - spent)
            top_val, top_idx = sal.topk(k, dim=1)
            pick = torch.zeros_like(sal, dtype=torch.bool).scatter_(1, top_idx, top_val > 0)
            if not pick.any():
                break
            pick = pick.view_as(xs)
            moved = torch.where(pick, (xs + theta).clamp(0.0, 1.0), xs)
            if idx is None:
                x_adv, changed = moved, changed | pick
            else:
                x_adv[idx] = moved
                changed[idx] = done | pick
            spent += k
    assert map0 is not None  # the loop runs at least once: budget >= 1
    peak = map0.flatten(1).amax(1).clamp(min=torch.finfo(map0.dtype).tiny)
    saliency = map0 / peak.view(b, 1, 1, 1)
    return PixelAttackResult(x_adv.detach(), saliency.detach(), changed)


def intentional_jsma(
    model: nn.Module,
    x: Tensor,
    y: Tensor | None = None,
    *,
    pixels: float = 4,
    pixels_per_step: int = 1,
    theta: float = 1.0,
) -> PixelAttackResult:
    """PGSL's client attack: untargeted JSMA away from ``y`` that spends its whole budget.

    ``model`` is the client's surrogate (in eval mode); ``y=None`` attacks away from its own
    prediction (inference, where the client has no label). Arguments as in :func:`jsma`.
    """
    return jsma(model, x, y, pixels=pixels, pixels_per_step=pixels_per_step, theta=theta)
