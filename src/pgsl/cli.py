"""The ``pgsl`` command line: each command parses its options, calls one library function and prints
what it returned. Libraries log; this module talks (progress bars, tables, errors)."""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar, cast

import click
import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from pgsl import tables
from pgsl.config import available_presets, configure, default_preset, parse_options
from pgsl.data import LOADERS
from pgsl.defenses import PROPOSED
from pgsl.errors import UserError
from pgsl.extras import require

if TYPE_CHECKING:
    from pgsl.split.trainer import EpochStats


class _Typer(typer.Typer):
    """Every command's errors go through :func:`_user_errors`."""

    def command(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        register = super().command(*args, **kwargs)
        return lambda command: register(_user_errors(command))


app = _Typer(add_completion=False, no_args_is_help=True,
             help="PGSL: privacy-preserving split learning on medical images.")
console, err_console = Console(), Console(stderr=True)

# options shared by several commands: one name, one help text
Out = Annotated[Path, typer.Option(help="Output folder (a run, or an experiment's results).")]
DatasetOpt = Annotated[str, typer.Option("--dataset", help=f"One of: {', '.join(LOADERS)}.")]
PresetOpt = Annotated[str | None, typer.Option("--preset", help="Training preset: " + " | ".join(
    available_presets()) + " or a TOML path (default: mias-quick for MIAS, else quick).")]
DataDir = Annotated[str | None, typer.Option(help="Dataset folder (MIAS, DICOM) or cache override.")]
Device = Annotated[str, typer.Option(help="cpu, cuda or cuda:N.")]
Settings = Annotated[list[str], typer.Option("--set", help="section.key=value for every run, e.g. "
                                             "recovery.svt=auto (repeatable; any field of the preset).")]
LimitTrain = Annotated[int | None, typer.Option(help="Seeded random training subset.")]
LimitTest = Annotated[int | None, typer.Option(help="First N test images.")]
Epochs = Annotated[int | None, typer.Option(help="Override the preset's epochs.")]
Seed = Annotated[int | None, typer.Option(help="Override the preset's training seed.")]
DefenseOpt = Annotated[str, typer.Option("--defense", help="A registered defence (`pgsl defenses`).")]
DefenseOptions = Annotated[list[str], typer.Option("--defense-option", help="KEY=VALUE option of the "
                                                   "defence, e.g. scale=0.5 for noise (repeatable).")]
Runs = Annotated[list[Path], typer.Argument(help="Trained run folders (any defences).")]
Aux = Annotated[int | None, typer.Option(help="The attacker's auxiliary images (default: half the "
                                         "test set).")]
Folds = Annotated[int | None, typer.Option(help="MIAS: patient-grouped stratified k-fold CV, one run per "
                                           "fold (default 5; 0: the paper's single split).")]
CvSeed = Annotated[int, typer.Option(help="Seed of the cross-validation's folds.")]
Tls = Annotated[Path | None, typer.Option(help="Folder from `pgsl certs`: ca.pem and this party's "
                                          "certificate and key (mutual TLS).")]
Insecure = Annotated[bool, typer.Option("--insecure", help="No TLS (benchmarks, trusted networks).")]
Guard = Annotated[bool, typer.Option("--guard", help="SplitGuard on the client: stop when the server's "
                                     "gradients do not depend on the labels (a hijack).")]
WireDtype = Annotated[str, typer.Option(help="float32, float16 or bfloat16 on the wire.")]


# options that build the run's configuration: parameter -> (config field or None, type, default)
CONFIG_OPTIONS: dict[str, tuple[str | None, Any, Any]] = {
    "preset": (None, PresetOpt, None), "dataset": ("data.dataset", DatasetOpt, "mnist"),
    "data_dir": ("data.data_dir", DataDir, None), "limit_train": ("data.limit_train", LimitTrain, None),
    "limit_test": ("data.limit_test", LimitTest, None), "epochs": ("train.epochs", Epochs, None),
    "seed": ("train.seed", Seed, None), "guard": ("guard.splitguard", Guard, False),
    "defense": ("defense.kind", DefenseOpt, PROPOSED),
    "defense_options": ("defense.params", DefenseOptions, []),
    "settings": (None, Settings, []),
}


def config_options(*names: str) -> Callable[[F], F]:
    """Give a command the shared options ``names`` (:data:`CONFIG_OPTIONS`) in place of its ``cfg``
    parameter: the command receives the preset with those options applied (:func:`configure`)."""
    def decorate(command: F) -> F:
        signature = inspect.signature(command, eval_str=True)
        own = [p for p in signature.parameters.values() if p.name not in ("cfg", "preset")]
        wants_preset = "preset" in signature.parameters
        added = [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, annotation=CONFIG_OPTIONS[n][1],
                                   default=CONFIG_OPTIONS[n][2]) for n in names]

        @functools.wraps(command)
        def run(**kwargs: Any) -> Any:
            values = {n: kwargs.pop(n) for n in names}
            if "defense_options" in values:
                values["defense_options"] = parse_options(values["defense_options"], "--defense-option")
            fields = {str(CONFIG_OPTIONS[n][0]): v if v is not False else None for n, v in values.items()
                      if CONFIG_OPTIONS[n][0]}
            preset = values.get("preset") or default_preset(values.get("dataset", "mnist"))
            cfg = configure(preset, fields, values.get("settings", ()))
            return command(cfg=cfg, **kwargs, **({"preset": preset} if wants_preset else {}))
        run.__signature__ = signature.replace(parameters=[*own, *added])  # type: ignore[attr-defined]
        run.__annotations__ = {p.name: p.annotation for p in (*own, *added)}
        return cast(F, run)
    return decorate


