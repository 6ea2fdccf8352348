"""UnSplit: model inversion by an attacker who knows only the client's architecture.

Erdogan, Küpçü & Çiçek, "UnSplit: Data-Oblivious Model Inversion, Model Stealing, and Label
Inference Attacks Against Split Learning", WPES 2022 (arXiv:2108.09033).

Threat model: an honest-but-curious server that knows the client pipeline's architecture but not
its weights, holds no auxiliary data and cannot query the client. It sees only the victims'
observations ``a`` and fits both unknowns at once -- dummy images ``x`` and a clone ``f`` of the
client -- by alternating minimisation of ::

    ||f(x) - a||^2 + tv * TV(x)

``input_iters`` Adam steps on ``x`` (the clone fixed), then ``model_iters`` Adam steps on the
clone's weights (the images fixed; the prior does not depend on them), ``main_iters`` times. Both
optimisers keep their state across rounds. The fitted clone is a stolen copy of the client.

Our reading, where it differs from the authors' recipe (their code: one image at a time, the
clone carried over from image to image; images unconstrained, from a constant 0.5; squared-
difference TV plus an L2 penalty on the pixels; Adam with amsgrad at 1e-3 for both; 1000 rounds of
100 + 100 steps per image):

* the victims come from one client, so one clone is shared by all of them and they are fitted
  together: the data term is each victim's mean squared error summed over victims (a victim's
  image step does not depend on the others), and a clone step sees every victim;
* images stay in [0, 1] through a sigmoid parameterisation, started from a constant grey image
  (or uniform noise) -- never from data; the prior is :func:`total_variation` (mean absolute
  differences), as in activation matching; there is no L2 penalty (it encodes "dark
  background", an MNIST prior, not a property of images);
* the clone can absorb a change of the images' contrast and (nearly) of their offset, so each
  reconstruction is stretched onto [0, 1] at the end (the authors do so for CIFAR-10); see
  :func:`unsplit`;
* learning rates and round counts are sized for a CPU (see :class:`UnSplitBudget`);
* against a defence, the clone is the defence's own code with fresh state (the attacker knows the
  defence, not its weights or random draws), and a server-side target is reached through the
  server's own map with the gradient straight through it (BPDA). PGSL's pixel attack (JSMA on
  its untrained surrogate) runs inside the clone on every image step, as the images change; the
  clone steps, whose images are fixed, encode them once per round -- the same numbers, and on a
  2-core CPU the JSMA is ~30 of the ~35 ms a 64-image step through PGSL's clone takes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from pgsl.attacks.activation_matching import total_variation
from pgsl.attacks.base import Attack, Budget, Reconstruction
from pgsl.attacks.view import AttackerView, Need, PipelineClone

__all__ = ["UnSplit", "UnSplitBudget", "stretch", "unsplit"]

INITS = ("grey", "noise")


def _data_term(pred: Tensor, obs: Tensor) -> Tensor:
    """Each victim's mean squared error, summed over the victims."""
    return (pred - obs).square().flatten(1).mean(1).sum()


def unsplit(clone: PipelineClone, observed: Tensor, image_shape: tuple[int, int, int], *,
            main_iters: int, input_iters: int, model_iters: int, lr_input: float, lr_model: float,
            tv: float, init: str = "grey", normalize: bool = True, batch_size: int = 64) -> Tensor:
    """Reconstruct ``(N, C, H, W)`` images in [0, 1] from their observations ``(N, K, h, w)``.

    ``clone`` (a fresh copy of the pipeline that produced ``observed``) is fitted in place and
    shared by all victims. ``batch_size`` bounds the victims in one forward pass and only that:
    gradients are accumulated over the chunks, so the result does not depend on it (up to
    rounding). The images' updates use ``clone(x)``; the clone's updates encode the fixed images
    once per round (``clone.encode`` has no weights to fit) and call ``clone.fit`` on the code.

    The clone can absorb a change of the images' contrast (a scale in its first convolution or
    its BatchNorm) and, away from the borders, of their offset (a bias), so the observations fix
    the images only up to such a map; the TV prior even pulls their contrast down round by round.
    ``normalize`` resolves the ambiguity by :func:`stretch`-ing each reconstruction onto [0, 1],
    as the authors do for CIFAR-10.
    """
    if observed.ndim < 2 or len(observed) == 0:
        raise ValueError(f"expected (N, ...) observations with N >= 1, got {tuple(observed.shape)}")
    if len(image_shape) != 3 or min(image_shape) < 1:
        raise ValueError(f"image_shape must be (C, H, W), got {image_shape}")
    if min(main_iters, input_iters, model_iters, batch_size) < 1:
        raise ValueError("main_iters, input_iters, model_iters and batch_size must be >= 1")
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    n, device = len(observed), observed.device
    observed = observed.detach()
    if init == "grey":
        logits = torch.zeros(n, *image_shape, device=device)
    else:
        logits = torch.logit(torch.rand(n, *image_shape, device=device).clamp(0.01, 0.99))
    logits.requires_grad_(True)
    chunks = [slice(i, i + batch_size) for i in range(0, n, batch_size)]
    input_opt = torch.optim.Adam([logits], lr=lr_input)
    model_opt = torch.optim.Adam(clone.parameters(), lr=lr_model)

    for _ in range(main_iters):
        clone.requires_grad_(False)
        for _ in range(input_iters):
            input_opt.zero_grad(set_to_none=True)
            for c in chunks:
                x = logits[c].sigmoid()
                (_data_term(clone(x), observed[c]) + tv * total_variation(x)).backward()
            input_opt.step()
        clone.requires_grad_(True)
        with torch.no_grad():
            codes = [clone.encode(logits[c].sigmoid()) for c in chunks]
        for _ in range(model_iters):
            model_opt.zero_grad(set_to_none=True)
            for c, code in zip(chunks, codes, strict=True):
                _data_term(clone.fit(code), observed[c]).backward()
            model_opt.step()
    clone.requires_grad_(False)
    x = logits.detach().sigmoid()
    return stretch(x) if normalize else x


