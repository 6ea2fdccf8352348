"""``pgsl baselines``: PGSL beside the vanilla split and the plain CNN, trained with the same
protocol and budget on the same split, so a PGSL number can be read against them.

The three models share the configuration (data protocol, augmentation, class-balanced sampling,
epochs, optimiser, network): PGSL and the vanilla split are ``pgsl train`` runs (``--defense pgsl``
and ``none``), the plain CNN is the same layers trained in one place (:mod:`pgsl.experiments.plain`).
Each is scored by :func:`pgsl.metrics.classification_metrics` on the test split, and
the majority-class baseline is the fourth row. Runs are cached in ``out``: re-running resumes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from pgsl.config import Config
from pgsl.data import load_dataset
from pgsl.defenses import PROPOSED, VANILLA, get_defense, title
from pgsl.experiments.cache import ensure_trained
from pgsl.experiments.plain import scored_on_test
from pgsl.experiments.results import BaselineRow, write_rows
from pgsl.metrics import majority_baseline
from pgsl.runtime import Reporter, resolve_device
from pgsl.split.trainer import DECISION

__all__ = ["baselines"]

log = logging.getLogger(__name__)



def _row(dataset: str, model: str, m: dict, run: str) -> BaselineRow:
    return BaselineRow(dataset=dataset, model=model, accuracy=m["accuracy"],
                       balanced_accuracy=m["balanced_accuracy"], macro_f1=m.get("macro_f1"),
                       auc_ovr=m.get("auc_ovr"), recall=m.get("recall", {}), n_test=m.get("n", 0), run=run)


def baselines(cfg: Config, out: Path, device: str = "cpu", reporter: Reporter | None = None,
              defenses: Sequence[str] = (PROPOSED, VANILLA)) -> list[BaselineRow]:
    """Train (or reuse) each of ``defenses`` (split runs), the plain CNN and the majority class
    on the same split; write ``baselines.json``, ``.csv`` and ``.md``."""
    for kind in defenses:
        get_defense(kind)
    dev = resolve_device(device)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for kind in defenses:
        path = out / kind
        metrics = ensure_trained(cfg.replace(defense={"kind": kind, "params": {}}), path, device=device,
                                 reporter=reporter)
        rows.append(_row(metrics["dataset"], title(kind), metrics["test_metrics"][DECISION],
                         str(path)))
    dataset = load_dataset(cfg.data, seed=cfg.train.seed)
    plain = scored_on_test(cfg, dataset, out / "plain_cnn.pt", dev)
    rows.append(_row(dataset.name, "plain CNN", plain, str(out / "plain_cnn.pt")))
    base = majority_baseline(dataset.train.labels, dataset.test.labels, dataset.classes)
    rows.append(BaselineRow(dataset=dataset.name, model="majority", accuracy=base["accuracy"],
                            balanced_accuracy=base["balanced_accuracy"], macro_f1=None, auc_ovr=None,
                            recall={c: (1.0 if c == base["class"] else 0.0) for c in dataset.classes},
                            n_test=len(dataset.test), run=f"always '{base['class']}'"))
    write_rows(out / "baselines.csv", rows)
    write_rows(out / "baselines.json", rows, dataset=dataset.name)
    (out / "baselines.md").write_text(markdown(rows))
    return rows


def markdown(rows: list[BaselineRow]) -> str:
    def f(v: float | None, digits: int = 3) -> str:
        return "-" if v is None else f"{v:.{digits}f}"

    classes = list(rows[0].recall)
    lines = [f"# {rows[0].dataset}: split models, the plain CNN and the majority class (same protocol "
             "and budget)",
             "", "| model | accuracy | balanced accuracy | macro-F1 | AUC (one-vs-rest) | "
             + " | ".join(f"recall {c}" for c in classes) + " |",
             "|---|---:|---:|---:|---:|" + "---:|" * len(classes)]
    for r in rows:
        lines.append(f"| {r.model} | {f(r.accuracy)} | {f(r.balanced_accuracy)} | {f(r.macro_f1)} | "
                     f"{f(r.auc_ovr)} | " + " | ".join(f(r.recall.get(c)) for c in classes) + " |")
    return "\n".join(lines) + "\n"
