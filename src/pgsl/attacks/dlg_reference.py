"""The reference solver of :mod:`pgsl.attacks.dlg`: scipy's L-BFGS-B, one victim at a time.

The same objective, stages, start and label as the batched solver (the method is in
:mod:`pgsl.attacks.dlg`'s text); each victim's dummy is matched by ordinary autograd at batch size
one and optimised by scipy's L-BFGS-B (Byrd, Lu, Nocedal & Zhu 1995) through a host round trip per
evaluation. ``gradient_inversion(..., solver="scipy")`` runs it; ``bench/attacks.py`` compares the two.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import minimize
from torch import Tensor

from pgsl.attacks.dlg_settings import FTOL, GTOL, LABEL_ITERATIONS, MEMORY, idlg_label
from pgsl.attacks.view import GradientLeak

__all__ = ["invert_each"]


class _Matching:
    """The distance between a dummy's gradients and one victim's leak, over chosen tensors."""

    def __init__(self, leak: GradientLeak, target: Sequence[Tensor], label: int) -> None:
        self.leak, self.target = leak, target
        self.norm2 = [(t.double() ** 2).sum().clamp(min=1e-30).to(t.dtype) for t in target]
        self.label = torch.tensor([label], device=target[0].device)

    def __call__(self, x: Tensor, d: Tensor | None, layers: Sequence[int],
                 create_graph: bool = True) -> Tensor:
        logits = self.leak.logits(x)
        # with d = dL/dlogits given, the loss is linear in the logits; else iDLG's cross-entropy
        loss = (logits * d).sum() if d is not None else F.cross_entropy(logits, self.label)
        params = [self.leak.params[i] for i in layers]
        grads = torch.autograd.grad(loss, params, create_graph=create_graph)
        return torch.stack([((g - self.target[i]) ** 2).sum() / self.norm2[i]
                            for g, i in zip(grads, layers, strict=True)]).mean()


def _lbfgsb(fun: Callable[[Tensor], Tensor], v0: Tensor, bounds: list[tuple[float, float]],
            iterations: int) -> Tensor:
    """scipy's L-BFGS-B on a torch objective of one flat vector; returns the last iterate.

    A line search that fails at a jump of the objective ends the run (scipy: ABNORMAL) -- expected
    here; the iterate it returns is the best one it accepted."""
    device, dtype = v0.device, v0.dtype

    def value_and_grad(v: np.ndarray) -> tuple[float, np.ndarray]:
        t = torch.from_numpy(v).to(device, dtype).requires_grad_(True)
        try:
            value = fun(t)
        except FloatingPointError:
            return float("inf"), np.zeros_like(v)
        if not torch.isfinite(value):
            return float("inf"), np.zeros_like(v)
        (grad,) = torch.autograd.grad(value, t)
        return float(value.detach()), grad.detach().double().cpu().numpy()

    res = minimize(value_and_grad, v0.detach().double().cpu().numpy(), jac=True, method="L-BFGS-B",
                   bounds=bounds, options={"maxiter": iterations, "maxfun": 2 * iterations,
                                           "maxcor": MEMORY, "ftol": FTOL, "gtol": GTOL})
    return torch.from_numpy(res.x).to(device, dtype)


def _start(match: _Matching, d: Tensor | None, aux: Tensor, layers: Sequence[int], blend: int) -> Tensor:
    """The mean of the ``blend`` auxiliary images whose gradients are closest to the leak."""
    dist = torch.stack([match(a[None], d, layers, create_graph=False).detach() for a in aux])
    return aux[dist.argsort()[:blend].to(aux.device)].mean(0, keepdim=True)


def _invert_one(leak: GradientLeak, target: Sequence[Tensor], image_shape: tuple[int, int, int],
                idlg: bool, aux: Tensor | None, iterations: int, stages: Sequence[int], select: int,
                blend: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
    device, dtype = target[0].device, target[0].dtype
    n, k = int(np.prod(image_shape)), leak.num_classes
    label = idlg_label(target[-1])
    match = _Matching(leak, target, label)
    x_box, d_box = [(0.0, 1.0)] * n, [(-1.0, 1.0)] * k
    d: Tensor | None = None
    if idlg and leak.output_bias is not None:
        d = target[leak.output_bias].reshape(1, k).detach()
    elif not idlg:  # DLG: a random dummy label, learned by matching
        d = (1e-3 * torch.randn((1, k), generator=g)).to(device, dtype)

    if aux is not None:
        if not idlg:  # DLG learns its label first, on the auxiliary images' mean and the last layer
            # (whose gradient d h^T with h >= 0 gives d's direction for any image: measured better
            # than over the last `select` tensors, MSE 0.041 vs 0.051 on 8 quick vanilla victims)
            x_mean = aux.mean(0, keepdim=True)
            d = _lbfgsb(lambda v: match(x_mean, v.view(1, k), leak.trailing(1)), d.flatten(),  # type: ignore[union-attr]
                        d_box, LABEL_ITERATIONS).view(1, k)
        x = _start(match, d, aux, leak.trailing(select), blend)
    else:
        x = torch.rand((1, *image_shape), generator=g).to(device, dtype)

    for stage in stages:
        layers = leak.trailing(stage)
        if idlg:
            def objective(v: Tensor, layers: list[int] = layers, d: Tensor | None = d) -> Tensor:
                return match(v.view(1, *image_shape), d, layers)
            x = _lbfgsb(objective, x.flatten(), x_box, iterations).view(1, *image_shape)
        else:  # the image and the dummy output gradient together
            def joint(v: Tensor, layers: list[int] = layers) -> Tensor:
                return match(v[:n].view(1, *image_shape), v[n:].view(1, k), layers)
            v = _lbfgsb(joint, torch.cat([x.flatten(), d.flatten()]), x_box + d_box, iterations)  # type: ignore[union-attr]
            x, d = v[:n].view(1, *image_shape), v[n:].view(1, k)
    used = label if idlg else int(d.argmin())  # type: ignore[union-attr]
    return x.clamp(0, 1), torch.tensor([used], device=device)


def invert_each(leak: GradientLeak, image_shape: tuple[int, int, int], idlg: bool, aux: Tensor | None,
                iterations: int, stages: Sequence[int], select: int, blend: int,
                g: torch.Generator) -> tuple[Tensor, Tensor]:
    """Every victim of ``leak``, one after the other (arguments as in
    :func:`~pgsl.attacks.dlg.gradient_inversion`; ``aux``: the sampled starts); images
    ``(N, C, H, W)`` in [0, 1] and labels ``(N,)``."""
    out = [_invert_one(leak, t, image_shape, idlg, aux, iterations, stages, select, blend, g)
           for t in leak.gradients]
    return torch.cat([o[0] for o in out]), torch.cat([o[1] for o in out])
