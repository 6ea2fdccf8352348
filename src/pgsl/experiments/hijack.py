"""A malicious server against each defence's client, with the client's detector watching.

For every trained run (it gives the client's configuration, data and prepared defence state, e.g.
PGSL's trained surrogate) and every seed, two trainings of a fresh client segment start from the
same seeded weights and see the same batches of the run's training data:

1. **hijacked**: the server is FSHA (:mod:`pgsl.attacks.fsha`), given the auxiliary images; every
   ``every`` steps its decoder inverts what the client would send for the victims, scored against
   the clean victims (a curve of MSE / SSIM over steps). SplitGuard (:mod:`pgsl.client.splitguard`)
   watches without stopping, so the attack's progress past the alarm is measured too;
2. **honest**: a fresh honest server of the run's defence, SplitGuard watching the same way: any
   flag here is a false alarm.

Victims: a seeded sample of the run's training images; auxiliary data: the first half of the
official test set (as Table I). Both parties talk through a :class:`~pgsl.split.channel.Channel`;
the experiment uses the in-process one, the gRPC service hosts FSHA unchanged.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from pgsl.attacks.fsha import FSHA, FSHAParams
from pgsl.attacks.view import reconstruction_scores
from pgsl.checkpoint import write_text
from pgsl.client.party import ClientParty
from pgsl.client.splitguard import GuardedClient, SplitGuard, SplitGuardParams
from pgsl.data import batches, to_float
from pgsl.experiments.cache import as_key, cached, runs_key
from pgsl.experiments.results import HijackRow, write_rows
from pgsl.runtime import Run, load_run, resolve_device
from pgsl.split.channel import Channel, InProcessChannel

log = logging.getLogger(__name__)

__all__ = ["HijackConfig", "hijack", "hijack_run"]


@dataclasses.dataclass(frozen=True)
class HijackConfig:
    """``steps``: client training steps per training; ``every``: steps between curve points;
    ``seeds``: how many seeds (0 .. seeds-1); ``honest``: also train honestly (false alarms)."""

    steps: int = 500
    every: int = 50
    victims: int = 64
    aux: int | None = None
    seeds: int = 1
    honest: bool = True
    fsha: FSHAParams = FSHAParams()
    guard: SplitGuardParams = SplitGuardParams()

    def __post_init__(self) -> None:
        if self.steps < 1 or self.every < 1 or self.victims < 1 or self.seeds < 1:
            raise ValueError(f"steps, every, victims and seeds must be >= 1, got {self}")


def _fresh_client(run: Run, seed: int) -> ClientParty:
    """A client of the run's configuration with freshly initialised (seeded) segment weights and
    the run's prepared defence state (PGSL's surrogate)."""
    with torch.random.fork_rng(devices=[run.device] if run.device.type == "cuda" else []):
        torch.manual_seed(seed)
        client = ClientParty(run.cfg, run.dataset.channels, len(run.dataset.classes), run.device)
    client.defense.load_state_dict(run.client.defense.state_dict())
    return client


def _train(run: Run, client: ClientParty, guard: SplitGuard, channel: Channel, steps: int,
           seed: int, every: int = 0, probe: tuple[FSHA, Tensor] | None = None) -> list[dict[str, float]]:
    """``steps`` guarded training steps on the run's training data; with ``probe`` (the server
    and the victims), the decoder's scores every ``every`` steps."""
    learner, curve, step, epoch = GuardedClient(client, guard), [], 0, 0
    while step < steps:
        for x, y in batches(run.dataset.train, run.cfg.train.batch_size, device=run.device,
                            shuffle_seed=seed * 1000 + epoch):
            learner.train_step(x, y, channel)
            step += 1
            if probe is not None and (step % every == 0 or step == steps):
                server, victims = probe
                s = reconstruction_scores(server.reconstruct(client.query(victims)), victims)
                curve.append({"step": step, "mse": round(float(s["mse"].mean()), 6),
                              "ssim": round(float(s["ssim"].mean()), 4)})
            if step == steps:
                break
        epoch += 1
    return curve


