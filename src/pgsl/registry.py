"""A registry of plug-ins by name whose classes are imported only when one is looked up.

:data:`pgsl.defenses.DEFENSES` and :data:`pgsl.attacks.ATTACKS` are registries: a name maps to
``"module:Class"`` until the class is first needed, so listing names, checking that a name is
registered or building a :class:`~pgsl.config.Config` loads no plug-in module (no torch, no Opacus),
and looking one name up loads that plug-in only. Classes registered at run time (a plug-in, a test)
sit beside the built-in ones.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from typing import Generic, TypeVar

T = TypeVar("T")

__all__ = ["Registry"]


class Registry(MutableMapping[str, type[T]], Generic[T]):
    """Names -> plug-in classes, in registration order. ``what`` names the kind in messages
    ("defence", "attack")."""

    def __init__(self, what: str, builtin: Mapping[str, str]) -> None:
        self.what = what
        self._entries: dict[str, str | type[T]] = dict(builtin)

    def __getitem__(self, name: str) -> type[T]:
        entry = self._entries[name]
        if isinstance(entry, str):
            module, _, attr = entry.partition(":")
            entry = getattr(importlib.import_module(module), attr)
            self._entries[name] = entry
        return entry

    def __setitem__(self, name: str, cls: type[T]) -> None:
        self._entries[name] = cls

    def __delitem__(self, name: str) -> None:
        del self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def get_class(self, name: str) -> type[T]:
        """The class registered under ``name``; a clear error naming the registered ones."""
        self.check([name])
        return self[name]

    def check(self, names: Iterable[str]) -> None:
        """Refuse any name not registered (nothing is imported)."""
        for name in names:
            if name not in self._entries:
                raise ValueError(f"unknown {self.what} {name!r}; choose from {', '.join(self._entries)}")

    def register(self, name: str, cls: type[T]) -> None:
        """Add ``cls`` under ``name``; a different class already registered there is refused."""
        if name in self._entries and self[name] is not cls:
            raise ValueError(f"a different {self.what} is already registered as {name!r}")
        self._entries[name] = cls