class RichReporter:
    """Progress bars and one line per epoch."""

    def __init__(self) -> None:
        self._progress: Progress | None = None

    def task(self, description: str, total: int) -> Callable[[int], None]:
        self._progress = progress = Progress(
            TextColumn("[bold]{task.description:>12}"), BarColumn(), MofNCompleteColumn(),
            TaskProgressColumn(), TimeElapsedColumn(), TimeRemainingColumn(), console=console)
        progress.start()
        task_id = progress.add_task(description, total=total)
        return lambda n: progress.advance(task_id, n)

    def done(self) -> None:
        if self._progress:
            self._progress.stop()
            self._progress = None

    def epoch(self, epoch: int, stats: EpochStats, test: dict[str, float] | None) -> None:
        rate = stats.samples / max(stats.seconds, 1e-9)
        console.print(f"[bold]epoch {epoch}[/]  {rate:.0f} samples/s  loss: "
                      + "  ".join(f"{k} {v:.3f}" for k, v in stats.loss.items()))
        console.print("  train acc: " + "  ".join(f"{k} {v:.4f}" for k, v in stats.accuracy.items()))
        if test is not None:
            console.print("  [green]test acc:  " + "  ".join(f"{k} {v:.4f}" for k, v in test.items()) + "[/]")


_verbose = False
F = TypeVar("F", bound=Callable[..., Any])


def _fail(e: Exception) -> NoReturn:
    if _verbose:
        err_console.print_exception()
    # paths stay whole, copyable; the message's own brackets ([pixel_attack]) are text, not markup
    err_console.print(f"[bold red]error:[/] {escape(str(e))}", soft_wrap=True)
    raise typer.Exit(code=2)


def _user_errors(command: F) -> F:
    """What a user's input can cause -- a bad option, a missing file, a refused request, a missing
    extra, a detected hijack, an unreachable server, a failed FLARE job -- ends in one line and exit
    code 2; anything else is a bug and keeps its traceback (``pgsl -v`` prints both)."""
    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except (typer.Exit, typer.Abort, click.ClickException):
            raise
        except (ValueError, OSError, UserError) as e:
            _fail(e)
    return cast(F, run)


def _show(t: tables.Tabular) -> None:
    table = Table(title=t.title, caption=t.caption or None)
    for c in t.columns:
        table.add_column(c, justify="left" if c in t.left else "right")
    for row in t.rows:
        table.add_row(*row)
    console.print(table)


def _csv(text: str | None) -> tuple[str, ...] | None:
    """A comma-separated option as names (None stays None)."""
    return None if text is None else tuple(s.strip() for s in text.split(",") if s.strip())


def _folds(folds: int | None, dataset: str) -> int:
    return (5 if dataset == "mias" else 0) if folds is None else folds


