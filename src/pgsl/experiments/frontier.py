"""The privacy-utility frontier: test accuracy against the learned attack's reconstruction error.

For each defence we sweep its strength -- Laplacian noise scale b, NoPeek weight alpha, PGSL's mu
and its pixel budget -- train one run per setting with the same trainer, attack it with the learned
black-box inversion (MIA, :mod:`pgsl.attacks.mia`) under the Table I protocol, and plot one curve per
defence, with the undefended split as the anchor. For PGSL the attacker (the server) sees both what
crossed the cut and the maps it recovers; a point takes the *lower* of the two errors, so the curve
is PGSL's worst case.

Every stage is cached in ``out`` with the key that produced it (:mod:`pgsl.experiments.cache`): a
run with ``metrics.json`` is not retrained (a run killed mid-training resumes from its checkpoint; a
run of another configuration is refused), a point whose ``point.json`` holds the same key is not
re-attacked (another protocol's point is attacked again).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pgsl.checkpoint import write_json
from pgsl.config import Config
from pgsl.experiments.cache import as_key
from pgsl.experiments.figures import pyplot, save_figure
from pgsl.experiments.privacy import PrivacyConfig, evaluate_privacy
from pgsl.experiments.results import FrontierPoint, PrivacyRow, rows_from_dicts, write_rows
from pgsl.experiments.train import METRICS, Reporter, ensure_trained
from pgsl.split.trainer import DECISION

log = logging.getLogger(__name__)

POINT = "point.json"
CURVES = {"none": "vanilla split (no defence)", "noise": "Laplacian noise (b)",
          "nopeek": "NoPeek (alpha)", "pgsl-mu": "PGSL (mu, 4-pixel budget)",
          "pgsl-pixels": "PGSL (pixel budget, mu = 0.55)"}


@dataclasses.dataclass(frozen=True)
class Point:
    """One defence setting: the curve it belongs to, the knob's value, and the config changes."""

    curve: str
    value: float
    changes: dict[str, dict[str, Any]]

    @property
    def name(self) -> str:
        return self.curve if self.curve == "none" else f"{self.curve}-{self.value:g}"


def sweep(noise: Sequence[float], nopeek: Sequence[float], mu: Sequence[float],
          pixels: Sequence[int], base_mu: float = 0.55, base_pixels: int = 4) -> list[Point]:
    """The settings to train: the undefended anchor, then each defence's knob in turn."""
    points = [Point("none", 0.0, {"defense": {"kind": "none"}})]
    points += [Point("noise", b, {"defense": {"kind": "noise", "params": {"scale": b}}}) for b in noise]
    points += [Point("nopeek", a, {"defense": {"kind": "nopeek", "params": {"weight": a}}})
               for a in nopeek]
    points += [Point("pgsl-mu", m, {"defense": {"kind": "pgsl"}, "recovery": {"mu": m},
                                    "pixel_attack": {"pixels": base_pixels}}) for m in mu]
    points += [Point("pgsl-pixels", p, {"defense": {"kind": "pgsl"}, "recovery": {"mu": base_mu},
                                        "pixel_attack": {"pixels": p, "pixels_per_step": min(2, p)}})
               for p in pixels]
    return points


def run_dir(root: Path, point: Point) -> Path:
    """Where the point's run lives: ``root/runs/<name>``."""
    return root / "runs" / point.name


def train_point(base: Config, point: Point, root: Path, device: str,
                reporter: Reporter | None = None) -> Path:
    """Train the point's run unless it is complete (resuming a killed one); return its folder. A
    folder holding a run of another configuration is refused (:func:`ensure_trained`)."""
    path = run_dir(root, point)
    ensure_trained(configure(base, point), path, device=device, reporter=reporter,
                   before_training=lambda: (path / POINT).unlink(missing_ok=True))
    return path


def configure(base: Config, point: Point) -> Config:
    cfg = base
    for section, values in point.changes.items():
        cfg = cfg.replace(**{section: values})
    return cfg


