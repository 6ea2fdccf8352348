"""The experiment engine's vocabulary: which runs an experiment trains and how hard it attacks them.

- An :class:`Arm` is one trained configuration of a registered defence: the defence's name and one
  of its settings (:attr:`~pgsl.defenses.base.Defense.settings`, or any value through
  :meth:`~pgsl.defenses.base.Defense.setting`). ``pgsl frontier``, ``pgsl benchmark`` and
  ``pgsl reproduce`` all train arms, so a defence registered at run time reaches every one of them.
- A :class:`Plan` is how much of each experiment to run: config changes for every run, training
  seeds, the defences and their settings, and each experiment's protocol (Table I's attacks and
  budgets, the hijack, Table II, the mu sweep). Plans are TOML files, like presets:
  ``configs/plans/<experiment>/<name>.toml`` (``pgsl plans`` lists them), or a path to one's own.

Results are cached by the key that produced them (:mod:`pgsl.experiments.cache`).
"""

from __future__ import annotations

import dataclasses
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pgsl.defenses
from pgsl.config import PRESET_DIR, Config
from pgsl.defenses import get_defense, title
from pgsl.defenses.base import DEFAULT, Setting
from pgsl.experiments.hijack import HijackConfig
from pgsl.experiments.mu_sweep import SweepConfig
from pgsl.experiments.privacy import PrivacyConfig
from pgsl.experiments.robustness import RobustnessConfig
from pgsl.typed import build

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["Arm", "EXPERIMENTS", "PLAN_DIR", "Plan", "arms", "available_plans", "load_plan",
           "parse_setting", "setting_options", "strengths"]

PLAN_DIR = PRESET_DIR / "plans"
EXPERIMENTS = ("benchmark", "reproduce")


def parse_setting(defense: str, spec: str) -> Setting:
    """``"default"`` (the defence at its configured options) or ``"KNOB=VALUE [OPTION=VALUE ...]"``:
    the defence's :meth:`~pgsl.defenses.base.Defense.setting` of that knob, with the other options
    fixed beside it (``"weight=0.3 bottleneck=8"``)."""
    if spec.strip() == "default":
        return DEFAULT
    pairs: list[tuple[str, float, str]] = []
    for item in spec.split():
        knob, sep, text = item.partition("=")
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not sep or not knob or math.isnan(value):
            raise ValueError(f"a setting of {defense!r} is 'default' or KNOB=NUMBER [OPTION=NUMBER ...], "
                             f"got {spec!r}")
        pairs.append((knob, value, text))
    (knob, value, _), *rest = pairs
    # the knob is a number; a fixed option written as an integer stays one (bottleneck=8)
    fixed = [(k, int(t) if t.lstrip("+-").isdigit() else v) for k, v, t in rest]
    return get_defense(defense).setting(knob, value, **dict(fixed))


def strengths(defense: str, specs: Mapping[str, Sequence[str]] | None = None) -> tuple[Setting, ...]:
    """The defence's settings: ``specs[defense]`` parsed (:func:`parse_setting`) when given, else
    its declared ones, else its defaults alone."""
    if specs and defense in specs:
        return tuple(parse_setting(defense, s) for s in specs[defense])
    return get_defense(defense).settings or (DEFAULT,)