def _cross_validate(cfg: Any, out: Path, models: list[str], folds: int, cv_seed: int, device: str) -> None:
    from pgsl.experiments.cv import cross_validate

    _show(tables.cv(cross_validate(cfg, out, models=models, folds=folds, cv_seed=cv_seed, device=device,
                            reporter=RichReporter())))
    console.print(f"[green]wrote {out / 'cv.json'} and cv.md[/]")


@app.callback()
def main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log every step (the server: per "
                                      "site and step) and show tracebacks of errors.")) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(message)s",
                        handlers=[RichHandler(console=err_console, show_path=False)])
    logging.getLogger("pgsl").setLevel(logging.DEBUG if verbose else logging.INFO)
    global _verbose
    _verbose = verbose


@app.command()
@config_options("preset", "dataset", "data_dir", "limit_train", "limit_test", "seed", "defense",
                "defense_options", "guard", "settings")
def train(cfg: Any, out: Out, device: Device = "cpu", epochs: Epochs = None,
          resume: Annotated[bool, typer.Option(help="Continue the run in --out.")] = False,
          folds: Folds = None, cv_seed: CvSeed = 0) -> None:
    """Train a split model with a defence: PGSL (client attack + down-sampling + conv1-2 | APG
    recovery + 3 streams + fusion) or any other registered one (`pgsl defenses`); any setting of the
    preset with --set (recovery.mu=0.55, pixel_attack.pixels=4, data.image_size=256, ...). On MIAS,
    one run per fold of a patient-grouped cross-validation (--folds), summarised in cv.json / cv.md."""
    from pgsl.defenses import get_defense
    from pgsl.runtime import train_run

    if k := _folds(folds, cfg.data.dataset):
        return _cross_validate(cfg.replace(train={"epochs": epochs} if epochs else {}), out,
                               [cfg.defense.kind], k, cv_seed, device)
    m = train_run(cfg, out, resume=resume, device=device, reporter=RichReporter(), epochs=epochs)
    _show(tables.metrics(f"{m['dataset']} test set after {m['epochs']} epoch(s)", m))
    if m.get("privacy") is not None:
        console.print(get_defense(cfg.defense.kind).describe_guarantee(m["privacy"]))
    console.print(f"training {m['train_seconds']:.1f} s, evaluation {m['eval_seconds']:.1f} s; wrote "
                  f"{out / 'metrics.json'}")


@app.command()
def evaluate(run_dir: Annotated[Path, typer.Argument(help="A folder written by `pgsl train`.")],
             device: Device = "cpu", limit_test: LimitTest = None) -> None:
    """Re-evaluate a saved run on its test split (writes evaluation.json)."""
    from pgsl.runtime import evaluate_run

    r = evaluate_run(run_dir, device=device, limit_test=limit_test, reporter=RichReporter())
    _show(tables.metrics(f"test accuracy, epoch {r['epochs']}", r))


@app.command()
def privacy(runs: Runs, out: Out, device: Device = "cpu",
            victims: Annotated[int, typer.Option(help="Size of the victims' sample (each attack takes "
                                                 "the first `victims` of its budget).")] = 500,
            aux: Aux = None,
            attacks: Annotated[str | None, typer.Option(help="Comma-separated registered attacks "
                                                        "(`pgsl attacks`; default: every one).")] = None,
            budgets: Annotated[list[str], typer.Option("--budget", help="ATTACK.KNOB=VALUE, e.g. "
                                                       "dlg.iterations=40 (repeatable).")] = [],  # noqa: B006
            seed: int = 0, seeds: Annotated[int, typer.Option(help="Repeat with seeds SEED..SEED+N-1; "
                                                             "cells give the seed means' std.")] = 1) -> None:
    """Table I: run the adversary's inversion attacks against trained runs and score them."""
    from pgsl.experiments.privacy import PrivacyConfig, budgets_from_options
    from pgsl.experiments.privacy import privacy as run_privacy

    names: dict[str, Any] = {} if attacks is None else {"attacks": _csv(attacks)}
    pc = PrivacyConfig(victims=victims, aux=aux, seed=seed, seeds=seeds,
                       budgets=budgets_from_options(parse_options(budgets, "--budget")), **names)
    _show(tables.privacy(run_privacy(runs, out, pc, device=device)))
    console.print(f"wrote {out / 'table1.csv'}, {out / 'table1.md'} and the grids in {out}")


