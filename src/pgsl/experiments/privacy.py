"""Table I: the adversary's inversion attacks against trained runs (paper §V-C, DESIGN §3).

The evaluator is the only place that holds the victims' raw images. It builds one
:class:`~pgsl.attacks.view.AttackerView` per target (what crossed the cut, or what PGSL's server
recovered from it), hands it to each attack, and scores what comes back against the clean images.

Protocol (written into the table): victims = a seeded sample of the run's training images;
auxiliary data = the first half of the official test set (disjoint from the victims), queried
through the trained client as a black box; observations taken from the trained client at
inference (no gradient), so a noise defence draws fresh noise for every query.
"""

from __future__ import annotations

import copy
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

from pgsl.attacks.activation_matching import activation_matching
from pgsl.attacks.dlg import BLEND, STAGES, GradientLeak, gradient_inversion
from pgsl.attacks.gan import gan_inversion
from pgsl.attacks.ggl import ImagePrior, ggl_inversion, train_prior
from pgsl.attacks.mia import invert, train_decoder
from pgsl.attacks.view import AttackerView, reconstruction_scores
from pgsl.checkpoint import save_checkpoint, write_csv, write_json, write_text
from pgsl.data import to_float
from pgsl.experiments.figures import save_grid
from pgsl.experiments.train import Run, load_run, resolve_device
from pgsl.layers import upsample

log = logging.getLogger(__name__)

ATTACKS = ("mia", "gan", "activation", "dlg", "idlg", "ggl")
DEFAULT_ATTACKS = ATTACKS
ATTACK_NAMES = {"mean": "mean auxiliary image (trivial baseline)", "mia": "MIA (learned inversion)",
                "gan": "GAN inversion (conditional, adversarial + MSE)",
                "activation": "activation matching (white-box)", "dlg": "DLG (gradient matching)",
                "idlg": "iDLG (gradient matching, analytic label)",
                "ggl": "GGL (gradient matching, learned image prior)"}
GRADIENT_ATTACKS = ("dlg", "idlg", "ggl")
TARGETS_OF = {"none": ["none"], "noise": ["noise"], "nopeek": ["nopeek"],
              "pgsl": ["pgsl-cut", "pgsl-recovered"]}
# Paper Table I (MSE; the paper does not state its pixel scale). Keys: (attack, target).
PAPER_MSE = {
    "mnist": {("mia", "none"): 0.08, ("dlg", "none"): 0.12, ("idlg", "none"): 0.048,
              ("gan", "none"): 0.056, ("dlg", "pgsl-cut"): 0.24, ("idlg", "pgsl-cut"): 0.22,
              ("gan", "pgsl-cut"): 0.29, ("dlg", "noise"): 0.097, ("idlg", "noise"): 0.04,
              ("gan", "noise"): 2.34, ("dlg", "pgsl-recovered"): 0.046,
              ("idlg", "pgsl-recovered"): 0.026, ("gan", "pgsl-recovered"): 0.078},
    "mias": {("mia", "none"): 2.925, ("dlg", "none"): 3.14, ("idlg", "none"): 2.63,
             ("gan", "none"): 2.96, ("dlg", "pgsl-cut"): 4.362, ("idlg", "pgsl-cut"): 3.924,
             ("gan", "pgsl-cut"): 5.947, ("dlg", "noise"): 2.543, ("idlg", "noise"): 1.349,
             ("gan", "noise"): 7.86, ("dlg", "pgsl-recovered"): 1.854,
             ("idlg", "pgsl-recovered"): 1.126, ("gan", "pgsl-recovered"): 2.372},
}


@dataclasses.dataclass(frozen=True)
class PrivacyConfig:
    victims: int = 500  # learned attacks
    opt_victims: int = 64  # optimisation attacks (DESIGN §3: >= 32 on a quick CPU run)
    aux: int | None = None  # None: the first half of the official test set
    mia_epochs: int = 10
    gan_epochs: int = 5  # adversarial epochs after the MIA decoder's MSE pre-training
    match_steps: int = 300
    dlg_victims: int = 32  # DLG/iDLG/GGL: one problem per victim
    # DLG/iDLG: L-BFGS-B iterations per stage of the layer-wise continuation (attacks/dlg.py);
    # at 150, ~6 s per victim on 2 CPU cores (8 quick vanilla victims: 51 s with the leak)
    dlg_iterations: int = 150
    # auxiliary images scored for DLG/iDLG's start (256 per victim: 0.2 s vanilla, 1.4 s PGSL's cut)
    dlg_starts: int = 256
    # GGL (attacks/ggl.py): the auxiliary-image autoencoder's epochs, the evolution strategy's size
    prior_epochs: int = 40
    ggl_population: int = 32
    ggl_generations: int = 40
    ggl_starts: int = 256  # auxiliary images tried as the search's starting point
    seed: int = 0
    attacks: tuple[str, ...] = DEFAULT_ATTACKS


