"""Train PGSL end to end and keep the run on disk (``config.json``, ``checkpoint.pt``, ``metrics.json``).

The driver reads like the protocol: load data, build the client and the server with a channel between
them, train the client's surrogate, then epochs of split training, each followed by a test evaluation
and an atomic checkpoint. ``resume=True`` continues from the last checkpoint with the saved config.
"""

from __future__ import annotations

import dataclasses
import logging
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch

from pgsl import __version__
from pgsl.checkpoint import load_checkpoint, save_checkpoint, write_json
from pgsl.client.party import ClientParty
from pgsl.client.splitguard import GuardedClient, SplitGuard
from pgsl.config import Config, load_config, save_config
from pgsl.data import Dataset, load_dataset
from pgsl.metrics import classification_metrics, majority_baseline
from pgsl.split.channel import Channel, InProcessChannel
from pgsl.split.trainer import EpochStats, Learner, accuracies, collect_scores, evaluate, train_epoch

if TYPE_CHECKING:
    from pgsl.server.party import ServerParty

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
CONFIG = "config.json"
METRICS = "metrics.json"
FORMAT = 2  # 2: the client's defence state under "defense"; streams keyed by the model's names


class Reporter(Protocol):
    """How a run tells its caller what it does (the CLI draws progress bars; the library logs)."""

    def task(self, description: str, total: int) -> Callable[[int], None]: ...

    def done(self) -> None: ...

    def epoch(self, epoch: int, stats: EpochStats, test: dict[str, float] | None) -> None: ...


class LogReporter:
    def task(self, description: str, total: int) -> Callable[[int], None]:
        log.info("%s (%d)", description, total)
        return lambda n: None

    def done(self) -> None:
        pass

    def epoch(self, epoch: int, stats: EpochStats, test: dict[str, float] | None) -> None:
        log.info("epoch %d train %s test %s", epoch, stats.accuracy, test)


def resolve_device(name: str) -> torch.device:
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for, but PyTorch sees no CUDA GPU here")
    return device


