"""Table I: the adversary's inversion attacks against trained runs (paper §V-C,
docs/design.md#baselines-and-attacks).

The evaluator is the only place that holds the victims' raw images. For each trained run it builds
one :class:`~pgsl.attacks.view.AttackerView` per target -- what crossed the cut, and whatever the
run's server model derives from it (PGSL: the recovered maps) -- hands each view to every attack
that can use it, and scores what comes back against the clean images.

Protocol (written into the table): victims = a seeded sample of the run's training images;
auxiliary data = the first half of the official test set (disjoint from the victims), queried
through the trained client as a black box; observations taken from the trained client at
inference (no gradient), so a noise defence draws fresh noise for every query. White-box attacks
differentiate the view's ``path``: the client's own pipeline (and, for a server observable, the
server's map after it) with gradients straight through its non-differentiable steps (BPDA).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

import pgsl.attacks
from pgsl.attacks import (
    BASELINE,
    Attack,
    AttackerView,
    Need,
    get_attack,
    parse_budget,
    reconstruction_scores,
)
from pgsl.attacks.view import CloneFactory, GradientLeak, PipelineClone
from pgsl.checkpoint import save_checkpoint, write_text
from pgsl.config import published
from pgsl.data import to_float
from pgsl.experiments.cache import as_key, cached, runs_key
from pgsl.experiments.figures import save_grid
from pgsl.experiments.results import PrivacyRow, write_rows
from pgsl.runtime import Run, load_run, resolve_device

log = logging.getLogger(__name__)

__all__ = ["PAPER_MSE", "PrivacyConfig", "attacker_views", "budgets_from_options", "evaluate_privacy",
           "privacy"]


def _paper_mse() -> dict[str, dict[tuple[str, str, str], float]]:
    """Paper Table I by dataset, keyed ``(attack, defence, target)``."""
    out: dict[str, dict[tuple[str, str, str], float]] = {}
    for dataset, table in published()["table1"].items():
        for attack, cells in table.items():
            for where, mse in cells.items():
                defense, _, target = where.partition("/")
                out.setdefault(dataset, {})[(attack, defense, target or "cut")] = float(mse)
    return out


PAPER_MSE = _paper_mse()


@dataclasses.dataclass(frozen=True)
class PrivacyConfig:
    """The Table I protocol. ``victims``: the seeded sample every attack draws from (each attack
    takes the first ``victims`` of its budget); ``budgets``: per attack, knobs of its ``Budget``
    dataclass (e.g. ``{"dlg": {"iterations": 40}}``); ``seeds``: the protocol is repeated with
    seeds ``seed .. seed + seeds - 1`` (the victims' sample and the attacks' initialisation)."""

    victims: int = 500
    aux: int | None = None  # None: the first half of the official test set
    seed: int = 0
    seeds: int = 1
    # every registered attack, in the registry's order (one registered at run time included)
    attacks: tuple[str, ...] = dataclasses.field(default_factory=lambda: tuple(pgsl.attacks.ATTACKS))
    budgets: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.victims < 1 or self.seeds < 1:
            raise ValueError(f"victims and seeds must be >= 1, got {self.victims} and {self.seeds}")
        for name in (*self.attacks, *self.budgets):
            get_attack(name)
        self.build()  # refuse an unknown budget knob now, not after the training stage

    def build(self) -> list[Attack]:
        """One configured instance per attack, in order."""
        out = []
        for name in self.attacks:
            cls = get_attack(name)
            out.append(cls(parse_budget(cls.Budget, self.budgets.get(name, {}), name), seed=self.seed))
        return out


def budgets_from_options(options: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{"dlg.iterations": 40}`` (``--budget dlg.iterations=40``) as ``{"dlg": {"iterations": 40}}``."""
    per_attack: dict[str, dict[str, Any]] = {}
    for key, value in options.items():
        attack, dot, knob = key.partition(".")
        if not dot or not knob:
            raise ValueError(f"--budget needs ATTACK.KNOB=VALUE, got {key!r}")
        per_attack.setdefault(attack, {})[knob] = value
    return per_attack


def _batched(fn: Callable[[Tensor], Tensor], x: Tensor, size: int = 256) -> Tensor:
    return torch.cat([fn(c) for c in x.split(size)])