@app.command()
def hijack(runs: Runs, out: Out, device: Device = "cpu",
           steps: Annotated[int, typer.Option(help="Client steps under the malicious server.")] = 500,
           every: Annotated[int, typer.Option(help="Steps between points of the curve.")] = 50,
           victims: Annotated[int, typer.Option(help="Training images whose reconstructions are "
                                                "scored.")] = 64,
           aux: Aux = None, seeds: Annotated[int, typer.Option(help="Seeds 0..N-1.")] = 1,
           honest: Annotated[bool, typer.Option(help="Also train honestly with SplitGuard (false "
                                                "alarms).")] = True) -> None:
    """A malicious server (FSHA) hijacks each run's client while SplitGuard watches."""
    from pgsl.experiments.hijack import HijackConfig
    from pgsl.experiments.hijack import hijack as run_hijack

    hc = HijackConfig(steps=steps, every=every, victims=victims, aux=aux, seeds=seeds, honest=honest)
    _show(tables.hijack(run_hijack(runs, out, hc, device=device)))
    console.print(f"wrote {out / 'hijack.md'}, {out / 'hijack.csv'} and {out / 'hijack.json'}")


@app.command()
@config_options("preset", "dataset", "data_dir", "limit_train", "epochs", "settings")
def frontier(cfg: Any, out: Out, device: Device = "cpu",
             defenses: Annotated[str | None, typer.Option(help="Comma-separated defences (default: every "
                                                          "registered one).")] = None,
             strengths: Annotated[list[str], typer.Option("--setting", help="DEFENCE:KNOB=VALUE, e.g. "
                                                          "noise:scale=0.25 or pgsl:mu=0.15 (repeatable; "
                                                          "replaces the defence's declared settings; "
                                                          "DEFENCE:default: its defaults).")] = [],  # noqa: B006
             victims: Annotated[int, typer.Option(help="Victims of the learned attack.")] = 500,
             aux: Aux = None, seed: int = 0,
             mia_epochs: Annotated[int, typer.Option(help="Epochs of the learned inversion.")] = 10) -> None:
    """Privacy-utility frontier: train each defence at each of its settings (`pgsl defenses`),
    attack each run with the learned inversion, plot accuracy against reconstruction MSE. Cached:
    re-running resumes."""
    from pgsl.attacks import LEARNED
    from pgsl.experiments.frontier import frontier as run_frontier
    from pgsl.experiments.plan import arms, setting_options
    from pgsl.experiments.privacy import PrivacyConfig

    pc = PrivacyConfig(victims=victims, aux=aux, seed=seed, attacks=(LEARNED,),
                       budgets={LEARNED: {"epochs": mia_epochs}})
    rows = run_frontier(cfg, out, arms(_csv(defenses), setting_options(strengths)), pc, device=device,
                        reporter=RichReporter())
    _show(tables.frontier(rows))
    console.print(f"wrote {out / 'frontier.csv'} and {out / 'frontier.png'}")


@app.command("mu-sweep")
def mu_sweep(out: Out, dataset: Annotated[list[str], typer.Option(help="Repeat for several (one plot).")] = ["mnist"],  # noqa: B006,E501
             data_dir: DataDir = None, preset: PresetOpt = "quick", device: Device = "cpu",
             limit_train: LimitTrain = None,
             images: Annotated[int, typer.Option(help="Seeded sample of test images.")] = 500,
             mus: Annotated[str | None, typer.Option(help="Comma-separated mu values (default: the "
                                                     "paper's 0.05, 0.15, ..., 0.95).")] = None,
             seed: int = 0, solver: Annotated[str, typer.Option(help="apg (the paper's) or admm: the "
                                                                "same answer, fewer steps.")]
             = "apg") -> None:
    """Fig. 3: MSE between the APG-recovered and the clean image, on JSMA-attacked images, per mu."""
    from pgsl.experiments.mu_sweep import SweepConfig, best_mu
    from pgsl.experiments.mu_sweep import mu_sweep as run_sweep
    from pgsl.runtime import resolve_device

    values: dict[str, Any] = {} if mus is None else {"mus": tuple(float(m) for m in _csv(mus) or ())}
    sweep = SweepConfig(images=images, seed=seed, solver=solver, **values)
    configs = [configure(preset or default_preset(name), {"data.dataset": name, "data.data_dir": data_dir,
                                  "data.limit_train": limit_train}) for name in dataset]
    rows = run_sweep(configs, out, sweep, resolve_device(device))
    _show(tables.mu_sweep(rows))
    for name in dict.fromkeys(r.dataset for r in rows):
        console.print(f"{name}: lowest MSE at mu = {best_mu(rows, name):g} (paper: 0.55)")
    console.print(f"wrote {out / 'mu_sweep.csv'} and {out / 'mu_sweep.png'}")