class Run:
    """A run folder with its parties: built fresh from a config or restored from its checkpoint.

    Without a ``channel`` the server party lives in this process; with one (``pgsl client``) the
    server is remote and its code is never imported here.
    """

    def __init__(self, cfg: Config, dataset: Dataset, device: torch.device,
                 channel: Channel | None = None) -> None:
        self.cfg, self.dataset, self.device = cfg, dataset, device
        k = len(dataset.classes)
        self.client = ClientParty(cfg, dataset.channels, k, device)
        self.server: ServerParty | None = None
        if channel is None:
            from pgsl.server.party import ServerParty

            self.server = ServerParty(cfg, k, device)
            channel = InProcessChannel(self.server)
        self.channel: Channel = channel
        # the client's hijack detector, when the config turns it on; training steps go through it
        self.guard = SplitGuard(cfg.guard, seed=cfg.train.seed) if cfg.guard.splitguard else None
        self.learner: Learner = self.client if self.guard is None else GuardedClient(self.client, self.guard)

    def join(self) -> None:
        """For a remote server: check the model fits and continue after the site's last step."""
        join = getattr(self.channel, "join", None)
        if join is None:
            return
        welcome = join(self.cfg.model.width)
        if welcome.num_classes != len(self.dataset.classes):
            raise ValueError(f"the server trains {welcome.num_classes} classes, this site's "
                             f"dataset has {len(self.dataset.classes)}")
        self.client.step = max(self.client.step, int(welcome.last_step))

    def state(self, epoch: int, history: list[dict[str, Any]], train_seconds: float) -> dict:
        rng = {"cpu": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return {
            "format": FORMAT,
            "epoch": epoch,
            "client": self.client.state_dict(),
            "server": self.server.state_dict() if self.server else {},
            "guard": self.guard.state_dict() if self.guard else None,
            "history": history,
            "train_seconds": train_seconds,
            "rng": rng,
        }

    def restore(self, state: dict) -> None:
        if state.get("format") != FORMAT:
            raise ValueError(f"checkpoint format {state.get('format')} is not {FORMAT}")
        self.client.load_state_dict(state["client"])
        if self.server is not None:
            if not state["server"]:
                raise ValueError("this checkpoint holds no server state (it was written by a site)")
            self.server.load_state_dict(state["server"])
        if self.guard is not None and state.get("guard") is not None:
            self.guard.load_state_dict(state["guard"])
        # RNG states must be CPU byte tensors, whatever map_location moved them to
        torch.set_rng_state(state["rng"]["cpu"].cpu())
        if self.device.type == "cuda" and "cuda" in state["rng"]:
            torch.cuda.set_rng_state(state["rng"]["cuda"].cpu(), self.device)


def train_run(
    cfg: Config,
    out: Path,
    *,
    resume: bool = False,
    device: str = "cpu",
    reporter: Reporter | None = None,
    epochs: int | None = None,
    channel: Channel | None = None,
) -> dict[str, Any]:
    """Train (or resume) a PGSL run in ``out``; returns what it writes to ``metrics.json``.

    ``channel``: a remote server (``pgsl client``); None trains against an in-process server.
    """
    reporter = reporter or LogReporter()
    dev = resolve_device(device)
    ckpt_path = out / CHECKPOINT
    state: dict | None = None
    if resume:
        if not (out / CONFIG).is_file() or not ckpt_path.is_file():
            raise FileNotFoundError(f"nothing to resume in {out}: no {CONFIG} and {CHECKPOINT}")
        cfg = load_config(out / CONFIG)
        state = load_checkpoint(ckpt_path, dev)
    elif ckpt_path.exists():
        raise FileExistsError(
            f"{out} already holds a run; continue it with --resume or choose another --out"
        )
    if epochs is not None:
        cfg = cfg.replace(train={"epochs": epochs})
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / CONFIG)

    t_start = time.perf_counter()
    torch.manual_seed(cfg.train.seed)
    dataset = load_dataset(cfg.data, seed=cfg.train.seed)
    log.info(dataset.describe())
    prepare_seconds = time.perf_counter() - t_start
    run = Run(cfg, dataset, dev, channel)
    t = cfg.train

    if state is not None:
        run.restore(state)
        start_epoch, history = int(state["epoch"]), list(state["history"])
        train_seconds = float(state["train_seconds"])
    else:
        t0 = time.perf_counter()
        defense = run.client.defense
        # PGSL: the client's surrogate; ResSFL: its simulated attacker
        if work := defense.preparation(len(dataset.train)):
            tick = reporter.task(f"{cfg.defense.kind}: client preparation", work)
            defense.prepare(dataset.train, send=run.client.rehearse, batch_size=t.batch_size,
                            seed=t.seed, device=dev, progress=tick)
            reporter.done()
        start_epoch, history = 0, []
        train_seconds = time.perf_counter() - t0
        save_checkpoint(ckpt_path, run.state(0, history, train_seconds))
    run.join()

    eval_seconds = 0.0
    test: dict[str, float] | None = None
    detailed: dict[str, dict[str, Any]] = {}
    for epoch in range(start_epoch + 1, t.epochs + 1):
        t0 = time.perf_counter()
        tick = reporter.task(f"epoch {epoch}/{t.epochs}", len(dataset.train))
        stats = train_epoch(
            run.learner, run.channel, dataset.train, batch_size=t.batch_size,
            shuffle_seed=t.seed * 1000 + epoch, progress=tick, augment=t.augment, balanced=t.balanced,
        )
        reporter.done()
        train_seconds += time.perf_counter() - t0
        test = None
        if epoch == t.epochs or (t.eval_every > 0 and epoch % t.eval_every == 0):
            t0 = time.perf_counter()
            tick = reporter.task(f"test {epoch}/{t.epochs}", len(dataset.test))
            scores, labels = collect_scores(run.client, run.channel, dataset.test,
                                            batch_size=t.eval_batch_size, progress=tick)
            test = accuracies(scores, labels)
            detailed = {k: classification_metrics(v, labels, dataset.classes) for k, v in scores.items()}
            reporter.done()
            eval_seconds += time.perf_counter() - t0
        history.append({"epoch": epoch, "train_loss": stats.loss,
                        "train_accuracy": stats.accuracy, "test_accuracy": test,
                        "test_balanced_accuracy": None if test is None else
                        {k: m["balanced_accuracy"] for k, m in detailed.items()},
                        "samples_per_second": round(stats.samples / max(stats.seconds, 1e-9), 1)})
        save_checkpoint(ckpt_path, run.state(epoch, history, train_seconds))
        reporter.epoch(epoch, stats, test)

    if not history or history[-1]["test_accuracy"] is None:
        raise ValueError("the run has no evaluated epoch: set train.epochs >= 1")
    if not detailed or test is None:  # resumed after the last epoch: evaluate again
        scores, labels = collect_scores(run.client, run.channel, dataset.test, batch_size=t.eval_batch_size)
        detailed = {k: classification_metrics(v, labels, dataset.classes) for k, v in scores.items()}
    metrics = {
        "test_accuracy": history[-1]["test_accuracy"],
        # balanced accuracy, recall per class, macro-F1, AUC, confusion, per stream and decision
        "test_metrics": detailed,
        "majority_baseline": majority_baseline(dataset.train.labels, dataset.test.labels, dataset.classes),
        "epochs": history[-1]["epoch"],
        "train_seconds": round(train_seconds, 2),
        "eval_seconds": round(eval_seconds, 2),
        "prepare_seconds": round(prepare_seconds, 2),
        "n_train": len(dataset.train),
        "n_test": len(dataset.test),
        "dataset": dataset.name,
        "classes": list(dataset.classes),  # what `pgsl predict` answers, and the images it takes
        "image_shape": list(dataset.image_shape),
        "history": history,
        "environment": environment(dev),
    }
    guarantee = run.client.defense.guarantee(releases=int(history[-1]["epoch"]),
                                             n_train=len(dataset.train), batch_size=t.batch_size)
    if guarantee is not None:
        metrics["privacy"] = guarantee
    write_json(out / METRICS, metrics)
    return metrics


