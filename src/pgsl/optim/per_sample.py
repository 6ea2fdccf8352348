"""Per-sample parameter gradients of a batch, differentiable in the input (second order).

Gradient inversion compares, for each of a batch of dummy images, the gradient its loss alone
would give a model's parameters with one victim's leaked gradient -- and then differentiates that
distance with respect to the dummy. This module gives those per-sample gradients for a batch in
one forward and one backward pass, the way BackPACK and Opacus do: forward hooks record each
chosen layer's input ``h`` and output ``z``; ordinary batched autograd gives ``delta_b = dL_b/dz_b``
(samples are independent in eval mode); a layer's per-sample weight gradient is then a contraction
of ``delta_b`` with ``h_b`` (Linear: ``delta_b^T h_b``; Conv2d: the weight gradient of the batch
run as ``B`` groups of one convolution; eval-mode BatchNorm: ``delta_b`` times the normalised
input).

Why written by hand: ``torch.func.vmap`` cannot trace PGSL's white-box path (the iterative RPCA
solver and the JSMA pixel attack between its layers stop on data-dependent conditions), and
Opacus's grad samplers compute the contractions under ``no_grad`` (first order only).

Contract: the forward map sends ``(B, ...)`` to ``(B, ...)`` with row ``b`` a function of input
row ``b`` only (eval mode: BatchNorm on running statistics); each recorded layer runs once per
forward. :func:`per_sample_grads` returns, per parameter, ``(B, *param.shape)``: what
``torch.autograd.grad(loss_b, param)`` gives with sample ``b`` alone in the batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
import torch.nn.grad
from torch import Tensor, nn

__all__ = ["LayerTape", "logit_gradient_basis", "parameter_owners", "per_sample_grads"]

_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
SUPPORTED = (nn.Linear, nn.Conv2d, *_NORMS)


def parameter_owners(modules: Iterable[nn.Module], params: Sequence[Tensor]) -> list[tuple[nn.Module, str]]:
    """For each of ``params``, the layer among ``modules`` (searched recursively) that holds it
    and the attribute name (``"weight"`` or ``"bias"``).

    Raises:
        ValueError: a parameter no module holds, or one held by a layer whose per-sample gradient
            is not written here (supported: Linear, Conv2d with ``groups == 1`` and zero padding,
            BatchNorm weights and biases).
    """
    found: dict[int, tuple[nn.Module, str]] = {}
    for module in modules:
        for sub in module.modules():
            for name, param in sub.named_parameters(recurse=False):
                found.setdefault(id(param), (sub, name))
    out: list[tuple[nn.Module, str]] = []
    for i, p in enumerate(params):
        if id(p) not in found:
            raise ValueError(f"parameter {i} {tuple(p.shape)} is held by none of the given modules")
        sub, name = found[id(p)]
        if not isinstance(sub, SUPPORTED) or name not in ("weight", "bias"):
            raise ValueError(f"parameter {i} is {type(sub).__name__}.{name}: per-sample gradients are "
                             "written for the weights and biases of Linear, Conv2d and BatchNorm only")
        if isinstance(sub, nn.Conv2d) and (sub.groups != 1 or sub.padding_mode != "zeros"):
            raise ValueError(f"parameter {i}: a Conv2d with groups={sub.groups}, padding_mode="
                             f"{sub.padding_mode!r}; per-sample gradients need groups=1, zero padding")
        out.append((sub, name))
    return out


def _conv_input(m: nn.Conv2d, h: Tensor) -> tuple[Tensor, tuple[int, int]]:
    """``h`` and the padding to give the weight gradient: a string padding (``"same"``) applied
    here, as ``F.conv2d`` applies it (the odd extra pixel after)."""
    if not isinstance(m.padding, str):
        return h, (int(m.padding[0]), int(m.padding[1]))
    if m.padding == "valid":
        return h, (0, 0)
    pad: list[int] = []
    for k, d in reversed(list(zip(m.kernel_size, m.dilation, strict=True))):
        total = d * (k - 1)
        pad += [total // 2, total - total // 2]
    return F.pad(h, pad), (0, 0)


def _layer_grads(m: nn.Module, h: Tensor, delta: Tensor, names: Sequence[str]) -> dict[str, Tensor]:
    """Per-sample gradients of ``m``'s parameters ``names`` from its input ``h`` and ``delta``."""
    b = h.shape[0]
    out: dict[str, Tensor] = {}
    if isinstance(m, nn.Linear):
        h2, d2 = h.reshape(b, -1, m.in_features), delta.reshape(b, -1, m.out_features)
        if "weight" in names:
            out["weight"] = torch.einsum("bto,bti->boi", d2, h2)
        if "bias" in names:
            out["bias"] = d2.sum(1)
    elif isinstance(m, nn.Conv2d):
        if "weight" in names:
            # the batch as B groups of one convolution: its weight gradient is per sample (the
            # same numbers as unfold(h) contracted with delta, ~5x faster on a CPU, measured)
            hp, padding = _conv_input(m, h)
            c_out, c_in, kh, kw = m.weight.shape
            grad = torch.nn.grad.conv2d_weight(
                hp.reshape(1, b * c_in, *hp.shape[2:]), (b * c_out, c_in, kh, kw),
                delta.reshape(1, b * c_out, *delta.shape[2:]), stride=m.stride, padding=padding,
                dilation=m.dilation, groups=b)
            out["weight"] = grad.view(b, c_out, c_in, kh, kw)
        if "bias" in names:
            out["bias"] = delta.sum((2, 3))
    else:  # BatchNorm in eval mode: z = weight * (h - mean) / sqrt(var + eps) + bias
        assert isinstance(m, _NORMS) and m.running_mean is not None and m.running_var is not None
        dims = tuple(range(2, h.ndim))
        if "weight" in names:
            shape = (1, -1) + (1,) * (h.ndim - 2)
            xhat = (h - m.running_mean.view(shape)) * torch.rsqrt(m.running_var.view(shape) + m.eps)
            out["weight"] = (delta * xhat).sum(dims) if dims else delta * xhat
        if "bias" in names:
            out["bias"] = delta.sum(dims) if dims else delta
    return out