@app.command()
def robustness(runs: Runs, out: Out, device: Device = "cpu",
               n_test: Annotated[int, typer.Option(help="Seeded test sample (0: all).")] = 1000,
               attacks: Annotated[str, typer.Option(help="Comma-separated test-time attacks.")]
               = "jsma,cw,bim,fgsm",
               reconstructions: Annotated[list[Path], typer.Option(help="recon_*.pt files from pgsl "
                                                                   "privacy: train a CNN on each.")] = [],  # noqa: B006
               fgsm_eps: float = 0.1, bim_eps: float = 0.1, bim_steps: int = 20, cw_c: float = 10.0,
               cw_steps: int = 100, jsma_gamma: Annotated[float, typer.Option(help="JSMA: max fraction "
                                                                            "of pixels changed.")] = 0.1,
               seed: int = 0) -> None:
    """Table II: accuracy on clean and adversarial test images (crafted against a plain CNN)."""
    from pgsl.experiments.robustness import RobustnessConfig
    from pgsl.experiments.robustness import robustness as run_robustness

    rc = RobustnessConfig(n_test=n_test, attacks=_csv(attacks) or (), fgsm_eps=fgsm_eps, bim_eps=bim_eps,
                          bim_steps=bim_steps, cw_c=cw_c, cw_steps=cw_steps, jsma_gamma=jsma_gamma, seed=seed)
    rows = run_robustness(runs, out, rc, device=device, reconstructions=reconstructions)
    _show(tables.robustness(rows, rc.attacks))
    console.print(f"wrote {out / 'table2.csv'}, {out / 'table2.md'} and {out / 'fig5.png'}")


@app.command()
@config_options("preset", "dataset", "data_dir", "settings")
def reproduce(cfg: Any, preset: str, out: Out, device: Device = "cpu",
              plan: Annotated[str | None, typer.Option(help="A reproduce plan (`pgsl plans`) or a TOML path "
                                                       "(default: the preset's name, else quick).")] = None,
              folds: Folds = None, cv_seed: CvSeed = 0,
              force: Annotated[bool, typer.Option(help="Compute again the stages this folder holds from "
                                                  "other settings (else refused).")] = False) -> None:
    """Everything: train PGSL and the baselines, Table I, the frontier, Table II, the mu sweep,
    Figs. 3-5 (MIAS: and the patient-grouped cross-validation), and one report.html. Cached per
    stage: re-running after a kill resumes."""
    from pgsl.experiments.reproduce import reproduce as run_reproduce

    report = run_reproduce(cfg, preset, out, plan=plan, device=device, reporter=RichReporter(),
                           folds=_folds(folds, cfg.data.dataset), cv_seed=cv_seed, force=force)
    console.print(f"[green]wrote {report}[/] (tables as CSV/JSON in {out})")


