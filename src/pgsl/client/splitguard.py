"""SplitGuard: the client detects a server that hijacks its training (Erdogan, Küpçü & Çiçek,
"SplitGuard: Detecting and Mitigating Training-Hijacking Attacks in Split Learning", WPES 2022).

An honest server trains the task on the labels the client sends, so a batch sent with *wrong*
labels (a fake batch) comes back with a gradient that differs from the regular batches' in
direction and magnitude. A hijacking server (FSHA, :mod:`pgsl.attacks.fsha`) ignores the labels:
fake and regular gradients then look alike. After ``warmup`` steps the client turns each batch into
a fake one with probability ``p_fake`` (every label shifted by one random offset mod K), never
applies a fake batch's gradient, splits the regular gradients at random into two sets R1 and R2,
and scores (the paper's score, with its squashing ``sigmoid(mult * x) ** exp``)::

    x = (angle(F, R) * d_F - angle(R1, R2) * d_R) / (d_F + d_R),
    d_F = abs(|F| - |R|),  d_R = abs(|R1| - |R2|)

where ``F, R1, R2`` are the mean gradient vectors of each set, ``R = (R1 + R2) / 2``, ``|.|`` the
sets' mean gradient norms. Honest training scores near 1, a
hijack near 0. The gradient is the client segment's, flattened (the paper: the first layer's).

Decision rule (ours; the paper leaves the policy to the client): once ``min_fakes`` fake batches
have been scored, the client flags a hijack when the mean of the last ``min_fakes`` scores is below
``threshold``. A hijack is therefore flagged after about ``warmup + min_fakes / p_fake`` steps.
The first few scores rest on few gradients and swing between 0 and 1 in honest training too
(measured on tiny MNIST runs); a window of 10 keeps them from raising an alarm.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from pgsl.client.party import ClientParty
from pgsl.config import GuardConfig
from pgsl.errors import UserError
from pgsl.split.channel import Channel
from pgsl.split.messages import Gradient, Scores

__all__ = ["GuardedClient", "HijackDetected", "SplitGuard", "SplitGuardParams", "splitguard_score"]


class HijackDetected(UserError):
    """The server's gradients are not those of an honest task; training must stop."""


# the knobs are the config's [guard] section (``pgsl train --guard``); ``splitguard`` is ignored here
SplitGuardParams = GuardConfig


def _angle(u: Tensor, v: Tensor) -> float:
    cos = torch.dot(u, v) / (u.norm() * v.norm()).clamp(min=1e-30)
    return float(torch.arccos(cos.clamp(-1.0, 1.0)))


@dataclass
class _GradientSet:
    """Running mean gradient vector and mean gradient norm of one set."""

    total: Tensor | None = None
    norms: float = 0.0
    count: int = 0

    def add(self, g: Tensor) -> None:
        g = g.double()
        self.total = g.clone() if self.total is None else self.total + g
        self.norms += float(g.norm())
        self.count += 1

    @property
    def mean(self) -> Tensor:
        assert self.total is not None
        return self.total / self.count

    @property
    def magnitude(self) -> float:
        return self.norms / self.count


def splitguard_score(fakes: _GradientSet, r1: _GradientSet, r2: _GradientSet, *, mult: float = 5.0,
                     exp: float = 2.0) -> float:
    """The SG score in [0, 1] of the sets so far (see the module's text)."""
    r_mean = (r1.mean + r2.mean) / 2
    r_mag = (r1.magnitude + r2.magnitude) / 2
    f_gap, r_gap = abs(fakes.magnitude - r_mag), abs(r1.magnitude - r2.magnitude)
    div = max(f_gap + r_gap, 1e-30)
    x = _angle(fakes.mean, r_mean) * f_gap / div - _angle(r1.mean, r2.mean) * r_gap / div
    return float(1.0 / (1.0 + math.exp(-mult * x))) ** exp


class SplitGuard:
    """The client-side detector; call :meth:`train_step` in place of the client's.

    ``stop``: raise :class:`HijackDetected` when a hijack is flagged (False: keep training and
    only record when, as an experiment does to measure the attack past the alarm).
    """

    def __init__(self, params: SplitGuardParams | None = None, *, seed: int = 0, stop: bool = True) -> None:
        self.params = params or SplitGuardParams()
        self.stop = stop
        self._g = torch.Generator().manual_seed(seed)
        self.fakes, self.r1, self.r2 = _GradientSet(), _GradientSet(), _GradientSet()
        self.scores: list[float] = []
        self.steps = 0
        self.flagged_at: int | None = None  # the step at which the hijack was flagged

    def _uniform(self) -> float:
        return float(torch.rand((), generator=self._g))

    def train_step(self, client: ClientParty, x: Tensor, y: Tensor, channel: Channel) -> Gradient:
        p = self.params
        self.steps += 1
        fake = self.steps > p.warmup and self._uniform() < p.p_fake
        k = client.defense.num_classes
        if fake:
            shift = int(torch.randint(1, k, (), generator=self._g))
            reply = client.train_step(x, y, channel, sent_labels=(y + shift) % k, update=False)
        else:
            reply = client.train_step(x, y, channel)
        grad = client.segment_gradient()
        if fake:
            self.fakes.add(grad)
            if self.r1.count and self.r2.count:
                self.scores.append(splitguard_score(self.fakes, self.r1, self.r2, mult=p.mult, exp=p.exp))
                self._decide()
        elif self.steps > p.warmup:
            (self.r1 if self._uniform() < 0.5 else self.r2).add(grad)
        return reply

    def _decide(self) -> None:
        p = self.params
        if self.flagged_at is not None or len(self.scores) < p.min_fakes:
            return
        recent = self.scores[-p.min_fakes:]
        mean = sum(recent) / len(recent)
        if mean < p.threshold:
            self.flagged_at = self.steps
            if self.stop:
                raise HijackDetected(
                    f"SplitGuard: the server's gradients do not depend on the labels sent (mean "
                    f"score {mean:.3f} < {p.threshold} over the last {len(recent)} fake batches at step "
                    f"{self.steps}); training stopped, nothing of this step was applied")

    def state_dict(self) -> dict[str, Any]:
        sets = {name: {"total": s.total, "norms": s.norms, "count": s.count}
                for name, s in (("fakes", self.fakes), ("r1", self.r1), ("r2", self.r2))}
        return {"sets": sets, "scores": list(self.scores), "steps": self.steps,
                "flagged_at": self.flagged_at, "rng": self._g.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name in ("fakes", "r1", "r2"):
            s = state["sets"][name]
            setattr(self, name, _GradientSet(s["total"], float(s["norms"]), int(s["count"])))
        self.scores = [float(v) for v in state["scores"]]
        self.steps = int(state["steps"])
        self.flagged_at = state["flagged_at"]
        self._g.set_state(state["rng"].cpu())


class GuardedClient:
    """A :class:`ClientParty` whose training steps go through :class:`SplitGuard` (a
    :class:`~pgsl.split.trainer.Learner`)."""

    def __init__(self, client: ClientParty, guard: SplitGuard) -> None:
        self.client, self.guard = client, guard

    @property
    def device(self) -> torch.device:
        return self.client.device

    @property
    def streams(self) -> tuple[str, ...]:
        return self.client.streams

    def train_step(self, x: Tensor, y: Tensor, channel: Channel) -> Gradient:
        return self.guard.train_step(self.client, x, y, channel)

    def predict(self, x: Tensor, channel: Channel) -> Scores:
        return self.client.predict(x, channel)
