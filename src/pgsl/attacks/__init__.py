"""The adversary's tools (paper §III, §V-C; docs/design.md#threat-model), kept apart from our defences.

Every attack is an :class:`~pgsl.attacks.base.Attack` with one entry point,
``attack(view) -> Reconstruction``, and declares what it needs of the
:class:`~pgsl.attacks.view.AttackerView` (auxiliary queries, a white-box path, leaked gradients).
A view never holds the victims' raw images; those stay with the evaluator
(``pgsl.experiments.privacy``), which only scores reconstructions. A new attack is one file and
one line in :data:`ATTACKS`.
"""

from __future__ import annotations

from pgsl.attacks.base import Attack, Budget, Reconstruction, parse_budget
from pgsl.attacks.view import AttackerView, Need, reconstruction_scores
from pgsl.registry import Registry

__all__ = ["ATTACKS", "BASELINE", "LEARNED", "Attack", "AttackerView", "Budget", "Need", "Reconstruction",
           "get_attack", "parse_budget", "reconstruction_scores"]

# an attack's module is imported when its name is first looked up (:class:`~pgsl.registry.Registry`)
ATTACKS: Registry[Attack] = Registry("attack", {
    "mean": "pgsl.attacks.mean:MeanImage",
    "mia": "pgsl.attacks.mia:MIA",
    "gan": "pgsl.attacks.gan:GAN",
    "activation": "pgsl.attacks.activation_matching:ActivationMatching",
    "unsplit": "pgsl.attacks.unsplit:UnSplit",
    "dlg": "pgsl.attacks.dlg:DLG",
    "idlg": "pgsl.attacks.dlg:IDLG",
    "ggl": "pgsl.attacks.ggl:GGL",
})

BASELINE = "mean"  # the mean auxiliary image: the population prior every attack must beat
LEARNED = "mia"  # the learned black-box inversion the frontier attacks each run with


def get_attack(name: str) -> type[Attack]:
    """The attack class registered under ``name``; a clear error for an unknown name."""
    return ATTACKS.get_class(name)