@app.command()
@config_options("preset", "dataset", "data_dir", "settings")
def benchmark(cfg: Any, out: Out, device: Device = "cpu",
              plan: Annotated[str, typer.Option(help="A benchmark plan (`pgsl plans`: tiny, quick -- a "
                                                "2-core CPU in an hour -- paper) or a TOML path.")] = "quick",
              seeds: Annotated[int | None, typer.Option(help="Seeds 0..N-1 (default: the plan's).")] = None,
              defenses: Annotated[str | None, typer.Option(help="Comma-separated defences (default: the "
                                                           "plan's).")] = None,
              attacks: Annotated[str | None, typer.Option(help="Comma-separated attacks (default: the "
                                                          "plan's).")] = None) -> None:
    """Every registered defence at each of its settings, over seeds, against every registered
    attack: one matrix, a summary with a privacy-utility score per defence, a heatmap and a
    frontier. Cached per run and per attack: re-running after a kill resumes."""
    from pgsl.experiments.benchmark import benchmark as run_benchmark
    from pgsl.experiments.plan import load_plan

    spec = load_plan("benchmark", plan).narrowed(seeds=seeds, defenses=_csv(defenses), attacks=_csv(attacks))
    _show(tables.benchmark(run_benchmark(cfg, out, spec, device=device, reporter=RichReporter()), plan))
    console.print(f"[green]wrote {out / 'summary.md'}[/] (matrix.csv, heatmap.png, frontier.png beside it)")


@app.command()
@config_options("preset", "dataset", "data_dir", "settings")
def baselines(cfg: Any, out: Out, device: Device = "cpu", folds: Folds = None, cv_seed: CvSeed = 0,
              models: Annotated[str | None, typer.Option(help="Comma-separated defences (split runs), "
                                                         "with CV also plain (the CNN in one place) and "
                                                         "majority (default: pgsl,none,plain,majority).")]
              = None) -> None:
    """PGSL, the vanilla split, the plain CNN and the majority class with the same protocol and
    budget on the same split (MIAS: the same patient-grouped folds), each with accuracy, balanced
    accuracy, macro-F1, AUC and recall per class. Cached: re-running resumes."""
    from pgsl.experiments.baselines import baselines as run_baselines
    from pgsl.experiments.cv import DEFAULT_MODELS, MAJORITY, PLAIN

    names = list(_csv(models) or DEFAULT_MODELS)
    if k := _folds(folds, cfg.data.dataset):
        return _cross_validate(cfg, out, names, k, cv_seed, device)
    _show(tables.baselines(run_baselines(cfg, out, device=device, reporter=RichReporter(),
                              defenses=[m for m in names if m not in (PLAIN, MAJORITY)])))
    console.print(f"[green]wrote {out / 'baselines.md'}[/]")


@app.command()
def certs(out: Out, sites: Annotated[str, typer.Option(help="Comma-separated site names.")],
          hosts: Annotated[str, typer.Option(help="Names/IPs the server certificate is valid for.")]
          = "localhost,127.0.0.1") -> None:
    """Create a CA, a server certificate and one client certificate per site (mutual TLS)."""
    from pgsl.transport.tls import make_certs

    files = make_certs(out, list(_csv(sites) or ()), list(_csv(hosts) or ()))
    console.print(f"wrote {len(files)} files to {out}; keep ca.key offline, give each site its "
                  "<site>.pem, <site>.key and ca.pem")


@app.command()
def server(out: Out, listen: Annotated[str, typer.Option(help="HOST:PORT (port 0 picks a free one).")]
           = "127.0.0.1:50051", tls: Tls = None, insecure: Insecure = False,
           config: Annotated[str, typer.Option(help="Preset or TOML path (model, recovery, train).")]
           = "quick",
           sites: Annotated[str | None, typer.Option(help="Allowed sites (default: every <site>.pem in "
                                                     "--tls).")] = None,
           classes: Annotated[int, typer.Option(help="Classes the streams predict.")] = 10,
           device: Device = "cpu",
           checkpoint_every: Annotated[int, typer.Option(help="Training steps between checkpoints.")] = 200,
           max_message_mb: Annotated[float, typer.Option(help="Largest request, in MiB.")] = 64.0) -> None:
    """Run the computation server: every site trains against one shared server model."""
    from pgsl.runtime.server import allowed_sites, run_server, tls_or_insecure

    tls = tls_or_insecure(tls, insecure)
    allowed = allowed_sites(list(_csv(sites) or ()), tls)

    def ready(host: str, port: int) -> None:
        console.print(f"listening on {host}:{port} ({'mutual TLS' if tls else 'insecure'}), sites: "
                      f"{', '.join(sorted(allowed)) if allowed else 'any'}", soft_wrap=True)

    saved = run_server(configure(config), out, listen=listen, tls=tls, sites=allowed, classes=classes,
                       device=device, checkpoint_every=checkpoint_every, max_message_mb=max_message_mb,
                       ready=ready)
    console.print(f"stopped; state saved to {saved}")