def gradient_leak(run: Run, x: Tensor, y: Tensor) -> GradientLeak:
    """Each victim's training-step gradients (batch size 1), taken by the evaluator from the real
    pipeline -- the defence's encoding and perturbation included -- in inference mode (BatchNorm
    running statistics, no dropout), with the attacker's white-box model of that step: a batched
    map (each image's logits from that image alone) and the modules holding the parameters, for
    per-sample gradients."""
    assert run.server is not None
    client, model = run.client, run.server.model
    last = model.output_layer()
    params: list[Tensor] = [*client.segment.parameters()]
    params += [p for m in model.client_path_modules() for p in m.parameters() if p is not last.weight]
    params.append(last.weight)
    client.segment.eval()
    grads = []
    for i in range(len(x)):
        xi, yi = x[i:i + 1], y[i:i + 1]
        loss = F.cross_entropy(model.client_path(client.send(client.defense.encode(xi, yi))), yi)
        grads.append([g.detach() for g in torch.autograd.grad(loss, params)])

    def logits(xd: Tensor) -> Tensor:
        a = client.observe(xd)
        if not torch.isfinite(a).all():  # an L-BFGS trial point far outside the image range
            raise FloatingPointError("the dummy images' activations are not finite")
        return model.client_path(a)
    output_bias = next((i for i, p in enumerate(params) if p is last.bias), None)
    return GradientLeak(grads, params, logits, model.num_classes, output_bias,
                        modules=(client.segment, *model.client_path_modules()))


def _through(observe: Callable[[Tensor], Tensor], server_map: Callable[[Tensor], Tensor]
             ) -> Callable[[Tensor], Tensor]:
    """image -> server_map(observe(image)), the gradient straight through ``server_map`` (BPDA)."""
    def path(x: Tensor) -> Tensor:
        a = observe(x)
        return a + (server_map(a) - a).detach()
    return path


def _clone_factory(run: Run, server_map: Callable[[Tensor], Tensor] | None = None) -> CloneFactory:
    """What an attacker who knows only the client's architecture can build: ``seed -> `` a fresh
    copy of the run's client pipeline (:class:`~pgsl.attacks.view.PipelineClone`), then, for a
    server observable, ``server_map`` with the gradient straight through it (as ``_through``).

    The copy is a new :class:`~pgsl.client.party.ClientParty` from the run's config, initialised
    under ``seed``: an untrained segment, and the defence's own code with fresh state (PGSL's
    surrogate untrained: its code is public, the client's data is not); a noise defence draws its
    noise when the clone is called. Its fitted weights are the segment's; its weight-free stage
    is the defence's differentiable encoding, so ``clone(x)`` is ``party.observe(x)`` (then the
    server's map)."""
    from pgsl.client.party import ClientParty

    channels, num_classes = run.dataset.channels, len(run.dataset.classes)

    def make(seed: int) -> PipelineClone:
        with torch.random.fork_rng(devices=[]):  # modules are initialised on the CPU, then moved
            torch.manual_seed(seed)
            party = ClientParty(run.cfg, channels, num_classes, run.device)

        def send(code: Tensor) -> Tensor:
            party.segment.eval()  # inference, as party.observe: BatchNorm's running statistics
            return party.send(code)
        fit = send if server_map is None else _through(send, server_map)
        return PipelineClone(party.defense.encode_differentiable, fit, party.segment)
    return make


def attacker_views(run: Run, victims: Tensor, victim_labels: Tensor, aux: Tensor,
                   leak_victims: int) -> list[AttackerView]:
    """One view per target of the run: the cut, then each server observable. The client is
    queried once; a server observable is derived from the same cut observations, as the server
    derives it. Leaked gradients (of the first ``leak_victims``) exist at the cut only: no client
    gradient flows from what the server derives. Every view carries a :func:`_clone_factory` of
    its target's pipeline (architecture-only attacks)."""
    assert run.server is not None
    client, model = run.client, run.server.model
    observed, aux_observed = _batched(client.query, victims), _batched(client.query, aux)
    k = min(leak_victims, len(victims))
    leak = gradient_leak(run, victims[:k], victim_labels[:k]) if k else None
    views = [AttackerView("cut", observed, aux, aux_observed, client.observe, leak, _clone_factory(run))]
    for name, server_map in model.observables().items():
        with torch.no_grad():
            views.append(AttackerView(name, _batched(server_map, observed), aux,
                                      _batched(server_map, aux_observed),
                                      _through(client.observe, server_map),
                                      clone=_clone_factory(run, server_map)))
    return views


def _stats(v: Tensor) -> tuple[float, float]:
    return round(float(v.mean()), 6), round(float(v.std()) if len(v) > 1 else 0.0, 6)