def environment(device: torch.device) -> dict[str, str]:
    env = {
        "pgsl": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(device),
        "platform": platform.platform(),
        "threads": str(torch.get_num_threads()),
    }
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


def load_run(run_dir: Path, device: torch.device, *, full_test: bool = False) -> Run:
    """A trained run restored from its folder, server in eval mode. Its training split is the one
    it trained on; ``full_test`` loads the whole official test split instead of the run's limit."""
    if not (run_dir / CONFIG).is_file() or not (run_dir / CHECKPOINT).is_file():
        raise FileNotFoundError(f"{run_dir} is not a trained run (no {CONFIG} / {CHECKPOINT})")
    cfg = load_config(run_dir / CONFIG)
    dataset = load_dataset(cfg.data, seed=cfg.train.seed)
    if full_test:
        full = load_dataset(dataclasses.replace(cfg.data, limit_train=1, limit_test=None))
        dataset = Dataset(full.name, full.classes, dataset.train, full.test)
    run = Run(cfg, dataset, device)
    run.restore(load_checkpoint(run_dir / CHECKPOINT, device))
    if run.server is not None:
        run.server.model.eval()
    return run


def evaluate_run(
    run_dir: Path, *, device: str = "cpu", limit_test: int | None = None,
    reporter: Reporter | None = None,
) -> dict[str, Any]:
    """Re-evaluate a saved run on its test split; writes ``evaluation.json`` beside it."""
    reporter = reporter or LogReporter()
    dev = resolve_device(device)
    if not (run_dir / CONFIG).is_file():
        raise FileNotFoundError(f"{run_dir} is not a pgsl run folder (no {CONFIG})")
    cfg = load_config(run_dir / CONFIG)
    if limit_test is not None:
        cfg = cfg.replace(data={"limit_test": limit_test})
    state = load_checkpoint(run_dir / CHECKPOINT, dev)
    dataset = load_dataset(cfg.data, seed=cfg.train.seed)
    run = Run(cfg, dataset, dev)
    run.restore(state)
    t0 = time.perf_counter()
    tick = reporter.task("test", len(dataset.test))
    acc = evaluate(run.client, run.channel, dataset.test, batch_size=cfg.train.eval_batch_size,
                   progress=tick)
    reporter.done()
    result = {
        "test_accuracy": acc,
        "epochs": int(state["epoch"]),
        "n_test": len(dataset.test),
        "eval_seconds": round(time.perf_counter() - t0, 2),
        "environment": environment(dev),
    }
    write_json(run_dir / "evaluation.json", result)
    return result
