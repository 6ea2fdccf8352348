"""Gradient inversion: DLG (Zhu, Liu & Han, NeurIPS 2019) and iDLG (Zhao, Mopuri & Bilen 2020).

Threat model: the attacker is the server. Per victim it holds the parameter gradients of one
training step at batch size 1 -- the client segment's (shared when client weights are aggregated
across sites) and its own stream's -- and a white-box model: the parameters and a differentiable
map from an image to the logits (:class:`GradientLeak`). It never sees the victim's image.

Contract: :func:`gradient_inversion` returns one image ``(C, H, W)`` in [0, 1] and one label per
leaked gradient set, stacked as ``(N, C, H, W)`` and ``(N,)``. The attacker's own images
``(M, C, H, W)`` in [0, 1], if given, only choose the start.

Method. The leak is ``g = J_theta(x)^T d`` with ``d = dL/dlogits`` ``(1, K)``. Both attacks
minimise, over a dummy image ``x`` in the box ``[0, 1]`` (box-constrained L-BFGS: MNIST's background
sits on the bound), the normalised squared gradient distance

    D_S(x, d) = mean_{i in S} ||grad_i <logits(x), d> - g_i||^2 / ||g_i||^2

over a set ``S`` of weight tensors (biases and BatchNorm parameters left out):

1. **The output gradient, not a label.** iDLG reads ``d`` off the final layer's bias gradient (its
   label is the only negative entry) or, without a bias, uses cross-entropy with the analytic label
   of :func:`idlg_label` (after a ReLU layer ``dL/dW_k = (p_k - [k = y]) h`` with ``h >= 0``, so
   only the true class's row sums negative). DLG learns ``d`` in ``[-1, 1]^K`` by matching: first
   alone on the last layer (given auxiliary images), then jointly with ``x``. With ``d`` given,
   the loss is linear in the logits.
2. **Layer-wise continuation.** Stage ``k`` of :data:`STAGES` matches the last ``k`` weight tensors
   (0: all of them). Every stage's objective is zero at the victim, so only the path changes.
3. **A start from the auxiliary data.** The mean of the :data:`BLEND` auxiliary images whose
   gradients are closest to the leak over the last ``select`` weight tensors; without auxiliary
   images, uniform noise, as in DLG.

This keeps both attacks' definitions (gradient matching, a dummy input, L-BFGS) but not the
published recipe (squared distance over every gradient, cross-entropy through the dummy's soft
label, L-BFGS from noise), which recovers victims in the papers' sigmoid LeNets and fails on
PGSL's ReLU + BatchNorm network. GGL (:mod:`pgsl.attacks.ggl`) searches a learned prior instead.

Solvers (:data:`SOLVERS`), the same objective and stages:

- ``"torch"`` (default): the victims of a batch are optimised together on the leak's device --
  per-sample gradients of a batch of dummies (:mod:`pgsl.optim.per_sample`), each victim's own
  box-constrained L-BFGS (:mod:`pgsl.optim.lbfgs`, batched), the start scored against the
  auxiliary images with one backward pass per class (:func:`~pgsl.optim.per_sample.logit_gradient_basis`).
  A victim's answer does not depend on the others in its batch (equal to rounding; tests).
- ``"scipy"``: scipy's L-BFGS-B, one victim at a time, the reference (``bench/attacks.py``
  compares the two). The L-BFGS variants share their line search (Moré-Thuente's, for the strong
  Wolfe conditions) but not their direction (generalized Cauchy point and subspace minimisation
  there, a projected path here), so the two end at different points of this non-smooth objective.

Measured behaviour (why the published recipe fails here, what this method reaches, its cost, the
two solvers side by side): docs/findings.md#dlg-and-idlg
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from pgsl.attacks.base import Attack, Budget, Reconstruction
from pgsl.attacks.dlg_settings import FTOL, GTOL, LABEL_ITERATIONS, MEMORY, idlg_label  # noqa: F401
from pgsl.attacks.view import AttackerView, GradientLeak, Need
from pgsl.optim.lbfgs import lbfgsb
from pgsl.optim.per_sample import logit_gradient_basis, per_sample_grads

# Stage k matches the last k weight tensors of the leak; 0 (or k beyond their number): all of them.
STAGES = (2, 4, 5, 6, 7, 0)
BLEND = 4  # the start is the mean of this many closest auxiliary images


class _Victims:
    """The victims' leaks stacked per weight tensor, and the matching distance of a batch of
    dummies, each against its own victim's leak (row ``b`` of a batch: victim ``rows[b]``)."""

    def __init__(self, leak: GradientLeak) -> None:
        self.leak = leak
        self.owners = leak.owners(leak.weights)
        self.targets = {i: torch.stack([g[i].detach() for g in leak.gradients]) for i in leak.weights}
        self.norm2 = {i: (t.double() ** 2).flatten(1).sum(1).clamp(min=1e-30).to(t.dtype)
                      for i, t in self.targets.items()}
        # iDLG's analytic label (idlg_label) of every victim
        self.labels = torch.stack([g[-1].detach() for g in leak.gradients]).sum(-1).argmin(-1)

    def distance(self, x: Tensor, rows: Tensor, d: Tensor | None, layers: Sequence[int]) -> Tensor:
        """``D_S`` ``(B,)`` of dummies ``x`` ``(B, C, H, W)`` against victims ``rows`` ``(B,)``
        under output gradients ``d`` ``(B, K)`` (None: cross-entropy with the victims' iDLG
        labels); differentiable in ``x`` and ``d``."""
        labels = self.labels[rows]

        def loss(logits: Tensor) -> Tensor:
            return F.cross_entropy(logits, labels, reduction="none") if d is None else (logits * d).sum(1)
        grads = per_sample_grads(self.leak.logits, x, loss, [self.owners[i] for i in layers],
                                 create_graph=True)
        return torch.stack([(g - self.targets[i][rows]).square().flatten(1).sum(1) / self.norm2[i][rows]
                            for g, i in zip(grads, layers, strict=True)]).mean(0)

    def start_distances(self, aux: Tensor, d: Tensor | None, layers: Sequence[int], chunk: int) -> Tensor:
        """``D_S`` ``(N, M)`` of every auxiliary image ``(M, C, H, W)`` for every victim, first
        order. Under output gradient ``c`` an image's gradient is ``sum_k c_k G_k`` (the logit
        gradient basis), so ``||G c - g||^2 = c^T (G^T G) c - 2 c^T G^T g + ||g||^2``: one forward
        and K backward passes per image serve every victim."""
        k = self.leak.num_classes
        out = []
        for a in aux.split(chunk):
            logits, basis = logit_gradient_basis(self.leak.logits, a, [self.owners[i] for i in layers])
            if d is None:  # cross-entropy: dL/dlogits = softmax - onehot(label)
                c = (logits.double().softmax(1)[:, None]
                     - F.one_hot(self.labels, k).double()[None])  # (M', N, K)
            else:
                c = d.double()[None].expand(len(a), -1, -1)
            total = torch.zeros(len(a), len(self.labels), dtype=torch.float64, device=a.device)
            for basis_i, i in zip(basis, layers, strict=True):
                b64, t = basis_i.double(), self.targets[i].flatten(1).double()
                quad = torch.einsum("mnk,mkj,mnj->mn", c, b64 @ b64.transpose(1, 2), c)
                cross = torch.einsum("mnk,mkn->mn", c, b64 @ t.T)
                total += (quad - 2 * cross + t.square().sum(1)) / self.norm2[i].double()
            out.append(total.T / len(layers))
        return torch.cat(out, 1)