@app.command()
@config_options("preset", "dataset", "data_dir", "limit_train", "limit_test", "seed", "guard")
def client(cfg: Any, server_address: Annotated[str, typer.Option("--server", help="HOST:PORT of `pgsl "
                                                                 "server`.")],
           site: Annotated[str, typer.Option(help="This site's name (its certificate's).")], out: Out,
           tls: Tls = None, insecure: Insecure = False, epochs: Epochs = None,
           wire_dtype: WireDtype = "float32", device: Device = "cpu",
           retries: Annotated[int, typer.Option(help="Reconnections when the server is unavailable.")] = 5,
           resume: Annotated[bool, typer.Option(help="Continue the run.")] = False) -> None:
    """Train this site's client segment against a remote server (its data never leaves)."""
    from pgsl.runtime import train_run
    from pgsl.runtime.server import tls_or_insecure
    from pgsl.transport.client import GrpcChannel
    from pgsl.transport.wire import wire_dtype as wire_dtypes

    dtype = wire_dtypes(wire_dtype, "--wire-dtype")
    with GrpcChannel(server_address, site=site, tls_dir=tls_or_insecure(tls, insecure), wire_dtype=dtype,
                     retries=retries) as channel:
        m = train_run(cfg, out, resume=resume, device=device, reporter=RichReporter(), epochs=epochs,
                      channel=channel)
    _show(tables.metrics(f"site {site}: test set", m))
    samples = m["n_train"] * m["epochs"] + m["n_test"]
    console.print(f"bytes sent per sample ({wire_dtype}): {channel.bytes_sent / max(samples, 1):.0f}")


@app.command()
def predict(run_dir: Annotated[Path, typer.Argument(help="A trained run folder (`pgsl train`), a "
                                                    "site's (`pgsl client`) with --server, or a CV folder.")],
            images: Annotated[Path, typer.Option(help="An image file or a folder of PNG/PGM/JPEG/TIFF/"
                                                 "DICOM files.")],
            out: Annotated[Path, typer.Option(help="CSV: per image, each stream's and the decision's "
                                              "scores and the predicted class.")],
            server_address: Annotated[str | None, typer.Option("--server", help="HOST:PORT of a running "
                                                               "`pgsl server`.")] = None,
            site: Annotated[str | None, typer.Option(help="This site's name, with --server.")] = None,
            tls: Tls = None, insecure: Insecure = False, batch_size: int = 64, device: Device = "cpu",
            model: Annotated[str | None, typer.Option(help="With a CV folder: which split model "
                                                      "(default: its first).")] = None) -> None:
    """Classify new images through a trained split model: the run's own protocol (a patch model scans
    films and answers with the most abnormal patch), client pipeline and server model. Given a
    cross-validation folder (MIAS, --folds), each film is scored by the fold model that never trained
    on it. Unusable images get a row with the reason; the rest are classified."""
    from pgsl.experiments.predict import classify

    done, skipped = classify(run_dir, images, out, server=server_address, site=site, tls=tls,
                             insecure=insecure, model=model, batch_size=batch_size, device=device)
    for line in done:
        console.print(line)
    for line in skipped:
        err_console.print(f"[yellow]skipped[/] {escape(line)}")


@app.command("attacks")
def list_attacks() -> None:
    """List the registered inversion attacks, what each needs, and its budget knobs."""

    _show(tables.registry("attacks"))


@app.command()
def defenses() -> None:
    """List the registered defences, their options and their settings (frontier, benchmark)."""

    _show(tables.registry("defenses"))


@app.command()
def presets() -> None:
    """List the training presets and where they live."""
    from pgsl.config import PRESET_DIR

    for name in available_presets():
        console.print(f"{name}: {PRESET_DIR / (name + '.toml')}")