def stretch(images: Tensor) -> Tensor:
    """Each image mapped affinely onto [0, 1] (its darkest pixel to 0, its brightest to 1); a
    constant image becomes 0."""
    lo = images.flatten(1).min(1).values.view(-1, *[1] * (images.ndim - 1))
    hi = images.flatten(1).max(1).values.view(-1, *[1] * (images.ndim - 1))
    span = hi - lo
    return torch.where(span > 0, (images - lo) / span.clamp(min=torch.finfo(images.dtype).tiny), 0.0)


@dataclass(frozen=True)
class UnSplitBudget(Budget):
    """``main_iters`` rounds of ``input_iters`` image steps and ``model_iters`` clone steps (Adam,
    ``lr_input`` on the images' logits, ``lr_model`` on the clone's weights); ``tv``: the prior's
    weight; ``init``: ``"grey"`` (constant 0.5) or ``"noise"`` (uniform); ``normalize``: stretch
    each reconstruction onto [0, 1] (see :func:`unsplit`); ``batch_size``: victims per forward pass
    (memory only).

    Defaults measured on a vanilla MNIST run of the quick preset (width 16, 6,000 training images,
    1 epoch), 64 victims, one CPU thread: 20 rounds of 20 + 20 steps give MSE 0.0014 and SSIM
    0.974 in ~18 s (the mean image: 0.070, 0.339); 10 rounds 0.0028 / 0.958 (~9 s), 5 rounds
    0.0049 / 0.932 (~4.5 s, a quick budget). Image learning rates of 0.1-0.3 and clone rates of
    1e-3-3e-3 converged several times slower. A PGSL clone costs more per step (its JSMA; its
    APG recovery for the recovered maps: ~27 s for 5 rounds)."""

    victims: int | None = 64
    main_iters: int = 20
    input_iters: int = 20
    model_iters: int = 20
    lr_input: float = 1.0
    lr_model: float = 1e-2
    tv: float = 0.2
    init: str = "grey"
    normalize: bool = True
    batch_size: int = 64

    def __post_init__(self) -> None:
        if self.victims is not None and self.victims < 1:
            raise ValueError(f"victims must be >= 1 or None, got {self.victims}")
        for knob in ("main_iters", "input_iters", "model_iters", "batch_size"):
            if getattr(self, knob) < 1:
                raise ValueError(f"{knob} must be >= 1, got {getattr(self, knob)}")
        if not (self.lr_input > 0 and self.lr_model > 0):
            raise ValueError(f"learning rates must be > 0, got {self.lr_input} and {self.lr_model}")
        if not self.tv >= 0:
            raise ValueError(f"tv must be >= 0, got {self.tv}")
        if self.init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {self.init!r}")


class UnSplit(Attack[UnSplitBudget]):
    """Architecture only: fit a fresh clone of the client and the images together."""

    name = "unsplit"
    title = "UnSplit (architecture only)"
    needs = frozenset({Need.ARCHITECTURE})
    Budget = UnSplitBudget

    def reconstruct(self, view: AttackerView) -> Reconstruction:
        b = self.budget
        assert view.clone is not None  # needs CLONE
        images = unsplit(view.clone(self.seed), view.observed, view.image_shape,
                         main_iters=b.main_iters, input_iters=b.input_iters,
                         model_iters=b.model_iters, lr_input=b.lr_input, lr_model=b.lr_model,
                         tv=b.tv, init=b.init, normalize=b.normalize, batch_size=b.batch_size)
        return Reconstruction(images)
