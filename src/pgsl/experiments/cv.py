"""Patient-grouped, stratified k-fold cross-validation: MIAS's protocol of record.

For each fold ``k`` of ``K`` (drawn once with ``cv_seed`` by :func:`pgsl.data.mias.assign_folds`:
both films of a woman in one fold, stratified by the task's label) every model trains on the other
folds and is scored on fold ``k``, with the same configuration (protocol, preparation, augmentation,
sampling, epochs, optimiser, network):

- a split model per defence name (``pgsl``, ``none`` = the vanilla split, or any registered defence):
  a ``pgsl train`` run in ``fold-k/<name>``, scored on its decision;
- ``plain``: the same layers trained in one place (:mod:`pgsl.experiments.plain`), in
  ``fold-k/plain``;
- ``majority``: always the training folds' most frequent class (AUC 0.5 by construction).

Each model's fold result is written to ``fold-k/fold.json`` as soon as it is known, keyed by the
configuration that produced it, so a killed CV resumes at the next unfinished model of the next
unfinished fold (a split run itself resumes from its last epoch), and a folder holding another
configuration's CV is refused rather than read. Output: ``cv.json`` (per model and fold, and mean
and sample standard deviation over folds of accuracy, balanced accuracy, AUC, macro-F1 and recall per
class) and ``cv.md``.
"""

from __future__ import annotations

import json
import logging
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pgsl.checkpoint import write_json, write_text
from pgsl.config import Config
from pgsl.defenses import PROPOSED, VANILLA
from pgsl.experiments.cache import check, ensure_trained
from pgsl.runtime import Reporter, resolve_device

__all__ = ["CV_JSON", "CV_MD", "MAJORITY", "PLAIN", "cross_validate", "fold_config", "markdown", "pm"]

log = logging.getLogger(__name__)

CV_JSON, CV_MD, FOLD_JSON = "cv.json", "cv.md", "fold.json"
PLAIN, MAJORITY = "plain", "majority"
DEFAULT_MODELS = (PROPOSED, VANILLA, PLAIN, MAJORITY)  # pgsl baselines' comparison
# what a model's fold result holds, and what cv.json averages over folds
SCALARS = ("accuracy", "balanced_accuracy", "auc", "macro_f1")


def fold_config(cfg: Config, folds: int, fold: int, cv_seed: int) -> Config:
    """``cfg`` with its test split set to fold ``fold`` of ``folds``."""
    return cfg.replace(data={"folds": folds, "fold": fold, "cv_seed": cv_seed})


def _summary(m: dict[str, Any], run: str) -> dict[str, Any]:
    return {"accuracy": m["accuracy"], "balanced_accuracy": m["balanced_accuracy"], "auc": m.get("auc_ovr"),
            "macro_f1": m.get("macro_f1"), "recall": m.get("recall", {}), "n_test": m.get("n", 0), "run": run}


def _plain(cfg: Config, out: Path, device: str) -> dict[str, Any]:
    """The plain CNN of one fold: trained (or read back) in ``out``, scored on the fold."""
    from pgsl.data import load_dataset
    from pgsl.experiments.plain import scored_on_test

    return scored_on_test(cfg, load_dataset(cfg.data, seed=cfg.train.seed), out / "plain_cnn.pt",
                          resolve_device(device))


def _majority(cfg: Config) -> dict[str, Any]:
    from pgsl.data import load_dataset
    from pgsl.metrics import majority_metrics

    dataset = load_dataset(cfg.data, seed=cfg.train.seed)
    return majority_metrics(dataset.train.labels, dataset.test.labels, dataset.classes)


def _model_fold(cfg: Config, model: str, folder: Path, device: str,
                reporter: Reporter | None) -> dict[str, Any]:
    t0 = time.perf_counter()
    if model == PLAIN:
        result = _summary(_plain(cfg, folder / PLAIN, device), str(folder / PLAIN))
    elif model == MAJORITY:
        m = _majority(cfg)
        result = _summary(m, f"always '{m['class']}'")
    else:
        split_cfg = cfg if model == cfg.defense.kind else cfg.replace(defense={"kind": model})
        metrics = ensure_trained(split_cfg, folder / model, device=device, reporter=reporter)
        result = _summary(metrics["test_metrics"]["decision"], str(folder / model))
    result["seconds"] = round(time.perf_counter() - t0, 2)
    return result


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def aggregate(per_fold: list[dict[str, Any]], classes: Sequence[str]) -> dict[str, Any]:
    """Mean and sample standard deviation over folds of each scalar and each class's recall."""
    out: dict[str, Any] = {}
    for key in SCALARS:
        mean, std = _mean_std([f[key] for f in per_fold if f.get(key) is not None])
        out[f"{key}_mean"], out[f"{key}_std"] = mean, std
    recall_mean, recall_std = {}, {}
    for c in classes:
        recall_mean[c], recall_std[c] = _mean_std([f["recall"][c] for f in per_fold
                                                    if f["recall"].get(c) is not None])
    out["recall_mean"], out["recall_std"] = recall_mean, recall_std
    out["per_fold"] = per_fold
    return out