class LayerTape:
    """Records the chosen layers' inputs and outputs during one forward pass and turns gradients
    with respect to those outputs into per-sample parameter gradients.

    Args:
        owners: ``(layer, "weight" | "bias")`` pairs, as :func:`parameter_owners` returns them.
    """

    def __init__(self, owners: Sequence[tuple[nn.Module, str]]) -> None:
        self.owners = list(owners)
        self.layers = list(dict.fromkeys(m for m, _ in self.owners))
        self._io: dict[nn.Module, tuple[Tensor, Tensor, int, int]] = {}

    def _hook(self, m: nn.Module, args: tuple[Tensor, ...], z: Tensor) -> None:
        if m in self._io:
            raise ValueError(f"{type(m).__name__} runs twice in one forward pass; per-sample "
                             "gradients need each recorded layer once")
        if isinstance(m, _NORMS) and (m.training or m.running_mean is None):
            raise ValueError(f"{type(m).__name__} normalises with batch statistics, which mix the "
                             "samples; per-sample gradients need it in eval mode with running stats")
        h = args[0]
        self._io[m] = (h, z, h._version, z._version)

    def forward(self, fn: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
        """``fn(x)``, recording every chosen layer. ``x`` is made to require grad if it does not,
        so that every recorded output is on the graph."""
        if not x.requires_grad:
            x = x.detach().requires_grad_(True)
        self._io = {}
        handles = [m.register_forward_hook(self._hook) for m in self.layers]
        try:
            out = fn(x)
        finally:
            for handle in handles:
                handle.remove()
        missing = [type(m).__name__ for m in self.layers if m not in self._io]
        if missing:
            raise ValueError(f"layers {missing} hold leaked parameters but did not run in the forward pass")
        if any(h._version != vh or z._version != vz for h, z, vh, vz in self._io.values()):
            raise ValueError("a recorded layer's input or output was modified in place")
        return out

    @property
    def outputs(self) -> list[Tensor]:
        """The recorded layers' outputs, in the order of :attr:`layers` (for ``autograd.grad``)."""
        return [self._io[m][1] for m in self.layers]

    def grads(self, deltas: Sequence[Tensor | None], *, create_graph: bool) -> list[Tensor]:
        """Per-sample gradients ``(B, *param.shape)``, in the order of ``owners``, from ``deltas``
        (per layer, the gradient of the summed per-sample losses w.r.t. its output; None: zero)."""
        per_layer: dict[nn.Module, dict[str, Tensor]] = {}
        for m, delta in zip(self.layers, deltas, strict=True):
            h, z = self._io[m][:2]
            if not create_graph:
                h = h.detach()
            names = [name for owner, name in self.owners if owner is m]
            per_layer[m] = _layer_grads(m, h, torch.zeros_like(z) if delta is None else delta, names)
        return [per_layer[m][name] for m, name in self.owners]


def per_sample_grads(forward: Callable[[Tensor], Tensor], x: Tensor, loss: Callable[[Tensor], Tensor],
                     owners: Sequence[tuple[nn.Module, str]], *, create_graph: bool = False) -> list[Tensor]:
    """Per-sample gradients of ``loss(forward(x))`` with respect to the parameters ``owners`` names.

    Args:
        forward: ``(B, ...)`` -> ``(B, ...)``, row ``b`` a function of ``x[b]`` alone.
        x: ``(B, ...)`` the inputs.
        loss: ``forward``'s output -> ``(B,)`` per-sample losses (row ``b`` from row ``b``).
        owners: ``(layer, "weight" | "bias")`` pairs (:func:`parameter_owners`).
        create_graph: keep the graph, so the result is differentiable in ``x`` (second order).

    Returns:
        per owner, ``(B, *param.shape)``: the gradient of ``loss_b`` with sample ``b`` alone.
    """
    tape = LayerTape(owners)
    with torch.enable_grad():
        losses = loss(tape.forward(forward, x))
        if losses.shape != (x.shape[0],):
            raise ValueError(f"loss must give one value per sample, got {tuple(losses.shape)}")
        deltas = torch.autograd.grad(losses.sum(), tape.outputs, create_graph=create_graph,
                                     allow_unused=True)
        return tape.grads(deltas, create_graph=create_graph)


def logit_gradient_basis(forward: Callable[[Tensor], Tensor], x: Tensor,
                         owners: Sequence[tuple[nn.Module, str]]) -> tuple[Tensor, list[Tensor]]:
    """Per sample, the parameter gradients of each logit: one forward pass, one backward per class.

    A loss whose gradient with respect to the logits is ``c`` (``(B, K)``; cross-entropy:
    ``softmax(logits) - onehot(y)``) has per-sample parameter gradient ``sum_k c_k G_k`` -- so one
    basis serves every output gradient and every label. First order (no graph kept).

    Returns:
        the logits ``(B, K)`` (detached) and, per owner, ``G`` ``(B, K, numel)``.
    """
    tape = LayerTape(owners)
    with torch.enable_grad():
        logits = tape.forward(forward, x)
        if logits.ndim != 2 or logits.shape[0] != x.shape[0]:
            raise ValueError(f"forward must give (B, K) logits, got {tuple(logits.shape)}")
        columns: list[list[Tensor]] = [[] for _ in tape.owners]
        for k in range(logits.shape[1]):
            deltas = torch.autograd.grad(logits[:, k].sum(), tape.outputs, retain_graph=True,
                                         allow_unused=True)
            for col, g in zip(columns, tape.grads(deltas, create_graph=False), strict=True):
                col.append(g.flatten(1))
    return logits.detach(), [torch.stack(col, 1) for col in columns]
