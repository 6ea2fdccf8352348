"""``pgsl reproduce``: every experiment of the paper, one folder, one HTML report.

Stages, each cached in ``out`` so a killed run resumes where it stopped:

1. train PGSL and the baselines (vanilla split, Laplacian noise, NoPeek) -- ``runs/<name>``;
2. Table I: the inversion attacks against them (``privacy/``, reconstructions saved), then a
   malicious server (FSHA) against each run's client with SplitGuard watching (``hijack/``);
3. the privacy-utility frontier: more defence strengths, learned attack (``frontier/``);
4. Table II: the plain CNN and every run under JSMA, C&W, BIM, FGSM, plus CNNs trained on the
   attacks' reconstructions (``robustness/``);
5. Fig. 3: the mu sweep (``mu_sweep/``);
6. MIAS only, with ``folds`` >= 2: PGSL, the vanilla split, the plain CNN and the majority class
   cross-validated on the same patient-grouped folds (``cv/``, :mod:`pgsl.experiments.cv`);
7. ``report.html``: every table beside the paper's numbers, every figure, the protocol.

A stage is done when its result file exists (``table1.json``, ``frontier.json``, ...) and
``stages.json`` records it under the same key -- the configuration and the part of the plan the
stage reads; a stage done under another key is refused, naming the difference, unless ``force``
(delete a result file to recompute that stage). Training and attacks keep their own finer caches
(checkpoints, points, adversarial images), so even a stage killed half-way restarts from its last
saved piece.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from pgsl.checkpoint import write_json
from pgsl.client.splitguard import SplitGuardParams
from pgsl.config import Config
from pgsl.experiments.cache import as_key, check
from pgsl.experiments.frontier import Point, run_dir, sweep, train_point
from pgsl.experiments.frontier import frontier as run_frontier
from pgsl.experiments.hijack import HijackConfig
from pgsl.experiments.hijack import hijack as run_hijack
from pgsl.experiments.mu_sweep import SweepConfig, mu_sweep
from pgsl.experiments.privacy import PrivacyConfig
from pgsl.experiments.privacy import privacy as run_privacy
from pgsl.experiments.report import write_report
from pgsl.experiments.results import PrivacyRow, read_rows
from pgsl.experiments.robustness import RobustnessConfig, check_dependencies, robustness
from pgsl.experiments.train import Reporter, environment, resolve_device

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Plan:
    """How much of each experiment a preset runs."""

    train: dict[str, dict[str, Any]]  # config overrides on top of the training preset
    privacy: PrivacyConfig
    hijack: HijackConfig
    robustness: RobustnessConfig
    sweep: SweepConfig
    noise: tuple[float, ...]  # frontier strengths; the first of noise / nopeek is the main run's
    nopeek: tuple[float, ...]
    mu: tuple[float, ...]  # PGSL's curve; the preset's mu is always included (the main run)
    pixels: tuple[int, ...]


PLANS = {
    # 2-core CPU budget (15 minutes with setup): smaller training subsets, 2,000 test images, the
    # attacks at the docs/design.md#baselines-and-attacks minimums (>= 1,000 robustness images) or above
    "quick": Plan(
        train={"data": {"limit_train": 6000, "limit_test": 2000}},
        # DLG/iDLG: 128 victims batched, one stage (every weight tensor), 30 L-BFGS iterations,
        # starts scored among 64 auxiliary images. Measured here at 128 victims: 11-32 s per run and
        # attack (MSE 0.058-0.066), against 77-173 s for the six-stage continuation at 40
        # iterations (0.051-0.063), both near the mean image (0.069): docs/findings.md#dlg-and-idlg.
        # GGL: pgsl privacy only (at 20 generations it scored near the mean image here, for ~2-4
        # more minutes per run)
        privacy=PrivacyConfig(victims=500, aux=1500,
                              attacks=("mean", "mia", "gan", "activation", "unsplit", "dlg", "idlg"),
                              budgets={"mia": {"epochs": 5}, "gan": {"epochs": 2, "pretrain_epochs": 5},
                                       "activation": {"victims": 32, "steps": 200},
                                       "unsplit": {"main_iters": 5},
                                       "dlg": {"victims": 128, "iterations": 30, "starts": 64,
                                               "stages": (0,)},
                                       "idlg": {"victims": 128, "iterations": 30, "starts": 64,
                                                "stages": (0,)}}),
        hijack=HijackConfig(steps=200, every=50, victims=64, aux=1500),
        robustness=RobustnessConfig(n_test=1000, cw_steps=50, bim_steps=10, recon_epochs=5),
        sweep=SweepConfig(images=100),
        # PGSL's frontier point is the main run alone: mu only changes the server's recovery, not
        # what crosses the cut (a second run at mu 0.95 scored MIA 0.0042 there against 0.0040, for
        # a minute of this budget); `pgsl benchmark` sweeps PGSL's strengths over seeds
        noise=(0.5, 2.0), nopeek=(0.5, 3.0), mu=(), pixels=(),
    ),
    # a smoke test: seconds per stage on a CPU, numbers meaningless (the test suite uses it)
    "tiny": Plan(
        train={"data": {"limit_train": 512, "limit_test": 128}},
        privacy=PrivacyConfig(victims=32, aux=200,
                              budgets={"mia": {"epochs": 1}, "gan": {"epochs": 1, "pretrain_epochs": 1},
                                       "activation": {"victims": 4, "steps": 10},
                                       "unsplit": {"victims": 4, "main_iters": 1, "input_iters": 2,
                                                   "model_iters": 2},
                                       "dlg": {"victims": 2, "iterations": 5},
                                       "idlg": {"victims": 2, "iterations": 5},
                                       "ggl": {"victims": 2, "prior_epochs": 2, "population": 8,
                                               "generations": 2, "starts": 16}}),
        hijack=HijackConfig(steps=6, every=3, victims=4, aux=64,
                            guard=SplitGuardParams(p_fake=0.5, warmup=1, min_fakes=1)),
        robustness=RobustnessConfig(n_test=32, cw_steps=3, bim_steps=2, recon_epochs=1),
        sweep=SweepConfig(images=8, mus=(0.15, 0.55), max_iter=50),
        noise=(0.5,), nopeek=(0.5,), mu=(), pixels=(),
    ),
    # the full protocol, meant for a GPU
    "paper": Plan(
        train={},
        privacy=PrivacyConfig(),
        hijack=HijackConfig(steps=2000, every=100, victims=256, seeds=3),
        robustness=RobustnessConfig(n_test=None),
        sweep=SweepConfig(images=1000),
        noise=(0.5, 0.25, 1.0, 2.0), nopeek=(0.5, 0.1, 1.0, 3.0), mu=(0.15, 0.35, 0.75, 0.95),
        pixels=(1, 16),
    ),
}
MAIN = ("pgsl", "none", "noise", "nopeek")
CV_MODELS = ("pgsl", "none", "plain", "majority")  # the MIAS cross-validation's models


def default_preset(dataset: str) -> str:
    """The training preset ``pgsl reproduce`` uses when none is given: ``mias-quick`` (the ROI
    protocol, augmentation, class-balanced batches) for MIAS, ``quick`` otherwise."""
    return "mias-quick" if dataset == "mias" else "quick"


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
    """Run every stage into ``out``; return the report's path. ``plan``: one of :data:`PLANS`
    (default: the preset's name if it is one, else ``quick``). ``folds`` >= 2 (MIAS): the
    cross-validation stage with that many folds, drawn with ``cv_seed``. A stage is reused only
    when it was computed with the same configuration and plan; ``force``: compute again the stages
    that were computed otherwise (else they are refused)."""
    name = plan or (preset if preset in PLANS else "quick")
    if name not in PLANS:
        raise ValueError(f"unknown plan {name!r}; choose from {', '.join(PLANS)}")
    spec = PLANS[name]
    check_dependencies(spec.robustness)  # before hours of training, not at Table II
    dev = resolve_device(device)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    if (out / "timings.json").is_file():
        timings = dict(json.loads((out / "timings.json").read_text()))
    cfg = base
    for section, values in spec.train.items():
        cfg = cfg.replace(**{section: values})
    points = sweep(spec.noise, spec.nopeek, (cfg.recovery.mu, *spec.mu), spec.pixels,
                   base_mu=cfg.recovery.mu, base_pixels=int(cfg.pixel_attack.pixels))
    main: dict[str, Point] = {}
    for point in points:
        main.setdefault(point.changes["defense"]["kind"], point)  # the first one: the main run
    runs = [run_dir(out, main[k]) for k in MAIN]

    def train_main() -> None:
        for k in MAIN:
            train_point(cfg, main[k], out, device, reporter)
        write_json(out / "runs" / "trained.json", {k: str(run_dir(out, main[k])) for k in MAIN})

    parts = _plan_dict(spec)
    trained = {"config": cfg.key(), "runs": {k: main[k].changes for k in MAIN}}
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
           {**privacy, "points": [dataclasses.asdict(p) for p in points]},
           lambda: run_frontier(cfg, out / "frontier", points, spec.privacy, device=device,
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
        cross_validate(cfg, out / "cv", models=CV_MODELS, folds=folds, cv_seed=cv_seed, device=device,
                       reporter=reporter)
        timings["cv"] = round(time.perf_counter() - t0, 1)
        log.info("cross-validation: %s", out / "cv" / CV_JSON)
    meta = {"preset": preset, "plan_name": name, "dataset": cfg.data.dataset, "device": str(dev),
            "environment": environment(dev), "timings": timings, "plan": _plan_dict(spec),
            "seed": cfg.train.seed, "cuda": torch.cuda.is_available()}
    write_json(out / "reproduce.json", meta)
    return write_report(out, meta)


def _plan_dict(plan: Plan) -> dict[str, Any]:
    return {k: (dataclasses.asdict(v) if dataclasses.is_dataclass(v) and not isinstance(v, type) else v)
            for k, v in ((f.name, getattr(plan, f.name)) for f in dataclasses.fields(plan))}
