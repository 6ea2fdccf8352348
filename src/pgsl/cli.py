"""The ``pgsl`` command line. Libraries log; this module talks (progress bars, tables, errors)."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar, cast

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

from pgsl.config import Config, apply_settings, available_presets, load_preset, parse_value
from pgsl.data import LOADERS
from pgsl.extras import MissingExtra, require

if TYPE_CHECKING:
    from pgsl.split.trainer import EpochStats

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="PGSL: privacy-preserving split learning on medical images.")
console = Console()
err_console = Console(stderr=True)


class RichReporter:
    """Progress bars and one line per epoch."""

    def __init__(self) -> None:
        self._progress: Progress | None = None

    def task(self, description: str, total: int) -> Callable[[int], None]:
        self._progress = Progress(
            TextColumn("[bold]{task.description:>12}"), BarColumn(), MofNCompleteColumn(),
            TaskProgressColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
            console=console, transient=False,
        )
        self._progress.start()
        task_id = self._progress.add_task(description, total=total)
        progress = self._progress
        return lambda n: progress.advance(task_id, n)

    def done(self) -> None:
        if self._progress:
            self._progress.stop()
            self._progress = None

    def epoch(self, epoch: int, stats: EpochStats, test: dict[str, float] | None) -> None:
        train = "  ".join(f"{k} {v:.4f}" for k, v in stats.accuracy.items())
        loss = "  ".join(f"{k} {v:.3f}" for k, v in stats.loss.items())
        rate = stats.samples / max(stats.seconds, 1e-9)
        console.print(f"[bold]epoch {epoch}[/]  {rate:.0f} samples/s  loss: {loss}")
        console.print(f"  train acc: {train}")
        if test is not None:
            tst = "  ".join(f"{k} {v:.4f}" for k, v in test.items())
            console.print(f"  [green]test acc:  {tst}[/]")


# what a user's input can cause (a bad option, a missing file, a refused request): one line;
# anything else is a bug and keeps its traceback. `pgsl -v` prints the traceback of both.
USER_ERRORS: tuple[type[Exception], ...] = (ValueError, OSError, MissingExtra)
_verbose = False


def _fail(e: Exception) -> NoReturn:
    if _verbose:
        err_console.print_exception()
    # paths stay whole, copyable; the message's own brackets ([pixel_attack]) are text, not markup
    err_console.print(f"[bold red]error:[/] {escape(str(e))}", soft_wrap=True)
    raise typer.Exit(code=2)


Errors = Callable[[], tuple[type[Exception], ...]]
F = TypeVar("F", bound=Callable[..., Any])


def _user_errors(*extra: Errors) -> Callable[[F], F]:
    """A command's errors: :data:`USER_ERRORS` and the ``extra`` ones (imported only when an error
    is raised, so ``pgsl --help`` loads no torch) end in one line and exit code 2; anything else
    is a bug and keeps its traceback."""
    def decorate(command: F) -> F:
        @functools.wraps(command)
        def run(*args: Any, **kwargs: Any) -> Any:
            try:
                return command(*args, **kwargs)
            except (typer.Exit, typer.Abort, click.ClickException):
                raise
            except Exception as e:
                if isinstance(e, USER_ERRORS + tuple(t for more in extra for t in more())):
                    _fail(e)
                raise
        return cast(F, run)
    return decorate


def _hijack() -> tuple[type[Exception], ...]:
    from pgsl.client.splitguard import HijackDetected

    return (HijackDetected,)


def _transport() -> tuple[type[Exception], ...]:
    from pgsl.transport.client import TransportError

    return (TransportError,)


def _flare_failures() -> tuple[type[Exception], ...]:
    return (RuntimeError,)  # FLARE's simulator and POC report a failed job as a RuntimeError


def _accuracy_table(title: str, acc: dict[str, float], n: int) -> Table:
    table = Table(title=f"{title} (n={n})")
    for k in acc:
        table.add_column(k, justify="right")
    table.add_row(*(f"{v:.4f}" for v in acc.values()))
    return table


def _metrics_table(title: str, metrics: dict[str, Any]) -> Table:
    """Per stream and the decision: accuracy, balanced accuracy, macro-F1, AUC and recall per
    class; the majority-class baseline in the caption."""
    detailed: dict[str, dict[str, Any]] = metrics.get("test_metrics") or {}
    if not detailed:  # a run written before these metrics existed
        return _accuracy_table(title, metrics["test_accuracy"], metrics["n_test"])
    table = Table(title=f"{title} (n={metrics['n_test']})")
    classes = list(next(iter(detailed.values()))["recall"])
    for column in ("", "accuracy", "balanced acc.", "macro-F1", "AUC (ovr)", "recall per class"):
        table.add_column(column, justify="left" if column in ("", "recall per class") else "right")
    for key, m in detailed.items():
        recall = " ".join(f"{c}:{'-' if r is None else f'{r:.2f}'}" for c, r in m["recall"].items())
        if len(classes) > 6:
            recall = f"lowest {min(v for v in m['recall'].values() if v is not None):.2f}"
        table.add_row(key, f"{m['accuracy']:.4f}", f"{m['balanced_accuracy']:.4f}", f"{m['macro_f1']:.4f}",
                      "-" if m["auc_ovr"] is None else f"{m['auc_ovr']:.4f}", recall)
    base = metrics.get("majority_baseline")
    if base:
        table.caption = (f"majority-class baseline (always '{base['class']}'): accuracy "
                         f"{base['accuracy']:.4f}, balanced accuracy {base['balanced_accuracy']:.4f}")
    return table


def _options(items: list[str], option: str) -> dict[str, Any]:
    """``KEY=VALUE`` items as a dict; values read by :func:`pgsl.config.parse_value`."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{option} needs KEY=VALUE, got {item!r}")
        out[key.strip()] = parse_value(text)
    return out


def _overrides(cfg: Config, dataset: str, data_dir: str | None, limit_train: int | None,
               limit_test: int | None) -> Config:
    data: dict[str, Any] = {"dataset": dataset, "data_dir": data_dir}
    for key, value in (("limit_train", limit_train), ("limit_test", limit_test)):
        if value is not None:
            data[key] = value
    return cfg.replace(data=data)


FOLDS_HELP = ("MIAS: patient-grouped stratified k-fold cross-validation, one run per fold (default 5; "
              "0: the paper's single split). Other datasets keep their own test split.")