def setting_options(items: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """``DEFENCE:SPEC`` items (``--setting noise:scale=0.25``) as ``{defence: (spec, ...)}``."""
    out: dict[str, tuple[str, ...]] = {}
    for item in items:
        defense, sep, spec = item.partition(":")
        if not sep or not defense.strip() or not spec.strip():
            raise ValueError(f"--setting needs DEFENCE:KNOB=VALUE or DEFENCE:default, got {item!r}")
        out[defense.strip()] = (*out.get(defense.strip(), ()), spec.strip())
    return out


@dataclasses.dataclass(frozen=True)
class Arm:
    """One defence at one setting."""

    defense: str
    setting: Setting

    @property
    def name(self) -> str:
        """The run's folder name: ``noise-scale-0.5``, ``none`` (a default setting)."""
        s = self.setting
        return self.defense if not s.knob else f"{self.defense}-{s.knob}-{s.value:g}"

    @property
    def curve(self) -> str:
        """The line it belongs to in a frontier: the defence's title and knob."""
        name = title(self.defense)
        return name if not self.setting.knob else f"{name} ({self.setting.knob})"

    def configure(self, base: Config, fixed: Mapping[str, Mapping[str, Any]] | None = None,
                  seed: int | None = None) -> Config:
        """``base`` trained with this defence at this setting: the defence's options start from its
        defaults, ``fixed`` (``{section: {key: value}}``) changes every run, the setting last."""
        cfg = base.replace(defense={"kind": self.defense, "params": {}})
        if seed is not None:
            cfg = cfg.replace(train={"seed": seed})
        for section, values in (fixed or {}).items():
            cfg = cfg.replace(**{section: dict(values)})
        for section, values in self.setting.changes.items():
            changes = {"kind": self.defense, **values} if section == "defense" else dict(values)
            cfg = cfg.replace(**{section: changes})
        return cfg


def arms(defenses: Sequence[str] | None = None,
         specs: Mapping[str, Sequence[str]] | None = None) -> list[Arm]:
    """Every setting (:func:`strengths`) of each defence, in order; ``defenses`` None: every
    registered one."""
    registry = pgsl.defenses.DEFENSES  # read now: a defence registered at run time is included
    names = list(registry) if defenses is None else list(defenses)
    for name in names:
        get_defense(name)
    unknown = sorted(set(specs or {}) - set(names))
    if unknown:
        raise ValueError(f"settings given for defence(s) {unknown} that are not in the plan "
                         f"({', '.join(names)})")
    return [Arm(d, s) for d in names for s in strengths(d, specs)]


@dataclasses.dataclass(frozen=True)
class Plan:
    """How much of each experiment to run.

    ``train``: config changes for every run (``{section: {key: value}}``); ``seeds``: training
    seeds (the benchmark's repeats); ``defenses``: the defences trained (None: every registered
    one); ``settings``: per defence, setting specs (:func:`parse_setting`) replacing its declared
    ones; ``cv_models``: the models a MIAS cross-validation compares (defences, ``plain``,
    ``majority``); the rest: each experiment's protocol."""

    train: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    seeds: tuple[int, ...] = (0,)
    defenses: tuple[str, ...] | None = None
    settings: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    cv_models: tuple[str, ...] = ()
    privacy: PrivacyConfig = dataclasses.field(default_factory=PrivacyConfig)
    hijack: HijackConfig = dataclasses.field(default_factory=HijackConfig)
    robustness: RobustnessConfig = dataclasses.field(default_factory=RobustnessConfig)
    sweep: SweepConfig = dataclasses.field(default_factory=SweepConfig)

    def __post_init__(self) -> None:
        if len(self.seeds) < 1 or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"a plan needs distinct seeds, got {list(self.seeds)}")
        arms(self.defenses, self.settings)  # refuses an unknown defence or setting now

    def arms(self) -> list[Arm]:
        """Every setting of each of the plan's defences."""
        return arms(self.defenses, self.settings)

    def main(self) -> list[Arm]:
        """Each defence at its first setting: the runs every table compares."""
        seen: dict[str, Arm] = {}
        for arm in self.arms():
            seen.setdefault(arm.defense, arm)
        return list(seen.values())

    def narrowed(self, *, seeds: int | None = None, defenses: Sequence[str] | None = None,
                 attacks: Sequence[str] | None = None) -> Plan:
        """This plan with seeds ``0..seeds-1``, only ``defenses`` and only ``attacks`` (each when
        given); the settings and budgets of what is left out are dropped."""
        changes: dict[str, Any] = {}
        if seeds is not None:
            if seeds < 1:
                raise ValueError(f"--seeds must be >= 1, got {seeds}")
            changes["seeds"] = tuple(range(seeds))
        if defenses is not None:
            changes["defenses"] = tuple(defenses)
            changes["settings"] = {d: s for d, s in self.settings.items() if d in defenses}
        if attacks is not None:
            changes["privacy"] = dataclasses.replace(self.privacy, attacks=tuple(attacks), budgets={
                k: v for k, v in self.privacy.budgets.items() if k in attacks})
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        """The plan as plain data (JSON), every field included."""
        return dataclasses.asdict(self)


def available_plans(experiment: str) -> list[str]:
    """The plans shipped for ``experiment`` (``benchmark``, ``reproduce``)."""
    return sorted(p.stem for p in (PLAN_DIR / experiment).glob("*.toml"))


def load_plan(experiment: str, name_or_path: str) -> Plan:
    """The plan ``name_or_path`` of ``experiment``: a shipped plan's name or a TOML file's path.
    Unknown names, fields and values of the wrong type are refused with a clear error."""
    if experiment not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {experiment!r}; plans exist for {', '.join(EXPERIMENTS)}")
    path = Path(name_or_path)
    if not path.suffix:
        path = PLAN_DIR / experiment / f"{name_or_path}.toml"
    if not path.is_file():
        raise FileNotFoundError(f"{experiment} plan {name_or_path!r} not found (looked for {path}); "
                                f"available: {', '.join(available_plans(experiment))}")
    try:
        with path.open("rb") as f:
            values = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{path} is not valid TOML: {e}") from None
    return build(Plan, values, field=f"{path.name}: ",
                 unknown=f"{path.name}: unknown plan field(s) {{names}}; the fields: {{known}}")
