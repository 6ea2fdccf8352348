"""The privacy-utility frontier: test accuracy against the learned attack's reconstruction error.

For each defence we sweep its strength -- its settings (:attr:`~pgsl.defenses.base.Defense.settings`,
or the values asked for: :mod:`pgsl.experiments.plan`), e.g. Laplacian noise scale b, NoPeek weight
alpha, PGSL's mu and its pixel budget -- train one run per setting with the same trainer, attack it
with the learned black-box inversion (:data:`pgsl.attacks.LEARNED`) under the Table I protocol, and
plot one curve per defence and knob, with the undefended split as the anchor. Where the attacker
(the server) sees more than one view (PGSL: what crossed the cut and the maps it recovers), a point
takes the *lower* of the errors, so the curve is the defence's worst case.

Every stage is cached in ``out`` with the key that produced it (:mod:`pgsl.experiments.cache`): a
run with ``metrics.json`` is not retrained (a run killed mid-training resumes from its checkpoint; a
run of another configuration is refused), a point whose ``point.json`` holds the same key is not
re-attacked (another protocol's point is attacked again).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path

from pgsl.attacks import LEARNED
from pgsl.checkpoint import write_json
from pgsl.config import Config
from pgsl.experiments.cache import as_key, ensure_trained
from pgsl.experiments.figures import pyplot, save_figure
from pgsl.experiments.plan import Arm
from pgsl.experiments.privacy import PrivacyConfig, evaluate_privacy
from pgsl.experiments.results import FrontierPoint, PrivacyRow, rows_from_dicts, write_rows
from pgsl.runtime import METRICS, Reporter
from pgsl.split.trainer import DECISION

log = logging.getLogger(__name__)

POINT = "point.json"


def run_dir(root: Path, arm: Arm) -> Path:
    """Where the arm's run lives: ``root/runs/<name>``."""
    return root / "runs" / arm.name


def train_point(base: Config, arm: Arm, root: Path, device: str,
                reporter: Reporter | None = None) -> Path:
    """Train the arm's run unless it is complete (resuming a killed one); return its folder. A
    folder holding a run of another configuration is refused (:func:`ensure_trained`)."""
    path = run_dir(root, arm)
    ensure_trained(arm.configure(base), path, device=device, reporter=reporter,
                   before_training=lambda: (path / POINT).unlink(missing_ok=True))
    return path


def evaluate_point(base: Config, arm: Arm, root: Path, pc: PrivacyConfig, device: str,
                   reporter: Reporter | None = None,
                   known: dict[str, list[PrivacyRow]] | None = None) -> FrontierPoint:
    """Train (or reuse) the arm's run, attack it (or reuse the result); return its row. The
    result is cached in the run's ``point.json`` with its key (the run's configuration and the
    attack's protocol): a point cached under another key is attacked again.

    ``known``: Table I rows already computed for some run folders (same protocol), by folder."""
    path = train_point(base, arm, root, device, reporter)
    cached = path / POINT
    key = as_key({"config": arm.configure(base).key(), "privacy": dataclasses.asdict(pc)})
    if cached.is_file():
        saved = json.loads(cached.read_text())
        if saved.get("key") == key:
            return rows_from_dicts(FrontierPoint, [saved["row"]], str(cached))[0]
        log.info("%s: cached under another protocol, attacking again", cached)
    metrics = json.loads((path / METRICS).read_text())
    scored = (known or {}).get(str(path)) or evaluate_privacy(path, pc, device)[0]
    rows = [r for r in scored if r.attack == LEARNED]
    if not rows:
        raise ValueError(f"no learned-inversion ({LEARNED}) score for {path}")
    worst = min(rows, key=lambda r: r.mse_mean)  # the attacker keeps its better view
    row = FrontierPoint(curve=arm.curve, value=arm.setting.value, run=arm.name,
                        accuracy=metrics["test_accuracy"][DECISION], n_test=metrics["n_test"],
                        target=worst.target, mse=worst.mse_mean, mse_std=worst.mse_std,
                        ssim=worst.ssim_mean, n_victims=worst.n_victims)
    write_json(cached, {"key": key, "row": dataclasses.asdict(row)})
    return row


def plot(rows: list[FrontierPoint], path: Path, title: str) -> None:
    """One line per defence and knob (points sorted by the knob), accuracy over reconstruction
    MSE; a defence at its defaults alone (the vanilla split) is a single star."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    markers = "os^vDPXph<>"
    for i, curve in enumerate(dict.fromkeys(r.curve for r in rows)):
        pts = sorted((r for r in rows if r.curve == curve), key=lambda r: r.value)
        anchor = all(math.isnan(r.value) for r in pts)  # defaults only: no knob to draw along
        xs, ys = [r.mse for r in pts], [100 * r.accuracy for r in pts]
        errs = [r.mse_std for r in pts]
        ax.errorbar(xs, ys, xerr=errs, marker="*" if anchor else markers[i % len(markers)],
                    markersize=12 if anchor else 6, linestyle="none" if anchor else "-", label=curve,
                    capsize=2, elinewidth=0.6)
        if not anchor:
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


def frontier(base: Config, out: Path, arms: Sequence[Arm], pc: PrivacyConfig, device: str = "cpu",
             reporter: Reporter | None = None,
             known: dict[str, list[PrivacyRow]] | None = None,
             runs_root: Path | None = None) -> list[FrontierPoint]:
    """Evaluate every arm (:func:`pgsl.experiments.plan.arms`) and write ``frontier.csv``,
    ``frontier.json`` and ``frontier.png`` into ``out``; the runs go to ``runs_root/runs``
    (default ``out/runs``). Only the learned inversion's budget of ``pc`` is used."""
    pc = dataclasses.replace(pc, attacks=(LEARNED,),
                             budgets={k: v for k, v in pc.budgets.items() if k == LEARNED})
    if not arms:
        raise ValueError("a frontier needs at least one defence setting")
    out.mkdir(parents=True, exist_ok=True)
    rows: list[FrontierPoint] = []
    for arm in arms:
        rows.append(evaluate_point(base, arm, runs_root or out, pc, device, reporter, known))
        write_rows(out / "frontier.csv", rows)  # the points so far (each also cached in its run)
    title = (f"{base.data.dataset}: privacy-utility frontier ({len(rows)} runs, "
             f"{rows[0].n_victims} victims, aux {pc.aux or 'half test set'})")
    plot(rows, out / "frontier.png", title)
    # written last: its presence means the whole frontier is done
    write_rows(out / "frontier.json", rows, config=dataclasses.asdict(pc), dataset=base.data.dataset)
    return rows
