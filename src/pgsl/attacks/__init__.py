"""The adversary's tools (paper §III, §V-C; docs/design.md#threat-model), kept apart from our defences.

Every attack is an :class:`~pgsl.attacks.base.Attack` with one entry point,
``attack(view) -> Reconstruction``, and declares what it needs of the
:class:`~pgsl.attacks.view.AttackerView` (auxiliary queries, a white-box path, leaked gradients).
A view never holds the victims' raw images; those stay with the evaluator
(``pgsl.experiments.privacy``), which only scores reconstructions. A new attack is one file and
one line in :data:`ATTACKS`.
"""

from __future__ import annotations

from pgsl.attacks.activation_matching import ActivationMatching
from pgsl.attacks.base import Attack, Budget, Reconstruction, parse_budget
from pgsl.attacks.dlg import DLG, IDLG
from pgsl.attacks.gan import GAN
from pgsl.attacks.ggl import GGL
from pgsl.attacks.mean import MeanImage
from pgsl.attacks.mia import MIA
from pgsl.attacks.unsplit import UnSplit
from pgsl.attacks.view import AttackerView, Need, reconstruction_scores

__all__ = ["ATTACKS", "Attack", "AttackerView", "Budget", "Need", "Reconstruction", "get_attack",
           "parse_budget", "reconstruction_scores"]

ATTACKS: dict[str, type[Attack]] = {
    "mean": MeanImage,
    "mia": MIA,
    "gan": GAN,
    "activation": ActivationMatching,
    "unsplit": UnSplit,
    "dlg": DLG,
    "idlg": IDLG,
    "ggl": GGL,
}


def get_attack(name: str) -> type[Attack]:
    try:
        return ATTACKS[name]
    except KeyError:
        raise ValueError(f"unknown attack {name!r}; choose from {', '.join(ATTACKS)}") from None