def _batched(fn: Callable[[Tensor], Tensor], x: Tensor, size: int = 256) -> Tensor:
    return torch.cat([fn(c) for c in x.split(size)])


def _views(run: Run, victims: Tensor, aux: Tensor) -> dict[str, AttackerView]:
    """One view per target of the run. The client is queried once; PGSL's recovered-map target is
    derived from the same cut observations, as the server derives it."""
    client = run.client
    observed = _batched(client.query, victims)
    aux_observed = _batched(client.query, aux)
    segment = client.segment
    if client.pgsl:
        # the discrete pixel attack cannot be differentiated; the saliency channel the client
        # appends is unknown to the attacker, which uses the mean of its auxiliary images' maps
        with torch.no_grad():
            sal = _batched(lambda x: client.encode(x, None)[:, -1:], aux[:512]).mean(0, keepdim=True)

        def model(x: Tensor) -> Tensor:
            pooled = sal.expand(len(x), -1, -1, -1)
            return segment(torch.cat([torch.nn.functional.pixel_unshuffle(x, 2), pooled], 1))
    else:
        def model(x: Tensor) -> Tensor:
            return segment(x)
    views = {}
    for target in TARGETS_OF[run.cfg.defense.kind]:
        obs, aux_obs = observed, aux_observed
        if target == "pgsl-recovered":
            assert run.server is not None
            recover = run.server.model.recovery
            obs, aux_obs = _batched(recover, observed), _batched(recover, aux_observed)
        views[target] = AttackerView(target, obs, aux, aux_obs, model)
    return views


def _server_path(run: Run) -> Callable[[Tensor], Tensor]:
    """Activations -> the logits whose loss trains the client (PGSL: the S_f stream)."""
    assert run.server is not None
    model = run.server.model
    if model.single:
        return model.s_f

    def path(a: Tensor) -> Tensor:
        return model.s_f(model.fusion(upsample(a), upsample(model.recovery(a))))
    return path


def _gradient_leak(run: Run, view: AttackerView, x: Tensor, y: Tensor) -> GradientLeak:
    """Each victim's training-step gradients (batch size 1), taken by the evaluator from the real
    pipeline -- pixel attack and noise included -- in inference mode (BatchNorm running statistics,
    no dropout). NoPeek's dCor term needs >= 2 samples and is absent at batch size 1."""
    assert run.server is not None and view.client_model is not None
    client, model, server_path = run.client, run.server.model, _server_path(run)
    last = model.s_f.classifier[-1].weight
    assert isinstance(last, Tensor)
    on_path = [model.s_f] if model.single else [model.fusion, model.s_f]
    params: list[Tensor] = [*client.segment.parameters()]
    params += [p for m in on_path for p in m.parameters() if p is not last] + [last]
    grads = []
    for i in range(len(x)):
        xi, yi = x[i:i + 1], y[i:i + 1]
        if client.pgsl:
            xi = client.encode(xi, yi if run.cfg.attack.label_source == "true" else None)
        loss = F.cross_entropy(server_path(client.cut(xi)), yi)
        grads.append([g.detach() for g in torch.autograd.grad(loss, params)])
    client_model = view.client_model

    def logits(xd: Tensor) -> Tensor:
        a = client_model(xd)
        if not torch.isfinite(a).all():  # an L-BFGS trial point far outside the image range
            raise FloatingPointError("the dummy image's activations are not finite")
        return server_path(a)
    bias = model.s_f.classifier[-1].bias
    output_bias = next((i for i, p in enumerate(params) if p is bias), None)
    return GradientLeak(grads, params, logits, model.num_classes, output_bias)


def _summary(scores: dict[str, Tensor]) -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in scores.items():
        out[f"{k}_mean"] = float(v.mean())
        out[f"{k}_std"] = float(v.std()) if len(v) > 1 else 0.0
    return out