@app.command()
def plans() -> None:
    """List the experiment plans (`pgsl reproduce --plan`, `pgsl benchmark --plan`) and where they live."""
    from pgsl.experiments.plan import EXPERIMENTS, PLAN_DIR, available_plans

    for experiment in EXPERIMENTS:
        for name in available_plans(experiment):
            console.print(f"{experiment} {name}: {PLAN_DIR / experiment / (name + '.toml')}")


flare_app = _Typer(no_args_is_help=True, help="PGSL as an NVIDIA FLARE job (pip install "
                        "'pgsl[flare]'): export it for a provisioned project, or run it locally.")
app.add_typer(flare_app, name="flare")


FLARE_OPTIONS = ("preset", "dataset", "data_dir", "limit_train", "limit_test", "epochs", "seed", "defense",
                 "defense_options")


@flare_app.command("job")
@config_options(*FLARE_OPTIONS)
def flare_job(cfg: Any, sites: Annotated[str, typer.Option(help="Site names, comma-separated: the names in "
                                                           "the sites' certificates (nvflare provision).")],
              out: Out, server_name: Annotated[str, typer.Option(help="The server's fully qualified "
                                                                 "domain name (project.yml).")],
              site_data: Annotated[list[str], typer.Option("--site-data", help="SITE=PATH: a site's own "
                                                           "data folder (repeatable).")] = [],  # noqa: B006
              classes: Annotated[int | None, typer.Option(help="Classes (default: read from the data "
                                                          "here).")] = None,
              server_out: Annotated[str, typer.Option(help="The server's folder there.")] = "pgsl-server",
              site_out: Annotated[str, typer.Option(help="Sites' run folders there.")] = "pgsl-sites",
              wire_dtype: WireDtype = "float32", device: Device = "cpu", checkpoint_every: int = 200) -> None:
    """Write the PGSL job for a provisioned FLARE project (`nvflare job submit`), and a
    project.yml for `nvflare provision` (mutual TLS, one certificate per site)."""
    require("nvflare")
    from pgsl.flare import job

    if classes is not None and classes < 2:
        raise ValueError(f"--classes must be >= 2, got {classes}")
    names, data = list(_csv(sites) or ()), parse_options(site_data, "--site-data")
    recipe = job.make_recipe(cfg, sites=names, classes=classes or job.classes_of(cfg), server_out=server_out,
                             site_out=site_out, wire_dtype=wire_dtype, device=device,
                             site_data={k: str(v) for k, v in data.items()},
                             checkpoint_every=checkpoint_every)
    folder = job.export_job(recipe, out, names, server=server_name)
    console.print(f"wrote the job {folder} and {out / 'project.yml'}; next: nvflare provision -p "
                  f"{out / 'project.yml'}, start the parties, then nvflare job submit -j {folder}")


def _flare_local(mode: str) -> Callable[..., None]:
    """The command running the job in FLARE's ``mode`` (simulate, poc) on this machine."""

    @config_options(*FLARE_OPTIONS)
    def flare_local(cfg: Any, out: Annotated[Path, typer.Option(help="Folder: server/, sites/<site>/, "
                                                                "flare/; the same --out resumes.")],
                    sites: Annotated[int, typer.Option(help="Number of sites (site-1 ... site-N).")] = 2,
                    wire_dtype: WireDtype = "float32", device: Device = "cpu") -> None:
        require("nvflare")
        from pgsl.flare.job import run_local

        console.print(f"FLARE {mode}: {sites} site(s), workspace {out.resolve() / 'flare'}")
        summary = run_local(mode, cfg, sites, out, wire_dtype=wire_dtype, device=device)
        _show(tables.flare(summary, wire_dtype))
        for name, error in sorted(summary["failed"].items()):
            err_console.print(f"[bold red]site {name} failed:[/] {escape(str(error))}")
        if summary["failed"]:
            raise typer.Exit(code=1)
        console.print(f"server: {out / 'server'} (server.pt, server.log); sites: {out / 'sites'}/<site>")

    return flare_local


flare_app.command("simulate", help="Run the job in FLARE's simulator on this machine.")(
    _flare_local("simulate"))
flare_app.command("poc", help="Run the job in FLARE's proof-of-concept mode: a provisioned project "
                  "(mutual TLS) with the server, each site and an admin as separate processes on "
                  "loopback.")(_flare_local("poc"))
