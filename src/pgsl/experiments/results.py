"""Typed result rows: one frozen dataclass per kind of row, written and read by one pair of
functions, so the drivers, the report, the CLI and ``pgsl reproduce`` share one schema.

A file written by :func:`write_rows` (``.csv`` for people, ``.json`` for programs) is read back
by :func:`read_rows`, which refuses rows whose fields do not match the dataclass (a renamed field
fails at once, with the file's name, not as a KeyError at the end of a long run).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pgsl.checkpoint import write_csv, write_json

__all__ = ["BaselineRow", "BenchmarkRow", "BenchmarkSummary", "FrontierPoint", "HijackRow", "MuSweepRow",
           "PrivacyRow", "RobustnessRow", "read_rows", "rows_from_dicts", "rows_to_dicts", "write_rows"]


@dataclass(frozen=True)
class PrivacyRow:
    """Table I: one attack against one target of one trained run; scores are means and standard
    deviations over the victims (reconstructions against the clean images, in [0, 1])."""

    dataset: str
    defense: str  # the defence's registry name
    target: str  # "cut" or a server observable ("recovered")
    attack: str  # the attack's registry name
    n_victims: int
    mse_mean: float
    mse_std: float
    psnr_mean: float
    psnr_std: float
    ssim_mean: float
    ssim_std: float
    paper_mse: float | None  # the paper's Table I figure for this cell, if it has one
    label_accuracy: float | None  # attacks that recover labels
    seconds: float
    run: str
    # over seeds (``pgsl privacy --seeds N``): the means and per-victim stds above are averaged
    # over the seeds; these are the standard deviations of the per-seed means (None: one seed)
    seeds: int = 1
    mse_seed_std: float | None = None
    psnr_seed_std: float | None = None
    ssim_seed_std: float | None = None


@dataclass(frozen=True)
class HijackRow:
    """A malicious server (FSHA) against one defence's client, one seed, with the client's
    detector watching: the decoder's reconstructions of the victims at the end (means and stds
    over victims), the mean-image baseline, and when the detector flagged the hijack and whether
    it flagged honest training of the same client (None: never)."""

    dataset: str
    defense: str
    seed: int
    steps: int
    n_victims: int
    mse_mean: float
    mse_std: float
    ssim_mean: float
    ssim_std: float
    mean_image_mse: float
    mean_image_ssim: float
    detected_at: int | None  # the step at which SplitGuard flagged the hijack
    false_alarm_at: int | None  # the step at which it flagged honest training
    fsha_score: float | None  # SplitGuard's mean score under the hijack / honest training
    honest_score: float | None
    curve: list[dict[str, float]]  # [{"step", "mse", "ssim"}] during the hijack
    seconds: float
    run: str


@dataclass(frozen=True)
class FrontierPoint:
    """One defence setting: its test accuracy (the decision) and the learned attack's error on
    the attacker's best view of it."""

    curve: str
    value: float
    accuracy: float
    mse: float
    mse_std: float
    ssim: float
    target: str
    n_victims: int
    n_test: int
    run: str


@dataclass(frozen=True)
class BaselineRow:
    """``pgsl baselines``: one model on the test split, with the metrics a medical reader needs
    (the decision's, for a split model); ``model`` "majority" is the always-the-most-frequent-class
    baseline."""

    dataset: str
    model: str  # "pgsl", "vanilla split", "plain CNN", "majority"
    accuracy: float
    balanced_accuracy: float
    macro_f1: float | None
    auc_ovr: float | None
    recall: dict[str, float | None]
    n_test: int
    run: str


@dataclass(frozen=True)
class BenchmarkRow:
    """``pgsl benchmark``'s matrix: one attack against one target of one run (a defence at one
    setting, one training seed). Scores are means over the victims; ``accuracy`` is the run's
    decision accuracy on the test set; ``epsilon``: the run's DP guarantee, if it has one."""

    dataset: str
    defense: str
    setting: str  # "knob=value", or "default"
    value: float
    seed: int
    attack: str
    target: str
    n_victims: int
    accuracy: float
    mse: float
    psnr: float
    ssim: float
    epsilon: float | None
    run: str


@dataclass(frozen=True)
class BenchmarkSummary:
    """One defence setting over the seeds: accuracy, and the strongest attack (the lowest MSE on
    the attacker's best target), each as mean and std over the seeds; ``ssim_max``: the highest
    seed-mean SSIM of any attack but the mean-image baseline (and which one)."""

    defense: str
    setting: str
    value: float
    seeds: int
    accuracy: float
    accuracy_std: float
    strongest: str
    mse: float
    mse_std: float
    ssim: float
    ssim_std: float
    ssim_max: float
    ssim_max_attack: str
    epsilon: float | None


@dataclass(frozen=True)
class RobustnessRow:
    """Table II: accuracy (fractions) of one model or stream on clean and adversarial images;
    ``adversarial`` maps an attack's name to the accuracy under it."""

    model: str
    defense: str
    stream: str
    n_test: int
    clean: float
    adversarial: dict[str, float]
    paper_clean: float | None = None
    paper: dict[str, float] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True)
class MuSweepRow:
    """Fig. 3: mean MSE to the clean images of APG's low-rank part at one mu (mu 0: the attacked
    image itself, no recovery)."""

    dataset: str
    mu: float
    mse_mean: float
    mse_std: float
    n_images: int
    iterations: float
    converged: float  # fraction of images whose solve met its tolerance
    solver: str


R = TypeVar("R")


def rows_to_dicts(rows: Sequence[Any]) -> list[dict[str, Any]]:
    return [dataclasses.asdict(r) for r in rows]


def rows_from_dicts(cls: type[R], items: Sequence[dict[str, Any]], source: str = "rows") -> list[R]:
    """Rows of ``cls`` from dicts; a missing or unknown field is an error naming ``source``."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    required = {f.name for f in dataclasses.fields(cls)  # type: ignore[arg-type]
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    out = []
    for i, item in enumerate(items):
        if missing := required - set(item):
            raise ValueError(f"{source}: row {i} lacks {sorted(missing)} (a {cls.__name__} has "
                             f"{sorted(names)})")
        if unknown := set(item) - names:
            raise ValueError(f"{source}: row {i} has unknown field(s) {sorted(unknown)}")
        out.append(cls(**item))
    return out


def _flat(row: dict[str, Any]) -> dict[str, Any]:
    """Nested dicts as ``outer.inner`` columns (CSV only)."""
    flat: dict[str, Any] = {}
    for k, v in row.items():
        if isinstance(v, dict):
            flat.update({f"{k}.{kk}": vv for kk, vv in v.items()})
        else:
            flat[k] = "" if v is None else v
    return flat


def write_rows(path: Path, rows: Sequence[Any], **extra: Any) -> None:
    """``path`` with suffix ``.json``: ``{"rows": [...], **extra}``; ``.csv``: one column per
    field (nested dicts flattened). Written atomically."""
    dicts = rows_to_dicts(rows)
    if path.suffix == ".json":
        write_json(path, {**extra, "rows": dicts})
    elif path.suffix == ".csv":
        flat = [_flat(d) for d in dicts]
        columns = list(dict.fromkeys(k for d in flat for k in d))
        write_csv(path, flat, columns)
    else:
        raise ValueError(f"write_rows writes .json or .csv, not {path.name}")


def read_rows(path: Path, cls: type[R]) -> list[R]:
    """The rows of a ``.json`` file written by :func:`write_rows`."""
    data = json.loads(path.read_text())
    return rows_from_dicts(cls, data["rows"], str(path))