def evaluate_privacy(run_dir: Path, pc: PrivacyConfig, device: str = "cpu",
                     grid_dir: Path | None = None,
                     priors: dict[tuple[Any, ...], ImagePrior] | None = None) -> list[dict[str, Any]]:
    """Run every attack against every target of one trained run; one row per (attack, target).

    ``priors`` caches GGL's image prior across runs: it depends only on the auxiliary images, which
    runs on the same dataset share."""
    for name in pc.attacks:
        if name not in ATTACKS:
            raise ValueError(f"unknown attack {name!r}; choose from {', '.join(ATTACKS)}")
    dev = resolve_device(device)
    run = load_run(run_dir, dev, full_test=True)  # victims: the images the run trained on
    cfg, dataset = run.cfg, run.dataset
    train_set, full = dataset.train, dataset

    g = torch.Generator().manual_seed(pc.seed)
    n_victims = min(max(pc.victims, pc.opt_victims), len(train_set))
    pick = torch.randperm(len(train_set), generator=g)[:n_victims]
    victims = to_float(train_set.images[pick], dev)
    victim_labels = train_set.labels[pick].to(dev)
    n_aux = pc.aux or len(full.test) // 2
    aux = to_float(full.test.images[:n_aux], dev)
    log.info("%s: %d victims (optimisation attacks: first %d), %d auxiliary images",
             run_dir, n_victims, min(pc.opt_victims, n_victims), n_aux)

    rows: list[dict[str, Any]] = []
    paper = PAPER_MSE.get(dataset.name, {})
    priors = {} if priors is None else priors
    prior_key = (dataset.name, n_aux, tuple(aux.shape[1:]), pc.prior_epochs, pc.seed, str(dev))
    t_run = time.perf_counter()
    for target, view in _views(run, victims, aux).items():
        recons: dict[str, Tensor] = {"mean": aux.mean(0, keepdim=True).expand_as(victims)}
        seconds: dict[str, float] = {"mean": 0.0}
        label_acc: dict[str, float] = {}
        # one leak per target, shared by DLG, iDLG and GGL (the first one's seconds include it)
        leak: GradientLeak | None = None
        for name in pc.attacks:
            t0 = time.perf_counter()
            if name == "mia":
                decoder = train_decoder(view, epochs=pc.mia_epochs, seed=pc.seed)
                recons[name] = invert(decoder, view.observed)
            elif name == "gan":  # MSE pre-training is the learned inversion's decoder, if it ran
                pretrained = copy.deepcopy(decoder) if "mia" in recons else None
                recons[name] = gan_inversion(view, epochs=pc.gan_epochs, seed=pc.seed,
                                             generator=pretrained)
            elif name == "activation":
                sub = dataclasses.replace(view, observed=view.observed[: pc.opt_victims])
                recons[name] = activation_matching(sub, steps=pc.match_steps)
            elif name in GRADIENT_ATTACKS:
                if target == "pgsl-recovered":  # no client gradient flows from the recovered maps
                    continue
                k = min(pc.dlg_victims, len(victims))
                if leak is None:
                    leak = _gradient_leak(run, view, victims[:k], victim_labels[:k])
                if name == "ggl":
                    if prior_key not in priors:
                        priors[prior_key] = train_prior(view.aux_images, epochs=pc.prior_epochs,
                                                        seed=pc.seed)
                    prior = priors[prior_key]
                    recons[name], used = ggl_inversion(
                        leak, prior, view.aux_images, population=pc.ggl_population,
                        generations=pc.ggl_generations, starts=pc.ggl_starts, seed=pc.seed)
                else:
                    recons[name], used = gradient_inversion(
                        leak, view.image_shape, idlg=name == "idlg", aux_images=view.aux_images,
                        iterations=pc.dlg_iterations, starts=pc.dlg_starts, seed=pc.seed)
                label_acc[name] = float((used.cpu() == victim_labels[:k].cpu()).float().mean())
            seconds[name] = time.perf_counter() - t0
        for name, rec in recons.items():
            scores = reconstruction_scores(rec, victims[: len(rec)])
            rows.append({
                "run": str(run_dir), "dataset": dataset.name, "defense": cfg.defense.kind,
                "target": target, "attack": name, "n_victims": len(rec),
                **{k: round(v, 6) for k, v in _summary(scores).items()},
                "paper_mse": paper.get((name, target), ""), "seconds": round(seconds[name], 1),
                "label_accuracy": round(label_acc[name], 4) if name in label_acc else "",
            })
            log.info("%-15s %-11s mse %.4f ssim %.3f", target, name, rows[-1]["mse_mean"],
                     rows[-1]["ssim_mean"])
        if grid_dir is not None:
            k = min(8, *(len(r) for r in recons.values()))
            cols = {"original": victims[:k], "sent": view.observed[:k]}
            cols.update({name: rec[:k] for name, rec in recons.items()})
            save_grid(grid_dir / f"fig4_{run_dir.name}_{target}.png", cols)
            # Table II's "trained on reconstructions" rows (pgsl robustness --reconstructions)
            save_checkpoint(grid_dir / f"recon_{run_dir.name}_{target}.pt",
                            {"labels": victim_labels.cpu(), "target": target, "dataset": dataset.name,
                             **{k: v.cpu() for k, v in recons.items() if k != "mean"}})
    log.info("%s: every attack on every target in %.0f s", run_dir, time.perf_counter() - t_run)
    return rows