def cross_validate(cfg: Config, out: Path, *, models: Sequence[str], folds: int = 5, cv_seed: int = 0,
                   device: str = "cpu", reporter: Reporter | None = None) -> dict[str, Any]:
    """Run (or resume) ``models`` on every fold of ``cfg``'s MIAS task; writes and returns
    ``cv.json``'s content. ``models``: defence names (split runs), ``plain`` and ``majority``."""
    from pgsl.config import TASKS
    from pgsl.defenses import DEFENSES

    if cfg.data.dataset != "mias":
        raise ValueError(f"cross-validation is MIAS's protocol (patients pair its films); "
                         f"{cfg.data.dataset!r} has its own test split: use --folds 0")
    if folds < 2:
        raise ValueError(f"--folds must be at least 2 for cross-validation, got {folds}")
    unknown = [m for m in models if m not in (PLAIN, MAJORITY) and m not in DEFENSES]
    if unknown or not models:
        raise ValueError(f"unknown model(s) {unknown}: choose {PLAIN}, {MAJORITY} or a defence "
                         f"({', '.join(DEFENSES)})")
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, list[dict[str, Any]]] = {m: [] for m in models}
    for fold in range(folds):
        fcfg = fold_config(cfg, folds, fold, cv_seed)
        folder = out / f"fold-{fold}"
        path = folder / FOLD_JSON
        key = fcfg.key()
        done: dict[str, Any] = {}
        if path.is_file():
            saved = json.loads(path.read_text())
            check(saved.get("config"), key, f"{folder}, a fold of a cross-validation,")
            done = saved["models"]
        for model in models:
            if model not in done:
                log.info("fold %d/%d: %s", fold + 1, folds, model)
                done[model] = _model_fold(fcfg, model, folder, device, reporter)
                write_json(path, {"config": key, "models": done})
            results[model].append({"fold": fold, **done[model]})
    classes = TASKS[cfg.data.task]
    report = {"task": cfg.data.task, "folds": folds, "cv_seed": cv_seed, "dataset": cfg.data.dataset,
              "protocol": cfg.data.protocol, "classes": list(classes),
              "models": {m: aggregate(results[m], classes) for m in models},
              "config": cfg.replace(data={"folds": folds, "fold": 0, "cv_seed": cv_seed}).key()}
    write_json(out / CV_JSON, report)
    write_text(out / CV_MD, markdown(report))
    return report


def model_name(name: str) -> str:
    """A cross-validated model's name in tables: a defence's title, or the plain CNN / majority."""
    from pgsl.defenses import DEFENSES, title

    return {PLAIN: "plain CNN", MAJORITY: "majority"}.get(name) or (title(name) if name in DEFENSES else name)


def pm(m: dict[str, Any], key: str) -> str:
    """One model's ``key`` in ``cv.json`` as "mean ± std" (3 decimals), "-" when absent."""
    mean, std = m[f"{key}_mean"], m[f"{key}_std"]
    return "-" if mean is None else f"{mean:.3f} ± {std:.3f}"


def markdown(report: dict[str, Any]) -> str:
    """``cv.json`` as a Markdown table: mean ± std over folds, then the per-fold balanced accuracy."""
    classes = report["classes"]
    lines = [f"# MIAS, task `{report['task']}`: {report['folds']}-fold patient-grouped cross-validation "
             f"(cv_seed {report['cv_seed']}, protocol {report['protocol']})", "",
             "Mean ± sample standard deviation over folds; every model on the same folds.", "",
             "| model | balanced accuracy | AUC | accuracy | macro-F1 | "
             + " | ".join(f"recall {c}" for c in classes) + " |",
             "|---|---:|---:|---:|---:|" + "---:|" * len(classes)]
    for name, m in report["models"].items():
        recall = ["-" if m["recall_mean"][c] is None
                  else f"{m['recall_mean'][c]:.3f} ± {m['recall_std'][c]:.3f}" for c in classes]
        lines.append(f"| {model_name(name)} | {pm(m, 'balanced_accuracy')} | {pm(m, 'auc')} | "
                     f"{pm(m, 'accuracy')} | {pm(m, 'macro_f1')} | " + " | ".join(recall) + " |")
    lines += ["", "Balanced accuracy per fold:", "",
              "| model | " + " | ".join(f"fold {k}" for k in range(report["folds"])) + " | test rows |",
              "|---|" + "---:|" * (report["folds"] + 1)]
    for name, m in report["models"].items():
        lines.append(f"| {model_name(name)} | "
                     + " | ".join(f"{f['balanced_accuracy']:.3f}" for f in m["per_fold"])
                     + f" | {sum(f['n_test'] for f in m['per_fold'])} |")
    return "\n".join(lines) + "\n"