def evaluate_point(base: Config, point: Point, root: Path, pc: PrivacyConfig, device: str,
                   reporter: Reporter | None = None,
                   known: dict[str, list[PrivacyRow]] | None = None) -> FrontierPoint:
    """Train (or reuse) the point's run, attack it (or reuse the result); return its row. The
    result is cached in the run's ``point.json`` with its key (the run's configuration and the
    attack's protocol): a point cached under another key is attacked again.

    ``known``: Table I rows already computed for some run folders (same protocol), by folder."""
    path = train_point(base, point, root, device, reporter)
    cached = path / POINT
    key = as_key({"config": configure(base, point).key(), "privacy": dataclasses.asdict(pc)})
    if cached.is_file():
        saved = json.loads(cached.read_text())
        if saved.get("key") == key:
            return rows_from_dicts(FrontierPoint, [saved["row"]], str(cached))[0]
        log.info("%s: cached under another protocol, attacking again", cached)
    metrics = json.loads((path / METRICS).read_text())
    scored = (known or {}).get(str(path)) or evaluate_privacy(path, pc, device)[0]
    rows = [r for r in scored if r.attack == "mia"]
    if not rows:
        raise ValueError(f"no learned-inversion (mia) score for {path}")
    worst = min(rows, key=lambda r: r.mse_mean)  # the attacker keeps its better view
    row = FrontierPoint(curve=point.curve, value=point.value, run=point.name,
                        accuracy=metrics["test_accuracy"][DECISION], n_test=metrics["n_test"],
                        target=worst.target, mse=worst.mse_mean, mse_std=worst.mse_std,
                        ssim=worst.ssim_mean, n_victims=worst.n_victims)
    write_json(cached, {"key": key, "row": dataclasses.asdict(row)})
    return row


def plot(rows: list[FrontierPoint], path: Path, title: str) -> None:
    """One line per defence (points sorted by the knob), accuracy over reconstruction MSE."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    markers = {"none": "*", "noise": "o", "nopeek": "s", "pgsl-mu": "^", "pgsl-pixels": "v"}
    for curve, label in CURVES.items():
        pts = sorted((r for r in rows if r.curve == curve), key=lambda r: r.value)
        if not pts:
            continue
        xs, ys = [r.mse for r in pts], [100 * r.accuracy for r in pts]
        errs = [r.mse_std for r in pts]
        ax.errorbar(xs, ys, xerr=errs, marker=markers[curve], markersize=12 if curve == "none" else 6,
                    linestyle="none" if curve == "none" else "-", label=label, capsize=2,
                    elinewidth=0.6)
        if curve != "none":
            for r in pts:
                ax.annotate(f"{r.value:g}", (r.mse, 100 * r.accuracy), fontsize=7,
                            textcoords="offset points", xytext=(4, 3))
    ax.set_xlabel("MIA reconstruction MSE of the clean image, mean ± std over victims "
                  "(higher = more private)", fontsize=8)
    ax.set_ylabel("test accuracy (%)  (PGSL: fused S_awa)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


def frontier(base: Config, out: Path, points: Sequence[Point], pc: PrivacyConfig, device: str = "cpu",
             reporter: Reporter | None = None,
             known: dict[str, list[PrivacyRow]] | None = None,
             runs_root: Path | None = None) -> list[FrontierPoint]:
    """Evaluate every point and write ``frontier.csv``, ``frontier.json`` and ``frontier.png``
    into ``out``; the runs go to ``runs_root/runs`` (default ``out/runs``)."""
    pc = dataclasses.replace(pc, attacks=("mia",))
    out.mkdir(parents=True, exist_ok=True)
    rows: list[FrontierPoint] = []
    for point in points:
        rows.append(evaluate_point(base, point, runs_root or out, pc, device, reporter, known))
        write_rows(out / "frontier.csv", rows)  # the points so far (each also cached in its run)
    title = (f"{base.data.dataset}: privacy-utility frontier ({len(rows)} runs, "
             f"{rows[0].n_victims} victims, aux {pc.aux or 'half test set'})")
    plot(rows, out / "frontier.png", title)
    # written last: its presence means the whole frontier is done
    write_rows(out / "frontier.json", rows, config=dataclasses.asdict(pc), dataset=base.data.dataset)
    return rows
