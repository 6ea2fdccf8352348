"""Results as tables: each function turns what a library call returned into a :class:`Tabular`
(a title, column names, rows of text), which the command line draws and anyone else may print.
Nothing here computes a number; every cell is read from the result."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pgsl.experiments.results import (
        BaselineRow,
        BenchmarkSummary,
        FrontierPoint,
        HijackRow,
        MuSweepRow,
        PrivacyRow,
        RobustnessRow,
    )


@dataclasses.dataclass(frozen=True)
class Tabular:
    """A table's title, column names, rows (text) and an optional caption; ``left``: the columns
    aligned left (the rest are numbers, aligned right)."""

    title: str
    columns: tuple[str, ...]
    rows: Sequence[tuple[str, ...]]
    caption: str = ""
    left: tuple[str, ...] = ()


def _f(v: float | None, digits: int = 4) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def metrics(title: str, m: dict[str, Any]) -> Tabular:
    """A run's ``metrics.json`` (or ``evaluation.json``): per stream and the decision, accuracy,
    balanced accuracy, macro-F1, AUC and recall per class; the majority baseline as caption."""
    detailed: dict[str, dict[str, Any]] = m.get("test_metrics") or {}
    if not detailed:  # accuracies alone (an evaluation)
        acc = m["test_accuracy"]
        return Tabular(f"{title} (n={m['n_test']})", tuple(acc), [tuple(_f(v) for v in acc.values())])
    rows = []
    for key, s in detailed.items():
        recall = " ".join(f"{c}:{_f(r, 2)}" for c, r in s["recall"].items())
        if len(s["recall"]) > 6:
            recall = f"lowest {min(v for v in s['recall'].values() if v is not None):.2f}"
        rows.append((key, _f(s["accuracy"]), _f(s["balanced_accuracy"]), _f(s["macro_f1"]),
                     _f(s["auc_ovr"]), recall))
    base = m.get("majority_baseline")
    caption = "" if not base else (
        f"majority-class baseline (always '{base['class']}'): accuracy {base['accuracy']:.4f}, "
        f"balanced accuracy {base['balanced_accuracy']:.4f}")
    return Tabular(f"{title} (n={m['n_test']})", ("", "accuracy", "balanced acc.", "macro-F1",
                                                   "AUC (ovr)", "recall per class"),
                   rows, caption, left=("", "recall per class"))


def cv(report: dict[str, Any]) -> Tabular:
    """A cross-validation's ``cv.json``: mean ± std over folds per model."""
    from pgsl.experiments.cv import model_name, pm

    return Tabular(f"MIAS {report['task']}: {report['folds']}-fold patient-grouped CV "
                   f"(cv_seed {report['cv_seed']}), mean ± std over folds",
                   ("model", "balanced acc.", "AUC", "accuracy", "macro-F1"),
                   [(model_name(name), *(pm(m, k) for k in ("balanced_accuracy", "auc", "accuracy",
                                                            "macro_f1")))
                    for name, m in report["models"].items()], left=("model",))


def privacy(rows: Sequence[PrivacyRow]) -> Tabular:
    return Tabular("Table I: reconstructions of the victims' clean images",
                   ("defence", "target", "attack", "n", "MSE", "PSNR", "SSIM", "paper MSE"),
                   [(r.defense, r.target, r.attack, str(r.n_victims),
                     _f(r.mse_mean) + ("" if r.mse_seed_std is None else f" ± {r.mse_seed_std:.4f}"),
                     _f(r.psnr_mean, 2), _f(r.ssim_mean, 3), "" if r.paper_mse is None else str(r.paper_mse))
                    for r in rows], left=("defence", "target", "attack"))


def hijack(rows: Sequence[HijackRow]) -> Tabular:
    return Tabular("FSHA against each defence; SplitGuard on the client",
                   ("defence", "seed", "FSHA MSE", "FSHA SSIM", "mean image MSE", "flagged at",
                    "false alarm at"),
                   [(r.defense, str(r.seed), _f(r.mse_mean), _f(r.ssim_mean, 3), _f(r.mean_image_mse),
                     str(r.detected_at or "-"), str(r.false_alarm_at or "-")) for r in rows],
                   left=("defence",))


def frontier(rows: Sequence[FrontierPoint]) -> Tabular:
    return Tabular("privacy-utility frontier (learned inversion's MSE against accuracy)",
                   ("defence", "run", "accuracy", "MSE", "SSIM", "attacked view"),
                   [(r.curve, r.run, _f(r.accuracy), f"{r.mse:.4f} ± {r.mse_std:.4f}", _f(r.ssim, 3),
                     r.target) for r in rows], left=("defence", "run", "attacked view"))