def evaluate_privacy(run_dir: Path, pc: PrivacyConfig, device: str = "cpu",
                     grid_dir: Path | None = None, attacks: list[Attack] | None = None
                     ) -> tuple[list[PrivacyRow], list[str]]:
    """Every attack against every target of one trained run: its rows, and one line per
    (target, attack) left out with the reason. ``attacks``: instances to reuse across runs (GGL
    keeps its image prior per auxiliary set)."""
    dev = resolve_device(device)
    run = load_run(run_dir, dev, full_test=True)  # victims: the images the run trained on
    train_set, kind = run.dataset.train, run.cfg.defense.kind
    attacks = pc.build() if attacks is None else attacks

    g = torch.Generator().manual_seed(pc.seed)
    pick = torch.randperm(len(train_set), generator=g)[: min(pc.victims, len(train_set))]
    victims, labels = to_float(train_set.images[pick], dev), train_set.labels[pick].to(dev)
    aux = to_float(run.dataset.test.images[: pc.aux or len(run.dataset.test) // 2], dev)
    leak_victims = max((a.budget.victims or len(victims) for a in attacks
                        if Need.GRADIENTS in a.needs), default=0)
    log.info("%s: %d victims, %d auxiliary images", run_dir, len(victims), len(aux))

    rows, skipped = [], []
    paper = PAPER_MSE.get(run.dataset.name, {})
    for view in attacker_views(run, victims, labels, aux, leak_victims):
        recons: dict[str, Tensor] = {}
        for attack in attacks:
            if lacking := attack.missing(view):
                skipped.append(f"{kind} / {view.target} / {attack.name}: needs {'; '.join(sorted(lacking))}")
                continue
            rec = attack(view)
            recons[attack.name] = rec.images
            n = len(rec.images)
            scores = {k: _stats(v) for k, v in reconstruction_scores(rec.images, victims[:n]).items()}
            label_acc = None if rec.labels is None else round(
                float((rec.labels.cpu() == labels[:n].cpu()).float().mean()), 4)
            rows.append(PrivacyRow(
                dataset=run.dataset.name, defense=kind, target=view.target, attack=attack.name,
                n_victims=n, mse_mean=scores["mse"][0], mse_std=scores["mse"][1],
                psnr_mean=scores["psnr"][0], psnr_std=scores["psnr"][1], ssim_mean=scores["ssim"][0],
                ssim_std=scores["ssim"][1], paper_mse=paper.get((attack.name, kind, view.target)),
                label_accuracy=label_acc, seconds=round(rec.seconds, 1), run=str(run_dir)))
            log.info("%s %-10s %-10s mse %.4f ssim %.3f (%.0f s)", kind, view.target, attack.name,
                     rows[-1].mse_mean, rows[-1].ssim_mean, rec.seconds)
        if grid_dir is not None and recons:
            _save_view(grid_dir, run_dir.name, kind, view, victims, labels, recons)
    return rows, skipped


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _over_seeds(per_seed: list[list[PrivacyRow]]) -> list[PrivacyRow]:
    """One row per cell from the rows of each seed (same cells, same order): means and per-victim
    stds averaged over the seeds, and the std of the per-seed means beside them."""
    if len(per_seed) == 1:
        return per_seed[0]
    out = []
    for cell in zip(*per_seed, strict=True):
        keys = {(r.run, r.target, r.attack) for r in cell}
        if len(keys) != 1:
            raise RuntimeError(f"seeds scored different cells: {sorted(keys)}")
        first = cell[0]

        def spread(name: str, cell: tuple[PrivacyRow, ...] = cell) -> float:
            return round(float(torch.tensor([getattr(r, name) for r in cell]).std()), 6)

        labels = [r.label_accuracy for r in cell if r.label_accuracy is not None]
        out.append(dataclasses.replace(
            first, **{f: round(_mean([getattr(r, f) for r in cell]), 6) for f in
                      ("mse_mean", "mse_std", "psnr_mean", "psnr_std", "ssim_mean", "ssim_std")},
            label_accuracy=round(_mean(labels), 4) if labels else None,
            seconds=round(sum(r.seconds for r in cell), 1), seeds=len(cell),
            mse_seed_std=spread("mse_mean"), psnr_seed_std=spread("psnr_mean"),
            ssim_seed_std=spread("ssim_mean")))
    return out


def _save_view(out: Path, name: str, kind: str, view: AttackerView, victims: Tensor, labels: Tensor,
               recons: dict[str, Tensor]) -> None:
    """Fig. 4's grid for one target, and its reconstructions for Table II's "trained on
    reconstructions" rows (``pgsl robustness --reconstructions``), with the victims' clean images
    and labels (attack ``a``'s ``n`` reconstructions are of the first ``n`` victims)."""
    k = min(8, *(len(r) for r in recons.values()))
    save_grid(out / f"fig4_{name}_{view.target}.png",
              {"original": victims[:k], "sent": view.observed[:k], **{a: r[:k] for a, r in recons.items()}})
    save_checkpoint(out / f"recon_{name}_{view.target}.pt",
                    {"labels": labels.cpu(), "clean": victims.cpu(), "defense": kind, "target": view.target,
                     **{a: r.cpu() for a, r in recons.items() if a != BASELINE}})


def protocol(pc: PrivacyConfig, attacks: list[Attack], skipped: list[str]) -> str:
    """The table's protocol paragraph: the sample, the auxiliary data, each attack's budget and
    every cell left out with its reason."""
    budgets = "; ".join(
        f"{a.title}: " + ", ".join(f"{k} {v}" for k, v in dataclasses.asdict(a.budget).items())
        for a in attacks)
    seeds = (f"seed {pc.seed}" if pc.seeds == 1 else
             f"seeds {pc.seed}..{pc.seed + pc.seeds - 1}, each also seeding the attacks; a cell's "
             "scores are means over the seeds of the per-seed mean ± per-victim std, with the std of "
             "the per-seed means after the slash")
    text = (f"Victims: a seeded sample ({seeds}) of up to {pc.victims} of each run's training "
            "images; each attack takes the first `victims` of its budget (None: all). Attacker's "
            f"auxiliary data: {'the first half' if pc.aux is None else f'the first {pc.aux} images'} "
            "of the official test set (disjoint from the victims), queried through the trained client "
            "as a black box. White-box attacks differentiate the client's own pipeline (and the "
            "server's map, for a server-side target) with gradients straight through its "
            "non-differentiable steps (BPDA). Gradient attacks match each victim's batch-of-one "
            f"training-step gradients. Budgets: {budgets}. Reconstructions are scored against the clean "
            "images in [0, 1] (MSE, PSNR, SSIM with data_range 1, torchmetrics). The paper's MSE column "
            "is its Table I; the paper does not state its pixel scale.")
    if skipped:
        text += " Left out: " + "; ".join(dict.fromkeys(skipped)) + "."
    return text


def _seed_std(value: float | None, digits: int) -> str:
    return "" if value is None else f" / {value:.{digits}f}"


def write_table(rows: list[PrivacyRow], out: Path, pc: PrivacyConfig, attacks: list[Attack],
                skipped: list[str], cache_key: dict[str, Any] | None = None) -> None:
    """``table1.csv``, ``table1.md`` and ``table1.json`` (rows + protocol, and the ``key`` of a
    whole table), each written atomically."""
    out.mkdir(parents=True, exist_ok=True)
    text = protocol(pc, attacks, skipped)
    titles = {a.name: a.title for a in attacks}
    lines = ["# Table I: model inversion attacks", "", text, "",
             "| dataset | defence | target | attack | n | MSE | PSNR (dB) | SSIM | paper MSE |",
             "|---|---|---|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {r.dataset} | {r.defense} | {r.target} | {titles.get(r.attack, r.attack)} | {r.n_victims} "
              f"| {r.mse_mean:.4f} ± {r.mse_std:.4f}{_seed_std(r.mse_seed_std, 4)} "
              f"| {r.psnr_mean:.2f} ± {r.psnr_std:.2f}{_seed_std(r.psnr_seed_std, 2)} "
              f"| {r.ssim_mean:.3f} ± {r.ssim_std:.3f}{_seed_std(r.ssim_seed_std, 3)} "
              f"| {'' if r.paper_mse is None else r.paper_mse} |"
              for r in rows]
    write_text(out / "table1.md", "\n".join(lines) + "\n")
    write_rows(out / "table1.csv", rows)
    write_rows(out / "table1.json", rows, protocol=text, config=dataclasses.asdict(pc),
               titles=titles, skipped=skipped, key=as_key(cache_key))


def privacy(runs: list[Path], out: Path, pc: PrivacyConfig, device: str = "cpu") -> list[PrivacyRow]:
    """Evaluate every run (under each seed), then write the table and the grids into ``out`` (the
    grids and saved reconstructions are the first seed's). A table ``out`` holds from the same runs
    (their configurations) and protocol is returned as it is; otherwise it is computed again."""
    cache_key = {"runs": runs_key(runs), "privacy": dataclasses.asdict(pc)}
    if (done := cached(out / "table1.json", cache_key, PrivacyRow)) is not None:
        return done
    out.mkdir(parents=True, exist_ok=True)
    configs = [dataclasses.replace(pc, seed=pc.seed + k, seeds=1) for k in range(pc.seeds)]
    attacks = [c.build() for c in configs]  # one set per seed, each reused across the runs
    rows: list[PrivacyRow] = []
    skipped: list[str] = []
    t0 = time.perf_counter()
    for run_dir in runs:
        per_seed = []
        for k, c in enumerate(configs):
            more, left_out = evaluate_privacy(run_dir, c, device, grid_dir=out if k == 0 else None,
                                              attacks=attacks[k])
            per_seed.append(more)
        rows += _over_seeds(per_seed)
        skipped += left_out
        write_table(rows, out, pc, attacks[0], skipped)  # a kill later keeps the runs already scored
    log.info("Table I: %d runs in %.0f s", len(runs), time.perf_counter() - t0)
    if not math.isfinite(sum(r.mse_mean for r in rows)):
        raise RuntimeError("a reconstruction score is not finite")
    write_table(rows, out, pc, attacks[0], skipped, cache_key)  # whole: its key marks it reusable
    return rows
