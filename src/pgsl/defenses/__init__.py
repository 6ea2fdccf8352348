"""Defences as plug-ins: the registry maps a name (``pgsl train --defense NAME``) to its class.

A new defence is one file with a :class:`~pgsl.defenses.base.Defense` subclass and one line here
(or :func:`register_defense` from outside the package). PGSL is one of them; the others are the
baselines it is compared with (paper §V-C, docs/design.md#baselines-and-attacks).
"""

from __future__ import annotations

from pgsl.defenses.base import Defense, NoParams, parse_params
from pgsl.defenses.dp import GaussianDP
from pgsl.defenses.mid import MID
from pgsl.defenses.noise import LaplaceNoise
from pgsl.defenses.none import VanillaSplit
from pgsl.defenses.nopeek import NoPeek
from pgsl.defenses.pgsl import PGSL
from pgsl.defenses.ressfl import ResSFL

__all__ = ["DEFENSES", "Defense", "NoParams", "get_defense", "parse_params", "register_defense"]

DEFENSES: dict[str, type[Defense]] = {
    "pgsl": PGSL,
    "none": VanillaSplit,
    "noise": LaplaceNoise,
    "nopeek": NoPeek,
    "dp": GaussianDP,
    "mid": MID,
    "ressfl": ResSFL,
}


def get_defense(name: str) -> type[Defense]:
    """The defence class registered under ``name``; a clear error for an unknown name."""
    try:
        return DEFENSES[name]
    except KeyError:
        raise ValueError(f"unknown defence {name!r}; choose one of {', '.join(DEFENSES)}") from None


def register_defense(name: str, cls: type[Defense]) -> None:
    """Add a defence from outside the package (a plug-in, a test)."""
    if name in DEFENSES and DEFENSES[name] is not cls:
        raise ValueError(f"a different defence is already registered as {name!r}")
    DEFENSES[name] = cls