def _folds(folds: int | None, cfg: Config) -> int:
    """The fold count: as given, else 5 for MIAS (its protocol of record) and 0 otherwise."""
    if folds is None:
        return 5 if cfg.data.dataset == "mias" else 0
    return folds  # any other than 0 is checked by cross_validate


def _cv_table(report: dict[str, Any]) -> Table:
    from pgsl.experiments.cv import model_name, pm

    table = Table(title=f"MIAS {report['task']}: {report['folds']}-fold patient-grouped CV "
                        f"(cv_seed {report['cv_seed']}), mean ± std over folds")
    for column in ("model", "balanced acc.", "AUC", "accuracy", "macro-F1"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for name, m in report["models"].items():
        table.add_row(model_name(name),
                      *(pm(m, k) for k in ("balanced_accuracy", "auc", "accuracy", "macro_f1")))
    return table


@app.callback()
def main(verbose: bool = typer.Option(False, "--verbose", "-v",
                                     help="Log every step (the server: per site and step) and show "
                                          "tracebacks of errors.")) -> None:
    logging.basicConfig(
        level=logging.WARNING, format="%(message)s",
        handlers=[RichHandler(console=err_console, show_path=False)],
    )
    logging.getLogger("pgsl").setLevel(logging.DEBUG if verbose else logging.INFO)
    global _verbose
    _verbose = verbose


@app.command()
@_user_errors(_hijack)
def train(
    out: Path = typer.Option(..., help="Run folder: config.json, checkpoint.pt, metrics.json."),
    dataset: str = typer.Option("mnist", help=f"One of: {', '.join(LOADERS)}."),
    preset: str = typer.Option("quick", help=f"{' | '.join(available_presets())} or a TOML path."),
    data_dir: str | None = typer.Option(None, help="Dataset folder (MIAS) or cache override."),
    image_size: int | None = typer.Option(None, help="MIAS/DICOM resize (even)."),
    device: str = typer.Option("cpu", help="cpu, cuda or cuda:N."),
    epochs: int | None = typer.Option(None, help="Override the preset's epochs."),
    batch_size: int | None = typer.Option(None),
    limit_train: int | None = typer.Option(None, help="Seeded random training subset."),
    limit_test: int | None = typer.Option(None, help="First N test images."),
    mu: float | None = typer.Option(None, help="APG relaxation parameter (paper: 0.55)."),
    pixels: float | None = typer.Option(None, help="Pixel budget: count, or fraction if < 1."),
    seed: int | None = typer.Option(None),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out."),
    defense: str = typer.Option("pgsl", help="A registered defence (`pgsl defenses` lists them)."),
    defense_options: list[str] = typer.Option([], "--defense-option", help="KEY=VALUE option of "
                                              "the defence, e.g. scale=0.5 for noise (repeatable)."),
    settings: list[str] = typer.Option([], "--set", help="section.key=value, e.g. recovery.svt=auto "
                                       "(repeatable; any field of the preset)."),
    guard: bool = typer.Option(False, "--guard", help="SplitGuard on the client: stop when the "
                               "server's gradients do not depend on the labels (a hijack)."),
    folds: int | None = typer.Option(None, help=FOLDS_HELP),
    cv_seed: int = typer.Option(0, help="Seed of the cross-validation's folds."),
) -> None:
    """Train a split model with a defence: PGSL (client attack + down-sampling + conv1-2 | APG
    recovery + 3 streams + fusion) or any other registered one (`pgsl defenses`). On MIAS, one run
    per fold of a patient-grouped cross-validation (--folds), summarised in cv.json / cv.md."""
    from pgsl.runtime import train_run

    cfg = _overrides(load_preset(preset), dataset, data_dir, limit_train, limit_test)
    if guard:
        cfg = cfg.replace(guard={"splitguard": True})
    if image_size is not None and image_size % 2:
        raise ValueError(f"--image-size must be even, got {image_size}")
    cfg = cfg.replace(
        data={"image_size": image_size} if image_size is not None else {},
        train={k: v for k, v in (("batch_size", batch_size), ("seed", seed)) if v is not None},
        recovery={"mu": mu} if mu is not None else {},
        pixel_attack={"pixels": pixels} if pixels is not None else {},
        defense={"kind": defense, "params": _options(defense_options, "--defense-option")},
    )
    cfg = apply_settings(cfg, settings)
    k = _folds(folds, cfg)
    if k:
        from pgsl.experiments.cv import cross_validate

        if epochs is not None:
            cfg = cfg.replace(train={"epochs": epochs})
        report = cross_validate(cfg, out, models=[cfg.defense.kind], folds=k, cv_seed=cv_seed,
                                device=device, reporter=RichReporter())
        console.print(_cv_table(report))
        console.print(f"[green]wrote {out / 'cv.json'} and cv.md[/]")
        return
    if resume:
        console.print(f"resuming {out} with its saved configuration")
    metrics = train_run(cfg, out, resume=resume, device=device, reporter=RichReporter(),
                        epochs=epochs)
    console.print(_metrics_table(f"{metrics['dataset']} test set after {metrics['epochs']} epoch(s)",
                                 metrics))
    g = metrics.get("privacy")
    if g is not None and {"epsilon", "delta", "releases", "epsilon_subsampled"} <= set(g):
        console.print(f"({g['epsilon']:.4g}, {g['delta']:g})-DP per training sample's released "
                      f"activations over {g['releases']:g} release(s) (epsilon as embedding-DP papers "
                      f"report it, with subsampling: {g['epsilon_subsampled']:.4g}); labels and "
                      "returned gradients are not covered")
    elif g is not None:
        console.print("guarantee: " + ", ".join(f"{k} {v:.4g}" for k, v in g.items()))
    console.print(f"training {metrics['train_seconds']:.1f} s, evaluation "
                  f"{metrics['eval_seconds']:.1f} s; wrote {out / 'metrics.json'}")


@app.command()
@_user_errors()
def privacy(
    runs: list[Path] = typer.Argument(..., help="Trained run folders (any defences)."),
    out: Path = typer.Option(..., help="Folder for table1.csv/.md/.json and the Fig. 4 grids."),
    device: str = typer.Option("cpu"),
    victims: int = typer.Option(500, help="Size of the victims' sample (each attack takes the "
                                "first `victims` of its budget)."),
    aux: int | None = typer.Option(None, help="Auxiliary images (default: half the test set)."),
    attacks: str | None = typer.Option(None, help="Comma-separated registered attacks "
                                       "(`pgsl attacks`; default: every one)."),
    budgets: list[str] = typer.Option([], "--budget", help="ATTACK.KNOB=VALUE, e.g. dlg.iterations=40 "
                                      "or activation.victims=32 (repeatable; `pgsl attacks` lists "
                                      "the knobs)."),
    seed: int = typer.Option(0),
    seeds: int = typer.Option(1, help="Repeat with seeds SEED..SEED+N-1 (victims' sample, attacks' "
                              "initialisation); cells report the std of the per-seed means too."),
) -> None:
    """Table I: run the adversary's inversion attacks against trained runs and score them."""
    from pgsl.experiments.privacy import PrivacyConfig
    from pgsl.experiments.privacy import privacy as run_privacy

    per_attack: dict[str, dict[str, Any]] = {}
    for key, value in _options(budgets, "--budget").items():
        attack, dot, knob = key.partition(".")
        if not dot:
            raise ValueError(f"--budget needs ATTACK.KNOB=VALUE, got {key!r}")
        per_attack.setdefault(attack, {})[knob] = value
    names = {} if attacks is None else {
        "attacks": tuple(a.strip() for a in attacks.split(",") if a.strip())}
    pc = PrivacyConfig(victims=victims, aux=aux, seed=seed, seeds=seeds, budgets=per_attack,
                       **names)
    rows = run_privacy(runs, out, pc, device=device)
    table = Table(title="Table I: reconstructions of the victims' clean images")
    for col in ("defence", "target", "attack", "n", "MSE", "PSNR", "SSIM", "paper MSE"):
        table.add_column(col)
    for r in rows:
        mse = f"{r.mse_mean:.4f}" + ("" if r.mse_seed_std is None else f" ± {r.mse_seed_std:.4f}")
        table.add_row(r.defense, r.target, r.attack, str(r.n_victims), mse,
                      f"{r.psnr_mean:.2f}", f"{r.ssim_mean:.3f}",
                      "" if r.paper_mse is None else str(r.paper_mse))
    console.print(table)
    console.print(f"wrote {out / 'table1.csv'}, {out / 'table1.md'} and the grids in {out}")


@app.command()
@_user_errors()
def hijack(
    runs: list[Path] = typer.Argument(..., help="Trained run folders (any defences): the client's "
                                      "configuration, data and prepared defence state."),
    out: Path = typer.Option(..., help="Folder for hijack.csv/.md/.json."),
    device: str = typer.Option("cpu"),
    steps: int = typer.Option(500, help="Client training steps under the malicious server."),
    every: int = typer.Option(50, help="Steps between points of the reconstruction curve."),
    victims: int = typer.Option(64, help="Training images whose reconstructions are scored."),
    aux: int | None = typer.Option(None, help="The server's auxiliary images (default: half the "
                                   "test set)."),
    seeds: int = typer.Option(1, help="Seeds 0..N-1 (victims, client weights, server, detector)."),
    honest: bool = typer.Option(True, help="Also train honestly with SplitGuard (false alarms)."),
) -> None:
    """A malicious server (FSHA) hijacks each run's client while SplitGuard watches."""
    from pgsl.experiments.hijack import HijackConfig
    from pgsl.experiments.hijack import hijack as run_hijack

    hc = HijackConfig(steps=steps, every=every, victims=victims, aux=aux, seeds=seeds, honest=honest)
    rows = run_hijack(runs, out, hc, device=device)
    table = Table(title="FSHA against each defence; SplitGuard on the client")
    for col in ("defence", "seed", "FSHA MSE", "FSHA SSIM", "mean image MSE", "flagged at", "false alarm at"):
        table.add_column(col)
    for r in rows:
        table.add_row(r.defense, str(r.seed), f"{r.mse_mean:.4f}", f"{r.ssim_mean:.3f}",
                      f"{r.mean_image_mse:.4f}", str(r.detected_at or "-"), str(r.false_alarm_at or "-"))
    console.print(table)
    console.print(f"wrote {out / 'hijack.md'}, {out / 'hijack.csv'} and {out / 'hijack.json'}")


@app.command("attacks")
def list_attacks() -> None:
    """List the registered inversion attacks, what each needs, and its budget knobs."""
    import dataclasses

    from pgsl.attacks import ATTACKS

    table = Table(title="attacks (pgsl privacy --attacks NAME,... --budget NAME.KNOB=VALUE)")
    for col in ("name", "attack", "needs", "budget (default)"):
        table.add_column(col)
    for name, cls in ATTACKS.items():
        knobs = ", ".join(f"{f.name}={f.default}" for f in dataclasses.fields(cls.Budget))
        table.add_row(name, cls.title, "; ".join(sorted(cls.needs)), knobs)
    console.print(table)


def _floats(text: str, option: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{option} takes comma-separated numbers, got {text!r}") from None


@app.command()
@_user_errors()
def frontier(
    out: Path = typer.Option(..., help="Folder for frontier.csv/.json/.png and one run per setting."),
    dataset: str = typer.Option("mnist", help=f"One of: {', '.join(LOADERS)}."),
    preset: str = typer.Option("quick", help=f"{' | '.join(available_presets())} or a TOML path."),
    data_dir: str | None = typer.Option(None, help="Dataset folder (MIAS) or cache override."),
    device: str = typer.Option("cpu", help="cpu, cuda or cuda:N."),
    limit_train: int | None = typer.Option(None, help="Seeded random training subset per run."),
    epochs: int | None = typer.Option(None, help="Override the preset's epochs."),
    noise: str = typer.Option("0.25,0.5,1,2", help="Laplace scales b to train (empty: none)."),
    nopeek: str = typer.Option("0.1,0.5,1,3", help="NoPeek weights alpha to train."),
    mu: str = typer.Option("0.15,0.55,0.95", help="PGSL mu values (4-pixel budget)."),
    pixels: str = typer.Option("1,16", help="PGSL pixel budgets (mu 0.55; 4 is on the mu curve)."),
    victims: int = typer.Option(500, help="Victims of the learned attack."),
    aux: int | None = typer.Option(None, help="Auxiliary images (default: half the test set)."),
    mia_epochs: int = typer.Option(10, help="Training epochs of the learned inversion."),
    seed: int = typer.Option(0, help="Seed of the victims' sample and the attack."),
    settings: list[str] = typer.Option([], "--set", help="section.key=value for every run."),
) -> None:
    """Privacy-utility frontier: train each defence at several strengths, attack each run with the
    learned inversion, plot accuracy against reconstruction MSE. Cached: re-running resumes."""
    from pgsl.experiments.frontier import frontier as run_frontier
    from pgsl.experiments.frontier import sweep
    from pgsl.experiments.privacy import PrivacyConfig

    cfg = _overrides(load_preset(preset), dataset, data_dir, limit_train, None)
    if epochs is not None:
        cfg = cfg.replace(train={"epochs": epochs})
    cfg = apply_settings(cfg, settings)
    points = sweep(_floats(noise, "--noise"), _floats(nopeek, "--nopeek"), _floats(mu, "--mu"),
                   [int(p) for p in _floats(pixels, "--pixels")], base_mu=cfg.recovery.mu)
    pc = PrivacyConfig(victims=victims, aux=aux, seed=seed, attacks=("mia",),
                       budgets={"mia": {"epochs": mia_epochs}})
    rows = run_frontier(cfg, out, points, pc, device=device, reporter=RichReporter())
    table = Table(title="privacy-utility frontier (MIA reconstruction MSE vs accuracy)")
    for col in ("defence", "strength", "accuracy", "MSE", "SSIM", "attacked view"):
        table.add_column(col)
    for r in rows:
        table.add_row(r.curve, f"{r.value:g}", f"{r.accuracy:.4f}", f"{r.mse:.4f} ± {r.mse_std:.4f}",
                      f"{r.ssim:.3f}", r.target)
    console.print(table)
    console.print(f"wrote {out / 'frontier.csv'} and {out / 'frontier.png'}")


@app.command("mu-sweep")
@_user_errors()
def mu_sweep(
    out: Path = typer.Option(..., help="Folder for mu_sweep.csv/.json/.png."),
    dataset: list[str] = typer.Option(["mnist"], help="Repeat for several (one plot): mnist, mias, ..."),
    data_dir: str | None = typer.Option(None, help="MIAS folder (when --dataset mias)."),
    preset: str = typer.Option("quick", help="Pixel budget, surrogate and training subset come from it."),
    device: str = typer.Option("cpu", help="cpu, cuda or cuda:N."),
    limit_train: int | None = typer.Option(None, help="Training subset for the surrogate."),
    images: int = typer.Option(500, help="Seeded sample of test images to attack and recover."),
    mus: str = typer.Option(",".join(f"{m:g}" for m in (0.05, 0.15, 0.25, 0.35, 0.45, 0.55, 0.65, 0.75,
                                                          0.85, 0.95)), help="mu values."),
    seed: int = typer.Option(0),
    solver: str = typer.Option("apg", help="apg (the paper's) or admm: the same converged answer, "
                                           "in fewer iterations."),
) -> None:
    """Fig. 3: MSE between the APG-recovered and the clean image, on JSMA-attacked images, per mu."""
    from pgsl.experiments.mu_sweep import SweepConfig, best_mu
    from pgsl.experiments.mu_sweep import mu_sweep as run_sweep
    from pgsl.runtime import resolve_device

    sweep = SweepConfig(mus=tuple(_floats(mus, "--mus")), images=images, seed=seed, solver=solver)
    base = load_preset(preset)
    configs = [_overrides(base, name, data_dir if name == "mias" else None, limit_train, None)
               for name in dataset]
    rows = run_sweep(configs, out, sweep, resolve_device(device))
    table = Table(title="mu sweep: MSE of the recovered image to the clean one (mu 0 = attacked image)")
    for col in ("dataset", "mu", "MSE", "iterations", "converged"):
        table.add_column(col)
    for r in rows:
        table.add_row(r.dataset, f"{r.mu:g}", f"{r.mse_mean:.5f}", f"{r.iterations:.0f}",
                      f"{r.converged:.2f}")
    console.print(table)
    for name in dict.fromkeys(r.dataset for r in rows):
        console.print(f"{name}: lowest MSE at mu = {best_mu(rows, name):g} (paper: 0.55)")
    console.print(f"wrote {out / 'mu_sweep.csv'} and {out / 'mu_sweep.png'}")


@app.command()
@_user_errors()
def robustness(
    runs: list[Path] = typer.Argument(..., help="Trained run folders (PGSL and any baselines)."),
    out: Path = typer.Option(..., help="Folder for table2.csv/.md/.json, fig5.png and the plain CNN."),
    device: str = typer.Option("cpu"),
    n_test: int = typer.Option(1000, help="Seeded test sample (0: the whole test set)."),
    attacks: str = typer.Option("jsma,cw,bim,fgsm", help="Comma-separated test-time attacks."),
    reconstructions: list[Path] = typer.Option([], "--reconstructions", help="recon_*.pt files "
                                               "from pgsl privacy: train a CNN on each attack's images."),
    fgsm_eps: float = typer.Option(0.1), bim_eps: float = typer.Option(0.1),
    bim_steps: int = typer.Option(20), cw_c: float = typer.Option(10.0, help="C&W constant c."),
    cw_steps: int = typer.Option(100), jsma_gamma: float = typer.Option(0.1, help="JSMA: max "
                                                                       "fraction of pixels changed."),
    seed: int = typer.Option(0),
) -> None:
    """Table II: accuracy on clean and adversarial test images (crafted against a plain CNN)."""
    from pgsl.experiments.robustness import ATTACK_NAMES, RobustnessConfig
    from pgsl.experiments.robustness import robustness as run_robustness

    names = tuple(a.strip() for a in attacks.split(",") if a.strip())
    rc = RobustnessConfig(n_test=n_test or None, attacks=names, fgsm_eps=fgsm_eps, bim_eps=bim_eps,
                          bim_steps=bim_steps, cw_c=cw_c, cw_steps=cw_steps, jsma_gamma=jsma_gamma,
                          seed=seed)
    rows = run_robustness(runs, out, rc, device=device, reconstructions=reconstructions)
    table = Table(title=f"Table II: accuracy (n={rows[0].n_test})")
    for col in ("model", "stream", "clean", *(ATTACK_NAMES.get(a, a) for a in names)):
        table.add_column(col)
    for r in rows:
        table.add_row(r.model, r.stream, f"{100 * r.clean:.1f}%",
                      *(f"{100 * r.adversarial[a]:.1f}%" if a in r.adversarial else "" for a in names))
    console.print(table)
    console.print(f"wrote {out / 'table2.csv'}, {out / 'table2.md'} and {out / 'fig5.png'}")


@app.command()
@_user_errors()
def reproduce(
    out: Path = typer.Option(..., help="Folder for every run, table, figure and report.html."),
    dataset: str = typer.Option("mnist", help=f"One of: {', '.join(LOADERS)}."),
    preset: str | None = typer.Option(None, help=f"Training preset: {' | '.join(available_presets())} or "
                                      "a TOML path (default: mias-quick for MIAS, else quick)."),
    plan: str | None = typer.Option(None, help="How much of each experiment: tiny | quick | paper "
                                    "(default: the preset's name, else quick)."),
    data_dir: str | None = typer.Option(None, help="Dataset folder (MIAS)."),
    device: str = typer.Option("cpu", help="cpu, cuda or cuda:N."),
    settings: list[str] = typer.Option([], "--set", help="section.key=value for every run."),
    folds: int | None = typer.Option(None, help=FOLDS_HELP),
    cv_seed: int = typer.Option(0, help="Seed of the cross-validation's folds."),
    force: bool = typer.Option(False, help="Compute again the stages this folder holds from other "
                               "settings (without it they are refused, naming the difference)."),
) -> None:
    """Everything: train PGSL and the baselines, Table I, the frontier, Table II, the mu sweep,
    Figs. 3-5 (MIAS: and the patient-grouped cross-validation), and one report.html. Cached per
    stage: re-running after a kill resumes."""
    from pgsl.experiments.reproduce import default_preset
    from pgsl.experiments.reproduce import reproduce as run_reproduce

    preset = preset or default_preset(dataset)
    cfg = apply_settings(_overrides(load_preset(preset), dataset, data_dir, None, None), settings)
    report = run_reproduce(cfg, preset, out, plan=plan, device=device, reporter=RichReporter(),
                           folds=_folds(folds, cfg), cv_seed=cv_seed, force=force)
    console.print(f"[green]wrote {report}[/] (tables as CSV/JSON in {out})")


@app.command()
@_user_errors()
def benchmark(
    out: Path = typer.Option(..., help="Folder for the runs, matrix.csv, summary.md, heatmap.png, "
                             "frontier.png."),
    dataset: str = typer.Option("mnist", help=f"One of: {', '.join(LOADERS)}."),
    plan: str = typer.Option("quick", help="tiny | quick (2-core CPU, under an hour) | paper (GPU)."),
    preset: str = typer.Option("quick", help="Training preset the plan starts from."),
    data_dir: str | None = typer.Option(None, help="Dataset folder (MIAS)."),
    device: str = typer.Option("cpu", help="cpu, cuda or cuda:N."),
    seeds: int | None = typer.Option(None, help="Training seeds 0..N-1 (default: the plan's)."),
    defenses: str | None = typer.Option(None, help="Comma-separated registered defences (default: all)."),
    attacks: str | None = typer.Option(None, help="Comma-separated registered attacks (default: all)."),
    settings: list[str] = typer.Option([], "--set", help="section.key=value for every run."),
) -> None:
    """Every registered defence at each of its settings, over seeds, against every registered
    attack: one matrix, a summary with a privacy-utility score per defence, a heatmap and a
    frontier. Cached per run and per attack: re-running after a kill resumes."""
    import dataclasses

    from pgsl.experiments.benchmark import PLANS
    from pgsl.experiments.benchmark import benchmark as run_benchmark

    if plan not in PLANS:
        raise ValueError(f"unknown plan {plan!r}; choose from {', '.join(PLANS)}")
    spec = PLANS[plan]
    if seeds is not None:
        if seeds < 1:
            raise ValueError(f"--seeds must be >= 1, got {seeds}")
        spec = dataclasses.replace(spec, seeds=tuple(range(seeds)))
    if defenses:
        spec = dataclasses.replace(spec, defenses=tuple(d.strip() for d in defenses.split(",")))
    if attacks:
        spec = dataclasses.replace(spec, attacks=tuple(a.strip() for a in attacks.split(",")))
    cfg = apply_settings(_overrides(load_preset(preset), dataset, data_dir, None, None), settings)
    summary = run_benchmark(cfg, out, spec, device=device, reporter=RichReporter())
    table = Table(title=f"benchmark ({plan} plan): mean ± std over seeds")
    for column in ("defence", "setting", "accuracy %", "strongest attack", "MSE", "SSIM", "epsilon"):
        table.add_column(column)
    for r in summary:
        table.add_row(r.defense, r.setting, f"{100 * r.accuracy:.1f} ± {100 * r.accuracy_std:.1f}",
                      r.strongest, f"{r.mse:.4f} ± {r.mse_std:.4f}", f"{r.ssim:.3f} ± {r.ssim_std:.3f}",
                      "" if r.epsilon is None else f"{r.epsilon:.3g}")
    console.print(table)
    console.print(f"[green]wrote {out / 'summary.md'}[/] (matrix.csv, heatmap.png, frontier.png beside it)")


@app.command()
@_user_errors()
def baselines(
    out: Path = typer.Option(..., help="Folder for the runs and cv.json/.md (baselines.* without CV)."),
    dataset: str = typer.Option("mnist", help=f"One of: {', '.join(LOADERS)}."),
    preset: str | None = typer.Option(None, help="Training preset (default: mias-quick for MIAS, else "
                                      "quick)."),
    data_dir: str | None = typer.Option(None, help="Dataset folder (MIAS)."),
    device: str = typer.Option("cpu"),
    settings: list[str] = typer.Option([], "--set", help="section.key=value for every model."),
    folds: int | None = typer.Option(None, help=FOLDS_HELP),
    cv_seed: int = typer.Option(0, help="Seed of the cross-validation's folds."),
    models: str = typer.Option("pgsl,none,plain,majority", help="Cross-validation: comma-separated "
                               "defences (split runs), plain (the CNN in one place) and majority."),
) -> None:
    """PGSL, the vanilla split, the plain CNN and the majority class with the same protocol and
    budget on the same split (MIAS: the same patient-grouped folds), each with accuracy, balanced
    accuracy, macro-F1, AUC and recall per class. Cached: re-running resumes."""
    from pgsl.experiments.baselines import baselines as run_baselines
    from pgsl.experiments.reproduce import default_preset

    cfg = apply_settings(_overrides(load_preset(preset or default_preset(dataset)), dataset, data_dir,
                                    None, None), settings)
    k = _folds(folds, cfg)
    if k:
        from pgsl.experiments.cv import cross_validate

        names = [m.strip() for m in models.split(",") if m.strip()]
        report = cross_validate(cfg, out, models=names, folds=k, cv_seed=cv_seed, device=device,
                                reporter=RichReporter())
        console.print(_cv_table(report))
        console.print(f"[green]wrote {out / 'cv.json'} and cv.md[/]")
        return
    rows = run_baselines(cfg, out, device=device, reporter=RichReporter())
    table = Table(title=f"{rows[0].dataset}: same protocol and budget (n={rows[0].n_test})")
    for column in ("model", "accuracy", "balanced acc.", "macro-F1", "AUC (ovr)"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for r in rows:
        table.add_row(r.model, f"{r.accuracy:.4f}", f"{r.balanced_accuracy:.4f}",
                      "-" if r.macro_f1 is None else f"{r.macro_f1:.4f}",
                      "-" if r.auc_ovr is None else f"{r.auc_ovr:.4f}")
    console.print(table)
    console.print(f"[green]wrote {out / 'baselines.md'}[/]")


@app.command()
@_user_errors()
def evaluate(
    run_dir: Path = typer.Argument(..., help="A folder written by `pgsl train`."),
    device: str = typer.Option("cpu"),
    limit_test: int | None = typer.Option(None, help="First N test images."),
) -> None:
    """Re-evaluate a saved run on its test split (writes evaluation.json)."""
    from pgsl.runtime import evaluate_run

    result = evaluate_run(run_dir, device=device, limit_test=limit_test,
                          reporter=RichReporter())
    console.print(_accuracy_table(f"test accuracy, epoch {result['epochs']}",
                                  result["test_accuracy"], result["n_test"]))


@app.command()
@_user_errors()
def certs(
    out: Path = typer.Option(..., help="Folder for ca.pem, server.pem/key and <site>.pem/key."),
    sites: str = typer.Option(..., help="Comma-separated site names, e.g. hospital-a,hospital-b."),
    hosts: str = typer.Option("localhost,127.0.0.1", help="Names/IPs the server certificate is valid for."),
) -> None:
    """Create a CA, a server certificate and one client certificate per site (mutual TLS)."""
    from pgsl.transport.tls import make_certs

    files = make_certs(out, [s.strip() for s in sites.split(",") if s.strip()],
                       [h.strip() for h in hosts.split(",") if h.strip()])
    console.print(f"wrote {len(files)} files to {out}; keep ca.key offline, give each site its "
                  "<site>.pem, <site>.key and ca.pem")


@app.command()
@_user_errors()
def server(
    listen: str = typer.Option("127.0.0.1:50051", help="HOST:PORT (port 0 picks a free one)."),
    tls: Path | None = typer.Option(None, help="Folder from `pgsl certs` (mutual TLS)."),
    insecure: bool = typer.Option(False, "--insecure", help="No TLS (benchmarks, trusted networks)."),
    config: str = typer.Option("quick", help="Preset name or TOML path (model, recovery, train)."),
    out: Path = typer.Option(..., help="Folder for the server checkpoint."),
    sites: str | None = typer.Option(None, help="Allowed sites (default: every <site>.pem in --tls)."),
    classes: int = typer.Option(10, help="Number of classes the streams predict."),
    device: str = typer.Option("cpu"),
    checkpoint_every: int = typer.Option(200, help="Training steps between checkpoints."),
    max_message_mb: float = typer.Option(64.0, help="Largest request accepted, in MiB."),
) -> None:
    """Run the computation server: every site trains against one shared server model."""
    import signal
    import threading

    import torch

    from pgsl.runtime import resolve_device
    from pgsl.server.party import ServerParty
    from pgsl.transport.server import SplitLearningService, serve

    if (tls is None) == (not insecure):
        raise ValueError("give --tls DIR for mutual TLS, or --insecure to run without it")
    cfg = load_preset(config)
    allowed = {s.strip() for s in sites.split(",")} if sites else None
    if allowed is None and tls is not None:
        allowed = {p.stem for p in tls.glob("*.pem")} - {"ca", "server"}
    torch.manual_seed(cfg.train.seed)
    party = ServerParty(cfg, classes, resolve_device(device))
    out.mkdir(parents=True, exist_ok=True)
    service = SplitLearningService(party, sites=allowed, secure=tls is not None,
                                   checkpoint=out / "server.pt",
                                   checkpoint_every=checkpoint_every)
    grpc_server, port = serve(service, listen, tls_dir=tls,
                              max_message=int(max_message_mb * (1 << 20)))
    host = listen.rsplit(":", 1)[0]
    console.print(f"listening on {host}:{port} ({'mutual TLS' if tls else 'insecure'}), "
                  f"sites: {', '.join(sorted(allowed)) if allowed else 'any'}", soft_wrap=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    grpc_server.stop(grace=2).wait()
    service.save()
    console.print(f"stopped; state saved to {out / 'server.pt'}")


@app.command()
@_user_errors(_transport, _hijack)
def client(
    server_address: str = typer.Option(..., "--server", help="HOST:PORT of `pgsl server`."),
    site: str = typer.Option(..., help="This site's name (its certificate's common name)."),
    out: Path = typer.Option(..., help="Run folder of this site."),
    tls: Path | None = typer.Option(None, help="Folder with ca.pem, <site>.pem, <site>.key."),
    insecure: bool = typer.Option(False, "--insecure"),
    dataset: str = typer.Option("mnist"),
    data_dir: str | None = typer.Option(None),
    preset: str = typer.Option("quick"),
    epochs: int | None = typer.Option(None),
    limit_train: int | None = typer.Option(None),
    limit_test: int | None = typer.Option(None),
    wire_dtype: str = typer.Option("float32", help="float32, float16 or bfloat16 on the wire."),
    retries: int = typer.Option(5, help="Reconnection attempts when the server is unavailable."),
    device: str = typer.Option("cpu"),
    seed: int | None = typer.Option(None),
    resume: bool = typer.Option(False, "--resume"),
    guard: bool = typer.Option(False, "--guard", help="SplitGuard: stop when the server's gradients "
                               "do not depend on the labels sent (a hijacking server)."),
) -> None:
    """Train this site's client segment against a remote server (its data never leaves)."""
    from pgsl.runtime import train_run
    from pgsl.transport.client import GrpcChannel
    from pgsl.transport.wire import wire_dtype as wire_dtypes

    if (tls is None) == (not insecure):
        raise ValueError("give --tls DIR for mutual TLS, or --insecure to run without it")
    dtype = wire_dtypes(wire_dtype, "--wire-dtype")
    cfg = _overrides(load_preset(preset), dataset, data_dir, limit_train, limit_test)
    if seed is not None:
        cfg = cfg.replace(train={"seed": seed})
    if guard:
        cfg = cfg.replace(guard={"splitguard": True})
    with GrpcChannel(server_address, site=site, tls_dir=tls, wire_dtype=dtype,
                     retries=retries) as channel:
        metrics = train_run(cfg, out, resume=resume, device=device, reporter=RichReporter(),
                            epochs=epochs, channel=channel)
        sent = channel.bytes_sent
    samples = metrics["n_train"] * (metrics["epochs"]) + metrics["n_test"]
    console.print(_metrics_table(f"site {site}: test set", metrics))
    console.print(f"bytes sent per sample ({wire_dtype}): {sent / max(samples, 1):.0f}")


@app.command()
@_user_errors()
def predict(
    run_dir: Path = typer.Argument(..., help="A trained run folder (`pgsl train`), or a site's "
                                   "(`pgsl client`) with --server."),
    images: Path = typer.Option(..., help="An image file or a folder of PNG/PGM/JPEG/TIFF/DICOM files."),
    out: Path = typer.Option(..., help="CSV: per image, each stream's and the decision's scores and "
                             "the predicted class."),
    server_address: str | None = typer.Option(None, "--server", help="HOST:PORT of a running "
                                              "`pgsl server` (the site's client classifies through it)."),
    site: str | None = typer.Option(None, help="This site's name, with --server."),
    tls: Path | None = typer.Option(None, help="Folder with ca.pem, <site>.pem, <site>.key."),
    insecure: bool = typer.Option(False, "--insecure"),
    batch_size: int = typer.Option(64),
    device: str = typer.Option("cpu"),
    model: str | None = typer.Option(None, help="With a cross-validation folder: which split model "
                                     "(default: its first, e.g. pgsl)."),
) -> None:
    """Classify new images through a trained split model: the run's own protocol (a patch model scans
    films and answers with the most abnormal patch), client pipeline and server model. Given a
    cross-validation folder (MIAS, --folds), each film is scored by the fold model that never trained
    on it. Unusable images get a row with the reason; the rest are classified."""
    from pgsl.experiments.predict import Predictor, find_images, predict_cv, predict_images
    from pgsl.runtime import resolve_device

    if batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {batch_size}")
    dev = resolve_device(device)
    files = find_images(images)
    if (run_dir / "cv.json").is_file():
        if server_address is not None:
            raise ValueError("a cross-validation folder classifies in this process: leave out --server")
        summary = predict_cv(run_dir, files, out, model=model, device=dev, batch_size=batch_size)
        auc = summary.get("auc_normal_vs_abnormal")
        console.print(f"classified {summary['films']} film(s) with {summary['model']}'s fold models; "
                      + (f"per-film AUC normal vs abnormal {auc:.3f}; " if auc is not None else "")
                      + f"wrote {out}")
        rules, lesions = summary.get("film_rule_auc"), summary.get("lesions")
        if rules:
            console.print("per-film AUC by film rule: "
                          + ", ".join(f"{k} {v:.3f}" for k, v in rules.items()))
        if lesions and lesions["covered_by_a_window"]:
            console.print(f"top patch on the lesion: {lesions['top_patch_on_lesion']} of "
                          f"{lesions['with_coordinates']} lesions; the lesion's window at the "
                          f"{100 * lesions['lesion_window_percentile_median']:.0f}th percentile of "
                          "its film (median)")
        return
    if model is not None:
        raise ValueError("--model picks a model of a cross-validation folder (one with cv.json)")
    if server_address is None:
        if site is not None or tls is not None or insecure:
            raise ValueError("--site, --tls and --insecure go with --server")
        rows = predict_images(Predictor.in_process(run_dir, dev), files, out, batch_size)
    else:
        from pgsl.transport.client import GrpcChannel, TransportError

        if site is None or (tls is None) == (not insecure):
            raise ValueError("with --server give --site, and --tls DIR (mutual TLS) or --insecure")
        try:
            with GrpcChannel(server_address, site=site, tls_dir=tls) as channel:
                rows = predict_images(Predictor.remote(run_dir, channel, dev), files, out, batch_size)
        except TransportError as e:
            raise ValueError(str(e)) from e
    failed = [r for r in rows if r["error"]]
    console.print(f"classified {len(rows) - len(failed)} of {len(rows)} image(s); wrote {out}")
    for r in failed:
        err_console.print(f"[yellow]skipped[/] {r['error']}")


@app.command()
def defenses() -> None:
    """List the registered defences and their options."""
    import dataclasses

    from pgsl.defenses import DEFENSES

    table = Table(title="defences (pgsl train --defense NAME --defense-option KEY=VALUE)")
    for col in ("name", "what it does", "options (default)"):
        table.add_column(col)
    for name, cls in DEFENSES.items():
        options = ", ".join(f"{f.name}={f.default}" for f in dataclasses.fields(cls.Params))
        table.add_row(name, cls.summary, options or "-")
    console.print(table)


@app.command()
def presets() -> None:
    """List the presets and where they live."""
    from pgsl.config import PRESET_DIR

    for name in available_presets():
        console.print(f"{name}: {PRESET_DIR / (name + '.toml')}")


flare_app = typer.Typer(no_args_is_help=True, help="PGSL as an NVIDIA FLARE job (pip install "
                        "'pgsl[flare]'): export it for a provisioned project, or run it locally.")
app.add_typer(flare_app, name="flare")


def _flare_config(preset: str, dataset: str, data_dir: str | None, limit_train: int | None,
                  limit_test: int | None, epochs: int | None, seed: int | None, defense: str,
                  defense_options: list[str]) -> Config:
    cfg = _overrides(load_preset(preset), dataset, data_dir, limit_train, limit_test)
    return cfg.replace(
        train={k: v for k, v in (("epochs", epochs), ("seed", seed)) if v is not None},
        defense={"kind": defense, "params": _options(defense_options, "--defense-option")},
    )


def _flare_classes(cfg: Config, classes: int | None) -> int:
    """``classes``, or the class count of the configured dataset read here."""
    if classes is not None:
        if classes < 2:
            raise ValueError(f"--classes must be >= 2, got {classes}")
        return classes
    import dataclasses

    from pgsl.data import load_dataset

    return len(load_dataset(dataclasses.replace(cfg.data, limit_train=1, limit_test=1)).classes)


def _flare_job_module() -> Any:
    require("nvflare")
    from pgsl.flare import job

    return job


def _flare_report(summary: dict[str, Any], wire_dtype: str) -> None:
    table = Table(title=f"FLARE job: {summary.get('train_steps', 0)} server training steps")
    for col in ("site", "epochs", "test acc", "balanced acc", "samples/s",
                f"bytes/sample ({wire_dtype})", "resumed"):
        table.add_column(col, justify="left" if col == "site" else "right")
    for name, r in sorted(summary["sites"].items()):
        table.add_row(name, str(r["epochs"]), f"{r['test_accuracy']:.4f}",
                      f"{r['test_balanced_accuracy']:.4f}", f"{r['samples_per_second']:.0f}",
                      f"{r['bytes_per_sample']:.0f}", "yes" if r["resumed"] else "no")
    console.print(table)
    for name, error in sorted(summary["failed"].items()):
        err_console.print(f"[bold red]site {name} failed:[/] {error}")
    if summary["failed"]:
        raise typer.Exit(code=1)


_SITES_HELP = "Number of sites (site-1 ... site-N)."


@flare_app.command("job")
@_user_errors()
def flare_job(
    sites: str = typer.Option(..., help="Site names, comma-separated: the names in the sites' "
                              "certificates (nvflare provision)."),
    out: Path = typer.Option(..., help="Folder for the job and its project.yml."),
    server_name: str = typer.Option(..., help="The server's fully qualified domain name (project.yml)."),
    preset: str = typer.Option("quick"),
    dataset: str = typer.Option("mnist"),
    data_dir: str | None = typer.Option(None, help="The data folder on every site's machine."),
    site_data: list[str] = typer.Option([], "--site-data", help="SITE=PATH: a site's own data "
                                        "folder (repeatable)."),
    limit_train: int | None = typer.Option(None),
    limit_test: int | None = typer.Option(None),
    epochs: int | None = typer.Option(None),
    seed: int | None = typer.Option(None),
    defense: str = typer.Option("pgsl"),
    defense_options: list[str] = typer.Option([], "--defense-option"),
    classes: int | None = typer.Option(None, help="Classes (default: read from the dataset here)."),
    server_out: str = typer.Option("pgsl-server", help="Server's folder on its machine."),
    site_out: str = typer.Option("pgsl-sites", help="Sites' run folders on their machines."),
    wire_dtype: str = typer.Option("float32"),
    device: str = typer.Option("cpu"),
    checkpoint_every: int = typer.Option(200),
) -> None:
    """Write the PGSL job for a provisioned FLARE project (`nvflare job submit`), and a
    project.yml for `nvflare provision` (mutual TLS, one certificate per site)."""
    names = [s.strip() for s in sites.split(",")]
    data = {k: str(v) for k, v in _options(site_data, "--site-data").items()}
    cfg = _flare_config(preset, dataset, data_dir, limit_train, limit_test, epochs, seed, defense,
                        defense_options)
    job = _flare_job_module()
    recipe = job.make_recipe(cfg, sites=names, classes=_flare_classes(cfg, classes),
                             server_out=server_out, site_out=site_out, site_data=data,
                             wire_dtype=wire_dtype, device=device,
                             checkpoint_every=checkpoint_every)
    folder = job.export_job(recipe, out, names, server=server_name)
    console.print(f"wrote the job {folder} and {out / 'project.yml'}; next: nvflare provision -p "
                  f"{out / 'project.yml'}, start the parties, then nvflare job submit -j {folder}")


@_user_errors(_flare_failures)
def _flare_run(mode: str, sites: int, out: Path, preset: str, dataset: str, data_dir: str | None,
               limit_train: int | None, limit_test: int | None, epochs: int | None,
               seed: int | None, defense: str, defense_options: list[str], wire_dtype: str,
               device: str) -> None:
    if not 1 <= sites <= 64:
        raise ValueError(f"--sites must lie in 1..64, got {sites}")
    names = [f"site-{i + 1}" for i in range(sites)]
    cfg = _flare_config(preset, dataset, data_dir, limit_train, limit_test, epochs, seed, defense,
                        defense_options)
    job = _flare_job_module()
    out = out.resolve()
    recipe = job.make_recipe(cfg, sites=names, classes=_flare_classes(cfg, None),
                             server_out=str(out / "server"), site_out=str(out / "sites"),
                             wire_dtype=wire_dtype, device=device)
    console.print(f"FLARE {mode}: {sites} site(s), workspace {out / 'flare'}")
    run = job.simulate if mode == "simulator" else job.poc
    summary = run(recipe, names, server_out=out / "server", workspace=out / "flare")
    _flare_report(summary, wire_dtype)
    console.print(f"server: {out / 'server'} (server.pt, server.log); sites: {out / 'sites'}/<site>")


def _flare_local(mode: str) -> Callable[..., None]:
    """The command running the job in FLARE's ``mode`` on this machine (simulator or POC)."""

    def command(
        sites: int = typer.Option(2, help=_SITES_HELP),
        out: Path = typer.Option(..., help="Folder: server/, sites/<site>/, flare/ (FLARE's "
                                 "workspace); run again with the same --out to resume."),
        preset: str = typer.Option("quick"),
        dataset: str = typer.Option("mnist"),
        data_dir: str | None = typer.Option(None),
        limit_train: int | None = typer.Option(None),
        limit_test: int | None = typer.Option(None),
        epochs: int | None = typer.Option(None),
        seed: int | None = typer.Option(None),
        defense: str = typer.Option("pgsl"),
        defense_options: list[str] = typer.Option([], "--defense-option"),
        wire_dtype: str = typer.Option("float32"),
        device: str = typer.Option("cpu"),
    ) -> None:
        _flare_run(mode, sites, out, preset, dataset, data_dir, limit_train, limit_test, epochs,
                   seed, defense, defense_options, wire_dtype, device)

    return command


flare_app.command("simulate", help="Run the job in FLARE's simulator on this machine.")(
    _flare_local("simulator"))
flare_app.command("poc", help="Run the job in FLARE's proof-of-concept mode: a provisioned project "
                  "(mutual TLS) with the server, each site and an admin as separate processes on "
                  "loopback.")(_flare_local("proof of concept"))


if __name__ == "__main__":  # pragma: no cover
    app()
