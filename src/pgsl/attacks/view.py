"""What the adversary holds for one target, and how its reconstructions are scored."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor, nn

from pgsl.optim.per_sample import parameter_owners

__all__ = ["AttackerView", "CloneFactory", "GradientLeak", "Need", "PipelineClone", "reconstruction_scores"]


class Need:
    """What an attack may require of a view (the threat model's knowledge, docs/design.md#threat-model)."""

    AUX = "auxiliary images with the client pipeline's answers (black-box queries)"
    WHITE_BOX = "a differentiable model of image -> observation (client architecture and weights)"
    GRADIENTS = "the victims' training-step gradients of the client segment's weights"
    ARCHITECTURE = "the client pipeline's architecture, without its weights: an untrained copy to fit"


class PipelineClone(nn.Module):
    """An attacker's untrained copy of the client pipeline for one target, in two stages.

    ``forward(images) = fit(encode(images))``: ``(B, C, H, W)`` in [0, 1] -> an observation
    shaped like the target's (``(B, K, h, w)``). ``encode`` is the part without weights to fit
    (the defence's input encoding, differentiable in the images, BPDA where it is discrete);
    ``fit`` is the rest (the client segment, the defence's perturbation, for a server observable
    the server's map). :meth:`parameters` are those of ``weights``, the modules whose weights the
    attacker fits (the segment); nothing else the stages use is fitted. An attack that updates only
    the weights may encode its images once and call ``fit`` on the code.

    Args:
        encode: images -> the segment's input; independent of ``weights``.
        fit: the segment's input -> the observation, computed with ``weights``.
        weights: the module(s) ``fit`` runs whose weights the attacker does not know.
    """

    def __init__(self, encode: Callable[[Tensor], Tensor], fit: Callable[[Tensor], Tensor],
                 weights: nn.Module) -> None:
        super().__init__()
        self.encode, self.fit = encode, fit
        self.weights = weights

    def forward(self, images: Tensor) -> Tensor:
        return self.fit(self.encode(images))


CloneFactory = Callable[[int], PipelineClone]
"""``seed -> a fresh, randomly initialised`` :class:`PipelineClone` (the same seed, the same
initial weights)."""


@dataclass(frozen=True)
class GradientLeak:
    """What leaks from the victims' training steps, and the attacker's white-box model of them.

    Attributes:
        gradients: per victim, the leaked gradients, in the order of ``params``.
        params: the parameters those gradients belong to, input side first; the last one is the
            final layer's weight.
        logits: a differentiable map from images ``(B, C, H, W)`` to the logits ``(B, K)`` whose
            cross-entropy produced the leak (the client's discrete pixel attack left out), row
            ``b`` a function of image ``b`` alone (eval mode). It may raise ``FloatingPointError``
            when an iterate drives it out of the finite range.
        num_classes: number of classes of that loss.
        output_bias: the index in ``params`` of the final layer's bias, if it has one: at batch size
            1 its gradient is ``dL/dlogits``.
        modules: the modules holding ``params`` (searched recursively), for per-sample gradients;
            empty: ``logits`` itself, if it is a module.
    """

    gradients: Sequence[Sequence[Tensor]]
    params: Sequence[Tensor]
    logits: Callable[[Tensor], Tensor]
    num_classes: int
    output_bias: int | None = None
    modules: Sequence[nn.Module] = ()

    @property
    def weights(self) -> list[int]:
        """Indices of the weight tensors (matrices and kernels) among ``params``, input side first."""
        return [i for i, p in enumerate(self.params) if p.ndim > 1]

    def trailing(self, k: int) -> list[int]:
        """The last ``k`` weight tensors (all of them for ``k = 0`` or beyond their number)."""
        w = self.weights
        return w if k <= 0 or k >= len(w) else w[-k:]

    def owners(self, indices: Sequence[int]) -> dict[int, tuple[nn.Module, str]]:
        """``{index: (layer, "weight" | "bias")}``: the layer holding each of ``params[indices]``.

        Raises:
            ValueError: no module to search, or a parameter of a layer without per-sample
                gradients (:func:`~pgsl.optim.per_sample.parameter_owners`); a weight tensor
                must belong to an ``nn.Linear`` or ``nn.Conv2d``.
        """
        modules = list(self.modules) or ([self.logits] if isinstance(self.logits, nn.Module) else [])
        if not modules:
            raise ValueError("the leak names no modules holding its parameters (GradientLeak.modules); "
                             "the batched attacks need them for per-sample gradients")
        found = parameter_owners(modules, [self.params[i] for i in indices])
        for i, (layer, _) in zip(indices, found, strict=True):
            if self.params[i].ndim > 1 and not isinstance(layer, nn.Linear | nn.Conv2d):
                raise ValueError(f"weight tensor {i} belongs to a {type(layer).__name__}; gradient "
                                 "matching is written for nn.Linear and nn.Conv2d weights")
        return dict(zip(indices, found, strict=True))


@dataclass(frozen=True)
class AttackerView:
    """Everything an attack may read about one target. No field holds a victim's raw image.

    Attributes:
        target: what the attacker observes: ``"cut"`` (what crossed it) or a server observable
            of the run's server model (PGSL: ``"recovered"``, the APG-recovered maps).
        observed: ``(N, K, h, w)`` what the attacker saw for the N victims.
        aux_images: ``(M, C, H, W)`` in [0, 1]: the attacker's own images (disjoint from victims).
        aux_observed: ``(M, K, h, w)``: the pipeline's answers to ``aux_images``, taken exactly
            like ``observed``.
        path: white-box only -- the differentiable map from images ``(B, C, H, W)`` in [0, 1] to
            this target's observation: the client's pipeline (then, for a server observable, the
            server's map), with gradients straight through the non-differentiable steps (BPDA).
            ``path(aux_images)`` equals ``aux_observed`` (for a noisy defence, under the same RNG).
        leak: the first victims' training-step gradients (for the cut only), or None.
        clone: architecture only -- ``clone(seed)`` builds a fresh, randomly initialised copy of
            ``path`` (:class:`PipelineClone`): the defence's own code with fresh weights and fresh
            random draws, an untrained client segment, then (for a server observable) the server's
            map with the gradient straight through. The attacker knows how the client computes,
            not what it learned.
        memo: results attacks on this view may share (e.g. the learned inversion's decoder).
    """

    target: str
    observed: Tensor
    aux_images: Tensor
    aux_observed: Tensor
    path: Callable[[Tensor], Tensor] | None = None
    leak: GradientLeak | None = None
    clone: CloneFactory | None = None
    memo: dict[Any, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if self.observed.shape[1:] != self.aux_observed.shape[1:]:
            raise ValueError(f"victim observations {tuple(self.observed.shape)} and auxiliary ones "
                             f"{tuple(self.aux_observed.shape)} differ in shape")

    @property
    def image_shape(self) -> tuple[int, int, int]:
        c, h, w = self.aux_images.shape[1:]
        return int(c), int(h), int(w)

    def holds(self) -> set[str]:
        """The :class:`Need` values this view satisfies."""
        out = {Need.AUX} if len(self.aux_images) else set()
        if self.path is not None:
            out.add(Need.WHITE_BOX)
        if self.leak is not None:
            out.add(Need.GRADIENTS)
        if self.clone is not None:
            out.add(Need.ARCHITECTURE)
        return out

    def first(self, n: int | None) -> AttackerView:
        """The view restricted to its first ``n`` victims (all for None); same memo."""
        if n is None or n >= len(self.observed):
            return self
        leak = self.leak
        if leak is not None and len(leak.gradients) > n:
            leak = replace(leak, gradients=leak.gradients[:n])
        return replace(self, observed=self.observed[:n], leak=leak, memo=self.memo)


def reconstruction_scores(recon: Tensor, clean: Tensor) -> dict[str, Tensor]:
    """Per-image MSE, PSNR (dB) and SSIM of ``recon`` against ``clean``, both in [0, 1].

    SSIM is torchmetrics' (Gaussian window 11, sigma 1.5, ``data_range=1``); PSNR is capped at
    100 dB for an exact reconstruction.
    """
    from torchmetrics.functional.image import structural_similarity_index_measure

    if recon.shape != clean.shape:
        raise ValueError(f"reconstructions {tuple(recon.shape)} and images {tuple(clean.shape)} differ")
    recon, clean = recon.float().clamp(0, 1), clean.float()
    mse = (recon - clean).square().flatten(1).mean(1)
    psnr = torch.where(mse > 0, 10 * torch.log10(1.0 / mse.clamp(min=1e-10)), torch.full_like(mse, 100.0))
    ssim = structural_similarity_index_measure(recon, clean, data_range=1.0, reduction="none")
    return {"mse": mse, "psnr": psnr, "ssim": torch.as_tensor(ssim).reshape(-1)}