def mu_sweep(rows: Sequence[MuSweepRow]) -> Tabular:
    return Tabular("mu sweep: MSE of the recovered image to the clean one (mu 0 = attacked image)",
                   ("dataset", "mu", "MSE", "iterations", "converged"),
                   [(r.dataset, f"{r.mu:g}", _f(r.mse_mean, 5), f"{r.iterations:.0f}", _f(r.converged, 2))
                    for r in rows], left=("dataset",))


def robustness(rows: Sequence[RobustnessRow], attacks: Sequence[str]) -> Tabular:
    from pgsl.experiments.robustness import ATTACK_NAMES

    def pct(v: float) -> str:
        return f"{100 * v:.1f}%"

    return Tabular(f"Table II: accuracy (n={rows[0].n_test})",
                   ("model", "stream", "clean", *(ATTACK_NAMES.get(a, a) for a in attacks)),
                   [(r.model, r.stream, pct(r.clean),
                     *(pct(r.adversarial[a]) if a in r.adversarial else "" for a in attacks)) for r in rows],
                   left=("model", "stream"))


def benchmark(rows: Sequence[BenchmarkSummary], plan: str) -> Tabular:
    return Tabular(f"benchmark ({plan} plan): mean ± std over seeds",
                   ("defence", "setting", "accuracy %", "strongest attack", "MSE", "SSIM", "epsilon"),
                   [(r.defense, r.setting, f"{100 * r.accuracy:.1f} ± {100 * r.accuracy_std:.1f}",
                     r.strongest, f"{r.mse:.4f} ± {r.mse_std:.4f}", f"{r.ssim:.3f} ± {r.ssim_std:.3f}",
                     "" if r.epsilon is None else f"{r.epsilon:.3g}") for r in rows],
                   left=("defence", "setting", "strongest attack"))


def baselines(rows: Sequence[BaselineRow]) -> Tabular:
    return Tabular(f"{rows[0].dataset}: same protocol and budget (n={rows[0].n_test})",
                   ("model", "accuracy", "balanced acc.", "macro-F1", "AUC (ovr)"),
                   [(r.model, _f(r.accuracy), _f(r.balanced_accuracy), _f(r.macro_f1), _f(r.auc_ovr))
                    for r in rows], left=("model",))


def flare(summary: dict[str, Any], wire_dtype: str) -> Tabular:
    """A FLARE job's summary: per site, epochs, accuracy, speed and bytes per sample."""
    return Tabular(f"FLARE job: {summary.get('train_steps', 0)} server training steps",
                   ("site", "epochs", "test acc", "balanced acc", "samples/s",
                    f"bytes/sample ({wire_dtype})", "resumed"),
                   [(name, str(r["epochs"]), _f(r["test_accuracy"]), _f(r["test_balanced_accuracy"]),
                     f"{r['samples_per_second']:.0f}", f"{r['bytes_per_sample']:.0f}",
                     "yes" if r["resumed"] else "no") for name, r in sorted(summary["sites"].items())],
                   left=("site",))


def registry(what: str) -> Tabular:
    """The registered attacks (their needs and budget knobs) or defences (their options)."""
    if what == "attacks":
        from pgsl.attacks import ATTACKS

        return Tabular("attacks (pgsl privacy --attacks NAME,... --budget NAME.KNOB=VALUE)",
                       ("name", "attack", "needs", "budget (default)"),
                       [(name, cls.title, "; ".join(sorted(cls.needs)),
                         ", ".join(f"{f.name}={f.default}" for f in dataclasses.fields(cls.Budget)))
                        for name, cls in ATTACKS.items()],
                       left=("name", "attack", "needs", "budget (default)"))
    from pgsl.defenses import DEFENSES

    return Tabular("defences (pgsl train --defense NAME --defense-option KEY=VALUE)",
                   ("name", "what it does", "options (default)", "settings (frontier, benchmark)"),
                   [(name, cls.summary,
                     ", ".join(f"{f.name}={f.default}" for f in dataclasses.fields(cls.Params)) or "-",
                     ", ".join(s.label for s in cls.settings) or "default")
                    for name, cls in DEFENSES.items()],
                   left=("name", "what it does", "options (default)", "settings (frontier, benchmark)"))
