"""``pgsl benchmark``: every registered defence at each of its settings, over seeds, against every
registered attack, in one matrix.

For each defence of :data:`pgsl.defenses.DEFENSES` and each of its settings
(:attr:`~pgsl.defenses.base.Defense.settings`; its defaults when it declares none) and each
training seed, one run is trained with the plan's configuration; each registered attack of
:data:`pgsl.attacks.ATTACKS` then runs against every target of that run under the Table I protocol
(:func:`pgsl.experiments.privacy.evaluate_privacy`: the same victims and auxiliary images for
every run of a seed). Writes into ``out``:

- ``matrix.csv`` / ``matrix.json``: one :class:`~pgsl.experiments.results.BenchmarkRow` per
  defence, setting, seed, attack and target;
- ``summary.csv`` / ``summary.json`` / ``summary.md``: one
  :class:`~pgsl.experiments.results.BenchmarkSummary` per setting (mean ± std over seeds), each
  defence's privacy-utility score (:func:`score`), and the heatmap's choice of settings;
- ``heatmap.png``: attack x defence, the attack's SSIM at a matched accuracy (:func:`matched`);
- ``frontier.png``: accuracy against the strongest attack's MSE, error bars over seeds;
- ``report.html``: all of it on one page (the same section ``pgsl reproduce``'s report shows for a
  benchmark in its ``benchmark/`` folder).

Cached like ``pgsl reproduce``: a trained run (``runs/<name>/metrics.json``) is not retrained (a
killed one resumes from its checkpoint), and an attack's rows against a run
(``attacks/<run>/<attack>.json``) are not recomputed, so a killed benchmark resumes where it
stopped. A run folder whose configuration differs from the plan's is refused; an attack's cache is
recomputed when the plan's victims, auxiliary images, seeds or budget for it differ from those it
was computed with (a changed default in the code is not detected), and a run's caches are
dropped whenever the run is (re)trained. The malicious-server attack (FSHA) trains its own client
and is measured by ``pgsl hijack``, not here.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import shutil
import statistics
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pgsl.attacks import BASELINE
from pgsl.config import Config
from pgsl.defenses import VANILLA
from pgsl.experiments.cache import ensure_trained
from pgsl.experiments.figures import pyplot, save_figure
from pgsl.experiments.plan import Plan
from pgsl.experiments.privacy import PrivacyConfig, evaluate_privacy
from pgsl.experiments.results import BenchmarkRow, BenchmarkSummary, PrivacyRow, read_rows, write_rows
from pgsl.runtime import Reporter
from pgsl.split.trainer import DECISION

__all__ = ["benchmark", "matched", "score", "summarise"]

log = logging.getLogger(__name__)

SSIM_MARGIN = 0.05  # score(): an attack "learns nothing" within this SSIM of the mean image
ACCURACY_DROP = 0.03  # matched(): settings within 3 points of the vanilla split's accuracy


def _train(cfg: Config, path: Path, attacks: Path, device: str,
           reporter: Reporter | None) -> dict[str, Any]:
    """The run's metrics, training it first unless it is complete; ``attacks``: the folder of its
    cached attacks, dropped before any training (they belong to a run that no longer exists)."""
    return ensure_trained(cfg, path, device=device, reporter=reporter,
                          before_training=lambda: shutil.rmtree(attacks, ignore_errors=True))


def _attack(path: Path, attack: str, pc: PrivacyConfig, cache: Path, device: str) -> list[PrivacyRow]:
    """The attack's rows against every target of the run at ``path``, cached in ``cache`` with the
    protocol that produced them; a cache from another protocol is recomputed."""
    protocol = json.loads(json.dumps({"victims": pc.victims, "aux": pc.aux, "seed": pc.seed,
                                      "seeds": pc.seeds, "budget": pc.budgets.get(attack, {})}))
    if cache.is_file():
        if json.loads(cache.read_text()).get("protocol") == protocol:
            return read_rows(cache, PrivacyRow)
        log.info("%s: cached under another protocol, attacking again", cache)
    rows, skipped = evaluate_privacy(path, dataclasses.replace(pc, attacks=(attack,)), device)
    for line in skipped:
        log.info("skipped: %s", line)
    write_rows(cache, rows, skipped=skipped, protocol=protocol)
    return rows


def benchmark(base: Config, out: Path, plan: Plan, device: str = "cpu",
              reporter: Reporter | None = None) -> list[BenchmarkSummary]:
    """Train and attack every arm of the plan (each defence at each of its settings,
    :meth:`~pgsl.experiments.plan.Plan.arms`) over its seeds, write the matrix, the summary and the
    figures into ``out`` (see the module's text); return the summary."""
    arms = plan.arms()
    defenses = list(dict.fromkeys(a.defense for a in arms))
    attacks = plan.privacy.attacks
    # the plan's budgets for attacks not run are dropped
    pc = dataclasses.replace(plan.privacy, budgets={k: v for k, v in plan.privacy.budgets.items()
                                                    if k in attacks})
    out.mkdir(parents=True, exist_ok=True)
    matrix: list[BenchmarkRow] = []
    for arm in arms:
        setting = arm.setting
        for seed in plan.seeds:
            name = f"{arm.name}-seed{seed}"
            path = out / "runs" / name
            cache = out / "attacks" / name
            metrics = _train(arm.configure(base, plan.train, seed), path, cache, device, reporter)
            epsilon = (metrics.get("privacy") or {}).get("epsilon")
            for attack in attacks:
                for r in _attack(path, attack, pc, cache / f"{attack}.json", device):
                    matrix.append(BenchmarkRow(
                        dataset=r.dataset, defense=arm.defense, setting=setting.label, value=setting.value,
                        seed=seed, attack=attack, target=r.target, n_victims=r.n_victims,
                        accuracy=float(metrics["test_accuracy"][DECISION]), mse=r.mse_mean,
                        psnr=r.psnr_mean, ssim=r.ssim_mean, epsilon=epsilon, run=name))
            write_rows(out / "matrix.csv", matrix)  # the rows so far
    summary = summarise(matrix)
    baseline = _baseline_ssim(matrix)
    scores = {d: score([s for s in summary if s.defense == d], baseline) for d in defenses}
    chosen = matched(summary)
    name = base.data.dataset
    heatmap(matrix, chosen, out / "heatmap.png", f"{name}: attack SSIM at a matched accuracy")
    frontier_plot(summary, out / "frontier.png", f"{name}: accuracy against the strongest attack")
    write_rows(out / "summary.csv", summary)
    (out / "summary.md").write_text(summary_markdown(summary, scores, chosen, plan, attacks))
    write_rows(out / "summary.json", summary, scores=scores, dataset=name,
               matched={d: s.setting for d, s in chosen.items()},
               plan={**plan.as_dict(), "attacks": list(attacks), "defenses": defenses})
    write_rows(out / "matrix.json", matrix)  # its presence means the benchmark is done
    from pgsl.experiments.report import write_benchmark_report

    write_benchmark_report(out, name)
    return summary


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def attacker_rows(rows: Sequence[BenchmarkRow]) -> dict[str, list[BenchmarkRow]]:
    """Per attack, one row per seed: the target with the lowest MSE (the attacker keeps its better
    view). The summary's and the heatmap's numbers are both read from these rows."""
    out: dict[str, list[BenchmarkRow]] = defaultdict(list)
    for s in sorted({r.seed for r in rows}):
        for attack in dict.fromkeys(r.attack for r in rows if r.seed == s):
            out[attack].append(min((r for r in rows if r.seed == s and r.attack == attack),
                                   key=lambda r: r.mse))
    return out


def summarise(matrix: Sequence[BenchmarkRow]) -> list[BenchmarkSummary]:
    """Per (defence, setting): the accuracy over seeds; per attack, its best target per seed (the
    lowest MSE: the attacker keeps its better view) averaged over seeds; the strongest attack is the
    one with the lowest seed-mean MSE (the mean-image baseline excluded when another attack ran)."""
    groups: dict[tuple[str, str], list[BenchmarkRow]] = defaultdict(list)
    for r in matrix:
        groups[(r.defense, r.setting)].append(r)
    out = []
    for (defense, setting), rows in groups.items():
        seeds = sorted({r.seed for r in rows})
        accuracy = [next(r.accuracy for r in rows if r.seed == s) for s in seeds]
        per_attack = attacker_rows(rows)
        real = {a: v for a, v in per_attack.items() if a != BASELINE} or per_attack
        strongest = min(real, key=lambda a: statistics.fmean(r.mse for r in real[a]))
        mse, mse_std = _mean_std([r.mse for r in real[strongest]])
        ssim, ssim_std = _mean_std([r.ssim for r in real[strongest]])
        ssims = {a: statistics.fmean(r.ssim for r in v) for a, v in real.items()}
        top = max(ssims, key=lambda a: ssims[a])
        acc, acc_std = _mean_std(accuracy)
        eps = [r.epsilon for r in rows if r.epsilon is not None]
        out.append(BenchmarkSummary(
            defense=defense, setting=setting, value=rows[0].value, seeds=len(seeds), accuracy=acc,
            accuracy_std=acc_std, strongest=strongest, mse=mse, mse_std=mse_std, ssim=ssim,
            ssim_std=ssim_std, ssim_max=ssims[top], ssim_max_attack=top,
            epsilon=statistics.fmean(eps) if eps else None))
    return out


def _baseline_ssim(matrix: Sequence[BenchmarkRow]) -> float | None:
    """The mean-image baseline's SSIM over every run (it depends on the victims only)."""
    values = [r.ssim for r in matrix if r.attack == BASELINE]
    return statistics.fmean(values) if values else None


def score(rows: Sequence[BenchmarkSummary], baseline_ssim: float | None = None) -> float | None:
    """A defence's privacy-utility score: the highest seed-mean accuracy among its settings at
    which no attack's seed-mean SSIM exceeds ``baseline_ssim + SSIM_MARGIN`` (no attack recovers
    more structure than the population's mean image does); None when no setting achieves that.
    ``baseline_ssim`` None: an absolute SSIM of 0.3."""
    limit = 0.3 if baseline_ssim is None else baseline_ssim + SSIM_MARGIN
    ok = [r.accuracy for r in rows if r.ssim_max <= limit]
    return max(ok) if ok else None


def matched(summary: Sequence[BenchmarkSummary], drop: float = ACCURACY_DROP) -> dict[str, BenchmarkSummary]:
    """Per defence, the setting compared at a matched accuracy: the most private one (the largest
    strongest-attack MSE) among those within ``drop`` of the vanilla split's seed-mean accuracy;
    the most accurate setting when none is (or with no vanilla run, the most private of all)."""
    vanilla = [r.accuracy for r in summary if r.defense == VANILLA]
    floor = max(vanilla) - drop if vanilla else -math.inf
    out = {}
    for defense in dict.fromkeys(r.defense for r in summary):
        rows = [r for r in summary if r.defense == defense]
        within = [r for r in rows if r.accuracy >= floor]
        out[defense] = (max(within, key=lambda r: r.mse) if within
                        else max(rows, key=lambda r: r.accuracy))
    return out


def heatmap_grid(matrix: Sequence[BenchmarkRow], chosen: dict[str, BenchmarkSummary]
                 ) -> tuple[list[str], list[str], list[list[float]]]:
    """``(attacks, defences, grid)``: ``grid[i][j]`` is attack i's seed-mean SSIM at defence j's
    chosen setting, from the same rows as the summary (:func:`attacker_rows`), so a cell reads as
    the summary's SSIM of that attack; NaN where the attack did not run."""
    defenses = list(chosen)
    attacks = list(dict.fromkeys(r.attack for r in matrix))
    per_defense = {d: attacker_rows([r for r in matrix if r.defense == d and r.setting == chosen[d].setting])
                   for d in defenses}
    grid = [[statistics.fmean(r.ssim for r in per_defense[d][a]) if per_defense[d].get(a) else math.nan
             for d in defenses] for a in attacks]
    return attacks, defenses, grid


def heatmap(matrix: Sequence[BenchmarkRow], chosen: dict[str, BenchmarkSummary], path: Path,
            title: str) -> None:
    """Attack (rows) x defence (columns): :func:`heatmap_grid` at each defence's matched setting."""
    plt = pyplot()
    attacks, defenses, grid = heatmap_grid(matrix, chosen)
    fig, ax = plt.subplots(figsize=(1.1 * len(defenses) + 2.5, 0.45 * len(attacks) + 1.8), dpi=120)
    im = ax.imshow(grid, cmap="magma_r", vmin=0.0, vmax=1.0, aspect="auto")
    ticks = [f"{d}\n{chosen[d].setting}\nacc {100 * chosen[d].accuracy:.1f}%" for d in defenses]
    ax.set_xticks(range(len(defenses)), ticks, fontsize=7)
    ax.set_yticks(range(len(attacks)), attacks, fontsize=8)
    for i, line in enumerate(grid):
        for j, v in enumerate(line):
            if not math.isnan(v):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if v > 0.55 else "black")
    fig.colorbar(im, ax=ax, label="reconstruction SSIM (higher = more leaked)")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)


