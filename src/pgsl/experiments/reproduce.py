"""``pgsl reproduce``: every experiment of the paper, one folder, one HTML report.

Stages, each cached in ``out`` so a killed run resumes where it stopped:

1. train the plan's defences (the shipped plans: PGSL and the paper's baselines -- vanilla split,
   Laplacian noise, NoPeek), each at its first setting -- ``runs/<name>``;
2. Table I: the inversion attacks against them (``privacy/``, reconstructions saved), then a
   malicious server (FSHA) against each run's client with SplitGuard watching (``hijack/``);
3. the privacy-utility frontier: every setting of the plan's defences, learned attack
   (``frontier/``);
4. Table II: the plain CNN and every run under JSMA, C&W, BIM, FGSM, plus CNNs trained on the
   attacks' reconstructions (``robustness/``);
5. Fig. 3: the mu sweep (``mu_sweep/``);
6. MIAS only, with ``folds`` >= 2: the plan's ``cv_models`` (shipped plans: PGSL, the vanilla
   split, the plain CNN and the majority class) cross-validated on the same patient-grouped folds
   (``cv/``, :mod:`pgsl.experiments.cv`);
7. ``report.html``: every table beside the paper's numbers, every figure, the protocol.

A stage is done when its result file exists (``table1.json``, ``frontier.json``, ...) and
``stages.json`` records it under the same key -- the configuration and the part of the plan the
stage reads; a stage done under another key is refused, naming the difference, unless ``force``
(delete a result file to recompute that stage). Training and attacks keep their own finer caches
(checkpoints, points, adversarial images), so even a stage killed half-way restarts from its last
saved piece.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from pgsl.checkpoint import write_json
from pgsl.config import Config, default_preset  # noqa: F401 (re-exported)
from pgsl.experiments.cache import as_key, check
from pgsl.experiments.frontier import frontier as run_frontier
from pgsl.experiments.frontier import run_dir, train_point
from pgsl.experiments.hijack import hijack as run_hijack
from pgsl.experiments.mu_sweep import mu_sweep
from pgsl.experiments.plan import available_plans, load_plan
from pgsl.experiments.privacy import privacy as run_privacy
from pgsl.experiments.report import write_report
from pgsl.experiments.results import PrivacyRow, read_rows
from pgsl.experiments.robustness import check_dependencies, robustness
from pgsl.runtime import Reporter, environment, resolve_device

log = logging.getLogger(__name__)


STAGES = "stages.json"  # each finished stage's key


def _stage(out: Path, name: str, done: Path, key: dict[str, Any], fn: Callable[[], Any],
           timings: dict[str, float], force: bool) -> None:
    """Run stage ``name`` unless its result ``done`` exists under the same ``key`` (the
    configuration and the plan's part that the stage reads). A result of another key is refused
    (:class:`~pgsl.experiments.cache.StaleResult`, naming the difference) unless ``force``."""
    keys = json.loads((out / STAGES).read_text()) if (out / STAGES).is_file() else {}
    if done.is_file():
        if keys.get(name) == as_key(key):
            log.info("%s: cached (%s)", name, done)
            return
        if not force:
            check(keys.get(name), key, f"{out}: the stage {name!r}",
                  "use another --out, or --force to compute the stage again")
        log.info("%s: cached under other settings, computing it again (--force)", name)
    t0 = time.perf_counter()
    log.info("%s ...", name)
    fn()
    keys[name] = as_key(key)
    write_json(out / STAGES, keys)
    timings[name] = round(time.perf_counter() - t0, 1)
    write_json(out / "timings.json", timings)


def reproduce(base: Config, preset: str, out: Path, *, plan: str | None = None, device: str = "cpu",
              reporter: Reporter | None = None, folds: int = 0, cv_seed: int = 0,
              force: bool = False) -> Path:
    """Run every stage into ``out``; return the report's path. ``plan``: a reproduce plan's name
    (:func:`~pgsl.experiments.plan.available_plans`) or a TOML path (default: the preset's name
    if a plan has it, else ``quick``). ``folds`` >= 2 (MIAS): the
    cross-validation stage with that many folds, drawn with ``cv_seed``. A stage is reused only
    when it was computed with the same configuration and plan; ``force``: compute again the stages
    that were computed otherwise (else they are refused)."""
    name = plan or (preset if preset in available_plans("reproduce") else "quick")
    spec = load_plan("reproduce", name)
    check_dependencies(spec.robustness)  # before hours of training, not at Table II
    dev = resolve_device(device)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    if (out / "timings.json").is_file():
        timings = dict(json.loads((out / "timings.json").read_text()))
    cfg = base
    for section, values in spec.train.items():
        cfg = cfg.replace(**{section: values})
    arms, main = spec.arms(), spec.main()  # main: each defence's first setting
    runs = [run_dir(out, arm) for arm in main]

    def train_main() -> None:
        for arm in main:
            train_point(cfg, arm, out, device, reporter)
        write_json(out / "runs" / "trained.json", {arm.defense: str(run_dir(out, arm)) for arm in main})

    parts = spec.as_dict()
    trained = {"config": cfg.key(), "runs": {arm.name: arm.setting.changes for arm in main}}
    privacy = {**trained, "privacy": parts["privacy"]}
    _stage(out, "train", out / "runs" / "trained.json", trained, train_main, timings, force)
    _stage(out, "table1", out / "privacy" / "table1.json", privacy,
           lambda: run_privacy(runs, out / "privacy", spec.privacy, device=device), timings, force)
    _stage(out, "hijack", out / "hijack" / "hijack.json", {**trained, "hijack": parts["hijack"]},
           lambda: run_hijack(runs, out / "hijack", spec.hijack, device=device), timings, force)
    known: dict[str, list[PrivacyRow]] = {}
    for r in read_rows(out / "privacy" / "table1.json", PrivacyRow):
        known.setdefault(r.run, []).append(r)
    # the frontier's runs live beside the main ones (out/runs), so the main runs are reused
    _stage(out, "frontier", out / "frontier" / "frontier.json",
           {**privacy, "points": {arm.name: arm.setting.changes for arm in arms}},
           lambda: run_frontier(cfg, out / "frontier", arms, spec.privacy, device=device,
                                reporter=reporter, known=known, runs_root=out), timings, force)
    recon = sorted((out / "privacy").glob("recon_*.pt"))
    _stage(out, "table2", out / "robustness" / "table2.json", {**privacy, "robustness": parts["robustness"]},
           lambda: robustness(runs, out / "robustness", spec.robustness, device=device,
                              reconstructions=recon), timings, force)
    _stage(out, "mu_sweep", out / "mu_sweep" / "mu_sweep.json",
           {"config": cfg.key(), "sweep": parts["sweep"]},
           lambda: mu_sweep([cfg], out / "mu_sweep", spec.sweep, dev), timings, force)
    if folds:
        from pgsl.experiments.cv import CV_JSON, cross_validate

        # not cached by its result file alone: the CV checks each fold's configuration itself
        t0 = time.perf_counter()
        if not spec.cv_models:
            raise ValueError(f"plan {name!r} names no cv_models to cross-validate")
        cross_validate(cfg, out / "cv", models=list(spec.cv_models), folds=folds, cv_seed=cv_seed,
                       device=device, reporter=reporter)
        timings["cv"] = round(time.perf_counter() - t0, 1)
        log.info("cross-validation: %s", out / "cv" / CV_JSON)
    meta = {"preset": preset, "plan_name": name, "dataset": cfg.data.dataset, "device": str(dev),
            "environment": environment(dev), "timings": timings, "plan": spec.as_dict(),
            "seed": cfg.train.seed, "cuda": torch.cuda.is_available()}
    write_json(out / "reproduce.json", meta)
    return write_report(out, meta)