COLUMNS = ["dataset", "defense", "target", "attack", "n_victims", "mse_mean", "mse_std", "psnr_mean",
           "psnr_std", "ssim_mean", "ssim_std", "paper_mse", "label_accuracy", "seconds", "run"]


def write_table(rows: list[dict[str, Any]], out: Path, pc: PrivacyConfig) -> None:
    """``table1.csv``, ``table1.md`` and ``table1.json`` (rows + protocol), each written atomically."""
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "table1.csv", rows, COLUMNS)
    protocol = (
        f"Victims: a seeded sample (seed {pc.seed}) of each run's training images, {pc.victims} for "
        f"the learned attacks (MIA {pc.mia_epochs} epochs; GAN: {pc.gan_epochs} adversarial epochs "
        "starting from the MIA decoder), the first "
        f"{pc.opt_victims} of them for activation matching ({pc.match_steps} Adam steps) and the first "
        f"{pc.dlg_victims} for DLG/iDLG (batch size 1; L-BFGS-B on [0, 1] pixels, {pc.dlg_iterations} "
        f"iterations per stage, matching the last {', '.join(str(k) for k in STAGES if k)} and then all "
        f"weight tensors; start: the mean of the {BLEND} of {pc.dlg_starts} auxiliary images with the "
        "closest gradients; iDLG reads "
        "dL/dlogits off the last bias's gradient, DLG learns it by matching)"
        + (f" and GGL (autoencoder prior on the auxiliary images, {pc.prior_epochs} epochs; "
           f"evolution strategy from the best of {pc.ggl_starts} auxiliary images' codes, "
           f"population {pc.ggl_population}, {pc.ggl_generations} generations)"
           if "ggl" in pc.attacks else "") + ". "
        f"Attacker's auxiliary data: {'the first half' if pc.aux is None else f'the first {pc.aux} images'} "
        "of the official test set "
        "(disjoint from the victims), queried "
        "through the trained client as a black box. Reconstructions are scored against the clean "
        "images in [0, 1] (MSE, PSNR, SSIM with data_range 1, torchmetrics). The paper's MSE "
        "column is its Table I; the paper does not state its pixel scale."
    )
    lines = ["# Table I: model inversion attacks", "", protocol, "",
             "| dataset | defense | target | attack | n | MSE | PSNR (dB) | SSIM | paper MSE |",
             "|---|---|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(
            f"| {r['dataset']} | {r['defense']} | {r['target']} "
            f"| {ATTACK_NAMES.get(r['attack'], r['attack'])} "
            f"| {r['n_victims']} | {r['mse_mean']:.4f} ± {r['mse_std']:.4f} "
            f"| {r['psnr_mean']:.2f} ± {r['psnr_std']:.2f} | {r['ssim_mean']:.3f} ± {r['ssim_std']:.3f} "
            f"| {r['paper_mse']} |")
    write_text(out / "table1.md", "\n".join(lines) + "\n")
    write_json(out / "table1.json", {"protocol": protocol, "config": dataclasses.asdict(pc),
                                     "rows": rows})


def privacy(runs: list[Path], out: Path, pc: PrivacyConfig, device: str = "cpu") -> list[dict[str, Any]]:
    """Evaluate every run, then write the table and the grids into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    priors: dict[tuple[Any, ...], ImagePrior] = {}  # GGL's image prior, once per dataset
    for run_dir in runs:
        rows.extend(evaluate_privacy(run_dir, pc, device, grid_dir=out, priors=priors))
        write_table(rows, out, pc)  # a kill later keeps the runs already scored
    if not math.isfinite(sum(r["mse_mean"] for r in rows)):
        raise RuntimeError("a reconstruction score is not finite")
    return rows