def frontier_plot(summary: Sequence[BenchmarkSummary], path: Path, title: str) -> None:
    """One line per defence over its settings: seed-mean accuracy against the strongest attack's
    seed-mean MSE, error bars one std over the seeds on both axes."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.8, 4.6), dpi=120)
    for defense in dict.fromkeys(r.defense for r in summary):
        rows = [r for r in summary if r.defense == defense]
        for knob in dict.fromkeys(r.setting.split("=")[0] for r in rows):
            pts = sorted((r for r in rows if r.setting.split("=")[0] == knob), key=lambda r: r.value)
            label = defense if knob in ("default", "") or len(rows) == len(pts) else f"{defense} ({knob})"
            ax.errorbar([r.mse for r in pts], [100 * r.accuracy for r in pts],
                        xerr=[r.mse_std for r in pts], yerr=[100 * r.accuracy_std for r in pts],
                        marker="*" if defense == VANILLA else "o", markersize=10 if defense == VANILLA else 5,
                        capsize=2, elinewidth=0.6, label=label)
    ax.set_xscale("log")
    ax.set_xlabel("strongest attack's reconstruction MSE (log; higher = more private)", fontsize=8)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    save_figure(fig, path)


def summary_markdown(summary: Sequence[BenchmarkSummary], scores: dict[str, float | None],
                     chosen: dict[str, BenchmarkSummary], plan: Plan, attacks: Sequence[str]) -> str:
    def pm(m: float, s: float, digits: int) -> str:
        return f"{m:.{digits}f} ± {s:.{digits}f}"

    lines = ["# Benchmark: every defence against every attack", "",
             f"Seeds {', '.join(map(str, plan.seeds))}; attacks: {', '.join(attacks)}. Per setting: test "
             "accuracy (fused decision) and the strongest attack (lowest MSE on the attacker's better "
             "target), mean ± std over seeds; SSIM max: the highest seed-mean SSIM of any attack but the "
             "mean-image baseline. Epsilon: DP's per-sample guarantee over the run (delta 1e-5).", "",
             "| defence | setting | accuracy (%) | strongest attack | MSE | SSIM | SSIM max (attack) "
             "| epsilon |",
             "|---|---|---:|---|---:|---:|---:|---:|"]
    for r in summary:
        eps = "" if r.epsilon is None else f"{r.epsilon:.3g}"
        lines.append(f"| {r.defense} | {r.setting} | {pm(100 * r.accuracy, 100 * r.accuracy_std, 1)} | "
                     f"{r.strongest} | {pm(r.mse, r.mse_std, 4)} | {pm(r.ssim, r.ssim_std, 3)} | "
                     f"{r.ssim_max:.3f} ({r.ssim_max_attack}) | {eps} |")
    lines += ["", "Privacy-utility score: the highest accuracy at which no attack's mean SSIM exceeds "
              f"the mean auxiliary image's by more than {SSIM_MARGIN} (none: no setting gets there).", ""]
    lines += [f"- {d}: {'none' if s is None else f'{100 * s:.1f}%'}" for d, s in scores.items()]
    lines += ["", "Heatmap settings (matched accuracy: the most private setting within "
              f"{100 * ACCURACY_DROP:.0f} points of the vanilla split): "
              + ", ".join(f"{d} {s.setting}" for d, s in chosen.items()), ""]
    return "\n".join(lines)