def _solve(fun: Callable[[Tensor, Tensor], Tensor], v0: Tensor, lower: Tensor, upper: Tensor,
           iterations: int, batch: int) -> Tensor:
    """The batched L-BFGS on ``fun(v, victims)`` for every victim, ``batch`` victims at a time,
    in float64 (as scipy's); ``v0`` ``(N, n)``; returns ``(N, n)`` in ``v0``'s dtype."""
    out = []
    for rows in torch.arange(len(v0), device=v0.device).split(batch):
        def chunk_fun(v: Tensor, r: Tensor, rows: Tensor = rows) -> Tensor:
            return fun(v.to(v0.dtype), rows[r])
        res = lbfgsb(chunk_fun, v0[rows].double(), lower=lower.double(), upper=upper.double(),
                     max_iter=iterations, max_eval=2 * iterations, memory=MEMORY, ftol=FTOL, gtol=GTOL)
        out.append(res.x.to(v0.dtype))
    return torch.cat(out)


def _invert_torch(leak: GradientLeak, image_shape: tuple[int, int, int], idlg: bool, aux: Tensor | None,
                  iterations: int, stages: Sequence[int], select: int, blend: int, batch: int,
                  g: torch.Generator) -> tuple[Tensor, Tensor]:
    victims = _Victims(leak)
    first = leak.gradients[0][0]
    device, dtype = first.device, first.dtype
    n_victims, n, k = len(leak.gradients), math.prod(image_shape), leak.num_classes
    x_box = (torch.zeros(n, device=device), torch.ones(n, device=device))
    d_box = (-torch.ones(k, device=device), torch.ones(k, device=device))
    d: Tensor | None = None
    if idlg and leak.output_bias is not None:
        d = torch.stack([t[leak.output_bias].detach().reshape(k) for t in leak.gradients])
    elif not idlg:  # DLG: a random dummy label per victim, learned by matching
        d = (1e-3 * torch.randn((n_victims, k), generator=g)).to(device, dtype)

    if aux is not None:
        if not idlg:  # DLG learns its label first, on the auxiliary images' mean and the last layer
            x_mean = aux.mean(0, keepdim=True)

            def label_stage(v: Tensor, rows: Tensor) -> Tensor:
                return victims.distance(x_mean.expand(len(rows), *image_shape), rows, v, leak.trailing(1))
            assert d is not None
            d = _solve(label_stage, d, *d_box, LABEL_ITERATIONS, batch)
        dist = victims.start_distances(aux, d, leak.trailing(select), max(1, batch // k))
        x = aux[dist.argsort(1)[:, :blend]].mean(1)
    else:
        x = torch.rand((n_victims, *image_shape), generator=g).to(device, dtype)

    for stage in stages:
        layers = leak.trailing(stage)
        if idlg:
            def objective(v: Tensor, rows: Tensor, layers: list[int] = layers,
                          d: Tensor | None = d) -> Tensor:
                return victims.distance(v.view(-1, *image_shape), rows, None if d is None else d[rows],
                                        layers)
            x = _solve(objective, x.flatten(1), *x_box, iterations, batch).view(-1, *image_shape)
        else:  # the image and the dummy output gradient together
            def joint(v: Tensor, rows: Tensor, layers: list[int] = layers) -> Tensor:
                return victims.distance(v[:, :n].view(-1, *image_shape), rows, v[:, n:], layers)
            assert d is not None
            v = _solve(joint, torch.cat([x.flatten(1), d], 1), torch.cat([x_box[0], d_box[0]]),
                       torch.cat([x_box[1], d_box[1]]), iterations, batch)
            x, d = v[:, :n].view(-1, *image_shape), v[:, n:]
    used = victims.labels if idlg else d.argmin(1)  # type: ignore[union-attr]
    return x.clamp(0, 1), used


def _invert_scipy(leak: GradientLeak, image_shape: tuple[int, int, int], idlg: bool, aux: Tensor | None,
                  iterations: int, stages: Sequence[int], select: int, blend: int, batch: int,
                  g: torch.Generator) -> tuple[Tensor, Tensor]:
    from pgsl.attacks.dlg_reference import invert_each  # scipy, loaded only when asked for

    return invert_each(leak, image_shape, idlg, aux, iterations, stages, select, blend, g)


Solver = Callable[[GradientLeak, tuple[int, int, int], bool, Tensor | None, int, Sequence[int], int, int,
                   int, torch.Generator], tuple[Tensor, Tensor]]
# name -> solver; "scipy" is the reference (pgsl.attacks.dlg_reference)
SOLVERS: dict[str, Solver] = {"torch": _invert_torch, "scipy": _invert_scipy}


def gradient_inversion(leak: GradientLeak, image_shape: tuple[int, int, int], *, idlg: bool,
                       aux_images: Tensor | None = None, iterations: int = 150,
                       stages: Sequence[int] = STAGES, starts: int = 256, select: int = 4,
                       blend: int = BLEND, batch: int = 128, solver: str = "torch",
                       seed: int = 0) -> tuple[Tensor, Tensor]:
    """Reconstruct every victim of ``leak`` (see the module's text for the method).

    Args:
        aux_images: the attacker's own images ``(M, C, H, W)`` in [0, 1]; ``starts`` of them (a
            seeded sample) are scored for the start. None: start from uniform noise.
        iterations: L-BFGS iterations per stage (evaluations: at most twice as many).
        stages: trailing weight tensors matched in each stage (:data:`STAGES`).
        select, blend: the start is the mean of the ``blend`` auxiliary images closest to the leak
            over the last ``select`` weight tensors.
        batch: victims optimised together (``"torch"``); memory grows with it.
        solver: a key of :data:`SOLVERS`: ``"torch"`` (batched) or ``"scipy"`` (the reference).

    Returns:
        images ``(N, C, H, W)`` in [0, 1] and the labels used ``(N,)`` (iDLG: recovered
        analytically; DLG: the most negative entry of its learned output gradient).
    """
    if iterations < 1 or not stages or blend < 1 or starts < 1 or batch < 1:
        raise ValueError("iterations, starts, blend and batch must be >= 1 and stages non-empty")
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; choose one of {', '.join(SOLVERS)}")
    if not leak.gradients:
        raise ValueError("the leak holds no victims")
    g = torch.Generator().manual_seed(seed)
    aux = None
    if aux_images is not None:
        aux = aux_images[torch.randperm(len(aux_images), generator=g)[:starts].to(aux_images.device)]
        blend = min(blend, len(aux))
    return SOLVERS[solver](leak, image_shape, idlg, aux, iterations, stages, select, blend, batch, g)


@dataclass(frozen=True)
class DLGBudget(Budget):
    """DLG's and iDLG's knobs (:func:`gradient_inversion`'s arguments). Cost: about ``len(stages)
    x 2 x iterations`` evaluations of the matching objective per victim (each a forward pass and
    two backward passes of the client path), plus ``starts`` forward and ``starts x K`` backward
    passes for the start; the ``"torch"`` solver runs ``batch`` victims per evaluation."""

    victims: int | None = 32  # one optimisation problem per victim
    iterations: int = 150  # L-BFGS iterations per stage of the layer-wise continuation
    starts: int = 256  # auxiliary images scored for the start
    stages: tuple[int, ...] = STAGES
    select: int = 4
    blend: int = BLEND
    batch: int = 128  # victims optimised together (solver "torch")
    solver: str = "torch"  # "scipy": scipy's L-BFGS-B one victim at a time, the reference

    def __post_init__(self) -> None:
        if self.solver not in SOLVERS:
            raise ValueError(f"unknown solver {self.solver!r}; choose one of {', '.join(SOLVERS)}")
        if self.batch < 1:
            raise ValueError(f"batch must be >= 1, got {self.batch}")


class DLG(Attack[DLGBudget]):
    """Deep leakage from gradients (Zhu et al. 2019): match the victims' leaked gradients with a
    dummy image; the output gradient is learned by matching."""

    name = "dlg"
    title = "DLG (gradient matching)"
    needs = frozenset({Need.GRADIENTS, Need.WHITE_BOX, Need.AUX})
    Budget = DLGBudget
    idlg = False

    def reconstruct(self, view: AttackerView) -> Reconstruction:
        b = self.budget
        assert view.leak is not None  # needs GRADIENTS
        images, labels = gradient_inversion(
            view.leak, view.image_shape, idlg=self.idlg, aux_images=view.aux_images,
            iterations=b.iterations, stages=b.stages, starts=b.starts, select=b.select,
            blend=b.blend, batch=b.batch, solver=b.solver, seed=self.seed)
        return Reconstruction(images, labels)


class IDLG(DLG):
    """iDLG (Zhao et al. 2020): DLG with the label read off the last layer's gradient."""

    name = "idlg"
    title = "iDLG (gradient matching, analytic label)"
    idlg = True