def hijack_run(run_dir: Path, hc: HijackConfig, seed: int, device: str = "cpu") -> HijackRow:
    """One seed of the experiment on one trained run (see the module's text)."""
    t0 = time.perf_counter()
    run = load_run(run_dir, resolve_device(device), full_test=True)
    train = run.dataset.train
    g = torch.Generator().manual_seed(seed)
    pick = torch.randperm(len(train), generator=g)[: min(hc.victims, len(train))]
    victims = to_float(train.images[pick], run.device)
    aux = to_float(run.dataset.test.images[: hc.aux or len(run.dataset.test) // 2], run.device)
    width, k = run.cfg.model.width, len(run.dataset.classes)

    client = _fresh_client(run, seed)
    server = FSHA(aux, width=width, num_classes=k, streams=len(client.streams), params=hc.fsha,
                  seed=seed, device=run.device)
    guard = SplitGuard(hc.guard, seed=seed, stop=False)
    curve = _train(run, client, guard, InProcessChannel(server), hc.steps, seed, hc.every,
                   (server, victims))
    final = reconstruction_scores(server.reconstruct(client.query(victims)), victims)

    honest_guard: SplitGuard | None = None
    if hc.honest:
        from pgsl.server.party import ServerParty  # the honest counterpart, this process only

        honest_guard = SplitGuard(hc.guard, seed=seed, stop=False)
        _train(run, _fresh_client(run, seed), honest_guard,
               InProcessChannel(ServerParty(run.cfg, k, run.device)), hc.steps, seed)
    baseline = reconstruction_scores(aux.mean(0, keepdim=True).expand_as(victims), victims)

    def mean_score(guard: SplitGuard | None) -> float | None:
        return round(sum(guard.scores) / len(guard.scores), 4) if guard and guard.scores else None

    row = HijackRow(
        dataset=run.dataset.name, defense=run.cfg.defense.kind, seed=seed, steps=hc.steps,
        n_victims=len(victims), mse_mean=round(float(final["mse"].mean()), 6),
        mse_std=round(float(final["mse"].std()), 6), ssim_mean=round(float(final["ssim"].mean()), 4),
        ssim_std=round(float(final["ssim"].std()), 4),
        mean_image_mse=round(float(baseline["mse"].mean()), 6),
        mean_image_ssim=round(float(baseline["ssim"].mean()), 4),
        detected_at=guard.flagged_at, false_alarm_at=honest_guard.flagged_at if honest_guard else None,
        fsha_score=mean_score(guard), honest_score=mean_score(honest_guard), curve=curve,
        seconds=round(time.perf_counter() - t0, 1), run=str(run_dir))
    log.info("%s seed %d: FSHA mse %.4f ssim %.3f (mean image %.4f); SplitGuard flagged the hijack "
             "at %s, honest training at %s (%.0f s)", row.defense, seed, row.mse_mean, row.ssim_mean,
             row.mean_image_mse, row.detected_at, row.false_alarm_at, row.seconds)
    return row


def protocol(hc: HijackConfig) -> str:
    g = hc.guard
    return (f"FSHA (Pasquini et al. 2021) hijacks a fresh client segment of each run for {hc.steps} "
            f"steps of the run's own training (batch size, optimiser, defence); {hc.victims} victims "
            "sampled from the run's training images are inverted by FSHA's decoder from what the "
            f"client sends for them, every {hc.every} steps. Server: "
            + ", ".join(f"{k} {v}" for k, v in dataclasses.asdict(hc.fsha).items())
            + ". SplitGuard (Erdogan et al. 2022) watches without stopping: fake batches with "
            f"probability {g.p_fake} after {g.warmup} steps; a hijack is flagged when the mean score "
            f"of at least {g.min_fakes} fake batches is below {g.threshold} (expected within about "
            f"{g.expected_steps} steps). False alarms: the same client trained honestly for the same "
            f"steps. Seeds 0..{hc.seeds - 1} (victims, client weights, batches, server, detector).")


def _spread(v: Tensor) -> str:
    return f" ± {float(v.std()):.4f}" if len(v) > 1 else ""


def write_table(rows: list[HijackRow], out: Path, hc: HijackConfig,
                cache_key: dict[str, Any] | None = None) -> None:
    """``hijack.md``, ``hijack.csv`` and ``hijack.json``: per defence, means over seeds."""
    out.mkdir(parents=True, exist_ok=True)
    text = protocol(hc)
    lines = ["# A malicious server (FSHA) and the client's detector (SplitGuard)", "", text, "",
             "| dataset | defence | seeds | FSHA MSE | FSHA SSIM | mean image MSE | detected (seeds) "
             "| median step | false alarms (seeds) |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for key in dict.fromkeys((r.dataset, r.defense) for r in rows):
        group = [r for r in rows if (r.dataset, r.defense) == key]
        mse = torch.tensor([r.mse_mean for r in group])
        ssim = torch.tensor([r.ssim_mean for r in group])
        found = sorted(r.detected_at for r in group if r.detected_at is not None)
        alarms = sum(r.false_alarm_at is not None for r in group)
        honest = "n/a" if not hc.honest else f"{alarms}/{len(group)}"
        lines.append(f"| {key[0]} | {key[1]} | {len(group)} | {float(mse.mean()):.4f}{_spread(mse)} "
                     f"| {float(ssim.mean()):.3f}{_spread(ssim)} | {group[0].mean_image_mse:.4f} "
                     f"| {len(found)}/{len(group)} | {found[len(found) // 2] if found else '-'} | {honest} |")
    write_text(out / "hijack.md", "\n".join(lines) + "\n")
    write_rows(out / "hijack.csv", [dataclasses.replace(r, curve=[]) for r in rows])
    write_rows(out / "hijack.json", rows, protocol=text, config=dataclasses.asdict(hc),
               key=as_key(cache_key))


def hijack(runs: list[Path], out: Path, hc: HijackConfig, device: str = "cpu") -> list[HijackRow]:
    """Every seed on every run; the tables are rewritten after each (a kill keeps what is done). A
    table ``out`` holds, whole, from the same runs and protocol is returned as it is."""
    cache_key = {"runs": runs_key(runs), "hijack": dataclasses.asdict(hc)}
    if (done := cached(out / "hijack.json", cache_key, HijackRow)) is not None:
        return done
    rows: list[HijackRow] = []
    for run_dir in runs:
        for seed in range(hc.seeds):
            rows.append(hijack_run(run_dir, hc, seed, device))
            write_table(rows, out, hc)
    write_table(rows, out, hc, cache_key)  # whole: its key marks it reusable
    return rows
