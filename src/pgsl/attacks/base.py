"""The interface every adversary tool implements: ``reconstruct(view) -> images``.

An attack is one class: its name, what it needs of a view (:class:`~pgsl.attacks.view.Need`), its
budget (a frozen dataclass: victims, iterations, epochs ...) and the math in :meth:`reconstruct`.
The base class does the bookkeeping around it -- refuses a view that lacks what the attack needs,
restricts the view to the budget's victims, seeds a private RNG stream (the caller's global RNG
is left as it was) and times the call -- so a new attack is one file and one registry line
(:data:`pgsl.attacks.ATTACKS`). Modelled on breaching's ``attacker.reconstruct`` and
torchattacks' ``Attack.__call__``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar, cast

import torch
from torch import Tensor

from pgsl.attacks.view import AttackerView
from pgsl.typed import build

__all__ = ["Attack", "Budget", "Reconstruction", "parse_budget"]


@dataclass(frozen=True)
class Budget:
    """How much an attack may spend. ``victims``: how many of the view's victims it attacks
    (None: all of them); subclasses add their own knobs."""

    victims: int | None = None


@dataclass(frozen=True)
class Reconstruction:
    """``images``: ``(N, C, H, W)`` in [0, 1]; ``labels``: ``(N,)`` the labels the attack
    recovered, if it recovers labels; ``seconds``: wall time of the attack."""

    images: Tensor
    labels: Tensor | None = None
    seconds: float = 0.0


def parse_budget(cls: type[Budget], values: dict[str, Any], attack: str) -> Budget:
    """A budget from ``{knob: value}``; unknown knobs are refused with the attack's name."""
    return build(cls, values, field=f"attack {attack!r}: budget ",
                 unknown=f"attack {attack!r} has no budget knob(s) {{names}}; its knobs: {{known}}")


_Budget = Budget  # the base class, for annotations inside Attack (whose Budget is the subclass's)
B = TypeVar("B", bound=Budget)


class Attack(Generic[B]):
    """Base class, generic over its budget: ``class MIA(Attack[MIABudget])`` with
    ``Budget = MIABudget``. Subclasses set the class attributes and implement :meth:`reconstruct`,
    where ``self.budget`` has the subclass's budget type."""

    name: ClassVar[str]
    title: ClassVar[str]
    needs: ClassVar[frozenset[str]] = frozenset()
    Budget: ClassVar[type[_Budget]] = _Budget  # the class of B (a ClassVar cannot name B itself)

    def __init__(self, budget: B | None = None, *, seed: int = 0) -> None:
        given = self.Budget() if budget is None else budget
        if not isinstance(given, self.Budget):
            raise TypeError(f"{self.name} takes a {self.Budget.__name__}, got {type(given).__name__}")
        self.budget: B = cast(B, given)
        self.seed = seed

    def missing(self, view: AttackerView) -> set[str]:
        """What this attack needs that ``view`` does not hold (empty: it can run)."""
        return set(self.needs) - view.holds()

    def __call__(self, view: AttackerView) -> Reconstruction:
        if lacking := self.missing(view):
            raise ValueError(f"{self.name} cannot attack target {view.target!r}: it needs "
                             + "; ".join(sorted(lacking)))
        view = view.first(self.budget.victims)
        devices = [view.observed.device] if view.observed.device.type == "cuda" else []
        t0 = time.perf_counter()
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.seed)
            out = self.reconstruct(view)
        if out.images.shape[1:] != view.image_shape or len(out.images) != len(view.observed):
            raise RuntimeError(f"{self.name} returned {tuple(out.images.shape)} for "
                               f"{len(view.observed)} victims of shape {view.image_shape}")
        return Reconstruction(out.images.detach(), out.labels, time.perf_counter() - t0)

    def reconstruct(self, view: AttackerView) -> Reconstruction:
        """The victims' images ``(N, C, H, W)`` in [0, 1] from what ``view`` holds."""
        raise NotImplementedError
