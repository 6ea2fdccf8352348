"""Defences as plug-ins: the registry maps a name (``pgsl train --defense NAME``) to its class.

A new defence is one file with a :class:`~pgsl.defenses.base.Defense` subclass and one line here
(or :func:`register_defense` from outside the package). PGSL is one of them; the others are the
baselines it is compared with (paper §V-C, docs/design.md#baselines-and-attacks). Importing this
package loads no defence module: a defence's module is imported when its name is first looked up
(:class:`~pgsl.registry.Registry`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pgsl.registry import Registry

if TYPE_CHECKING:
    from pgsl.defenses.base import Defense

__all__ = ["DEFENSES", "PROPOSED", "VANILLA", "Defense", "NoParams", "get_defense", "parse_params",
           "register_defense", "title"]

DEFENSES: Registry[Defense] = Registry("defence", {
    "pgsl": "pgsl.defenses.pgsl:PGSL",
    "none": "pgsl.defenses.none:VanillaSplit",
    "noise": "pgsl.defenses.noise:LaplaceNoise",
    "nopeek": "pgsl.defenses.nopeek:NoPeek",
    "dp": "pgsl.defenses.dp:GaussianDP",
    "mid": "pgsl.defenses.mid:MID",
    "ressfl": "pgsl.defenses.ressfl:ResSFL",
})

PROPOSED = "pgsl"  # the paper's defence: the default, and the one the report discusses
VANILLA = "none"  # the undefended split: every comparison's anchor


def get_defense(name: str) -> type[Defense]:
    """The defence class registered under ``name``; a clear error for an unknown name."""
    return DEFENSES.get_class(name)


def title(name: str) -> str:
    """The registered defence's name in tables and figures (its ``title``, else ``name``)."""
    return DEFENSES.get_class(name).title or name


def register_defense(name: str, cls: type[Defense]) -> None:
    """Add a defence from outside the package (a plug-in, a test)."""
    DEFENSES.register(name, cls)


def __getattr__(name: str) -> Any:  # the base classes, imported (with torch) on first use
    if name in ("Defense", "NoParams", "parse_params"):
        from pgsl.defenses import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
