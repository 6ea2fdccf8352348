"""What DLG/iDLG's two solvers share (:mod:`pgsl.attacks.dlg`, batched in torch, and the scipy
reference :mod:`pgsl.attacks.dlg_reference`): the L-BFGS settings, the label stage's iterations
and iDLG's analytic label. Its own module so that neither solver imports the other."""

from __future__ import annotations

from torch import Tensor

__all__ = ["FTOL", "GTOL", "LABEL_ITERATIONS", "MEMORY", "idlg_label"]

LABEL_ITERATIONS = 50  # DLG's output-gradient stage, on the last layer alone
# L-BFGS settings of both solvers: memory 50; evaluations at most twice the iterations; ftol and
# gtol that stop a run only where a step gains nothing (else the iterations or a failed line search end it)
MEMORY, FTOL, GTOL = 50, 1e-16, 1e-14


def idlg_label(last_weight_grad: Tensor) -> int:
    """iDLG's analytic label: the class whose last-layer weight gradient row sums lowest."""
    return int(last_weight_grad.sum(dim=-1).argmin())
