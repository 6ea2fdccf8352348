"""One reader from ``{name: value}`` (TOML, JSON, ``--set``, ``--budget``, ``--defense-option``) to a
dataclass: config sections, defence parameters and attack budgets all go through :func:`build`, so
each refuses unknown names and values of the wrong type alike (``dlg.iterations=1.5`` is refused,
not truncated later)."""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, TypeVar, Union

T = TypeVar("T")


def build(cls: type[T], values: Mapping[str, Any], *, unknown: str, field: str = "") -> T:
    """``cls(**values)`` after checking every value against its field's annotation: ``bool``,
    ``int`` (not a bool), ``float`` (an int is widened), ``str``, ``Literal[...]``, ``X | None``,
    ``tuple[X, ...]`` or ``tuple[X, Y]`` (a list is accepted), ``dict`` / ``Any`` (as given) and a
    dataclass (a nested table, read by this same function).
    ``unknown``: the message for names ``cls`` lacks; ``{names}`` and ``{known}`` are filled in.
    ``field``: what precedes a field's name in a wrong value's message (``"[train] "``).

    Raises:
        ValueError: an unknown name (``unknown``); ``"<field><name> must be <type>, got <value>"``;
            and whatever ``cls`` itself refuses.
    """
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    fields = {f.name for f in dataclasses.fields(cls)}
    extra = set(values) - fields
    if extra:
        raise ValueError(unknown.format(names=sorted(extra), known=", ".join(sorted(fields)) or "none"))
    hints = typing.get_type_hints(cls)
    return cls(**{name: _check(value, hints[name], field + name) for name, value in values.items()})


def _check(value: Any, hint: Any, name: str) -> Any:
    if isinstance(hint, type) and dataclasses.is_dataclass(hint) and isinstance(value, Mapping):
        return build(hint, value, field=f"{name}.",
                     unknown=f"{name} has no field(s) {{names}}; its fields: {{known}}")
    ok, converted = _convert(value, hint)
    if not ok:
        raise ValueError(f"{name} must be {_describe(hint)}, got {value!r}")
    return converted


def _convert(value: Any, hint: Any) -> tuple[bool, Any]:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any or hint is object:
        return True, value
    if origin in (Union, types.UnionType):
        for arm in args:
            ok, converted = _convert(value, arm)
            if ok:
                return True, converted
        return False, value
    if origin is Literal:
        return value in args, value
    if hint is type(None):
        return value is None, value
    if hint is bool:
        return isinstance(value, bool), value
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False, value
        return True, float(value)
    if hint is str:
        return isinstance(value, str), value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            return False, value
        arms = [args[0]] * len(value) if len(args) == 2 and args[1] is Ellipsis else list(args)
        if len(arms) != len(value):
            return False, value
        out = [_convert(v, a) for v, a in zip(value, arms, strict=True)]
        return all(ok for ok, _ in out), tuple(v for _, v in out)
    if origin is dict or hint is dict:
        return isinstance(value, Mapping), dict(value) if isinstance(value, Mapping) else value
    return isinstance(value, origin or hint), value


def _describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if hint is type(None):
        return "none"
    if origin is tuple:
        return "a list"
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    return names.get(hint, getattr(hint, "__name__", str(hint)))
