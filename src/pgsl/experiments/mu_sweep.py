"""The mu sweep of paper §V-B / Fig. 3: how well APG robust PCA recovers a JSMA-attacked *image*.

For each mu the attacked test images (the client's intentional JSMA, driven by a surrogate trained
on the training split, with the preset's pixel budget) are split into low-rank + sparse, and the
MSE between the low-rank part and the clean original is recorded. The paper sweeps mu = 0.05, 0.15,
..., 0.95 on MNIST and MIAS and finds 0.55 best on both. The row ``mu = 0`` is the attacked image
itself (no recovery), the reference any mu has to beat.

Images are solved to convergence (``max_iter``, ``tol`` below), not with the training preset's
capped iteration count, so the curve measures mu and not the iteration budget. Converged, APG and
ADMM (``solver``; :mod:`pgsl.recovery.admm`) give the same minimiser; ADMM gets there in fewer
iterations.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from pgsl.client.pixel_attack import intentional_jsma
from pgsl.client.surrogate import Surrogate, train_surrogate
from pgsl.config import Config
from pgsl.data import load_dataset, to_float
from pgsl.experiments.figures import pyplot, save_figure
from pgsl.experiments.results import MuSweepRow, write_rows
from pgsl.recovery.rpca import robust_pca

log = logging.getLogger(__name__)

PAPER_MUS = tuple(round(0.05 + 0.1 * i, 2) for i in range(10))  # 0.05, 0.15, ..., 0.95
PAPER_BEST_MU = 0.55


@dataclasses.dataclass(frozen=True)
class SweepConfig:
    mus: tuple[float, ...] = PAPER_MUS
    images: int = 500  # a seeded sample of the test set
    max_iter: int = 500
    tol: float = 1e-6
    seed: int = 0
    solver: str = "apg"  # or "admm": the same minimiser (robust_pca's ``solver``)

    def __post_init__(self) -> None:
        from pgsl.recovery.rpca import SOLVERS

        if not self.mus or min(self.mus) <= 0:
            raise ValueError(f"mu values must be positive, got {list(self.mus)}")
        if self.images < 1 or self.max_iter < 1 or self.tol <= 0:
            raise ValueError(f"images and max_iter must be >= 1 and tol > 0, got {self.images}, "
                             f"{self.max_iter}, {self.tol}")
        if self.solver not in SOLVERS:
            raise ValueError(f"solver must be {' or '.join(SOLVERS)}, got {self.solver!r}")


def sweep_dataset(cfg: Config, sc: SweepConfig, device: torch.device) -> list[MuSweepRow]:
    """One row per mu (plus mu = 0, the attacked image) for ``cfg.data.dataset``."""
    t0 = time.perf_counter()
    data = load_dataset(cfg.data, seed=cfg.train.seed)
    a = cfg.pixel_attack
    torch.manual_seed(sc.seed)
    surrogate = Surrogate(data.channels, len(data.classes), a.surrogate_width).to(device)
    train_surrogate(surrogate, data.train, epochs=a.surrogate_epochs, batch_size=cfg.train.batch_size,
                    seed=sc.seed, device=device)
    surrogate.eval()
    g = torch.Generator().manual_seed(sc.seed)
    pick = torch.randperm(len(data.test), generator=g)[: sc.images]
    clean = to_float(data.test.images[pick], device)
    labels = data.test.labels[pick].to(device)
    attacked = torch.cat([
        intentional_jsma(surrogate, xb, yb, pixels=a.pixels, pixels_per_step=a.pixels_per_step,
                         theta=a.theta).attacked
        for xb, yb in zip(clean.split(256), labels.split(256), strict=True)
    ])

    def row(mu: float, image: torch.Tensor, iters: float, converged: float) -> MuSweepRow:
        mse = (image.clamp(0, 1) - clean).square().flatten(1).mean(1)
        return MuSweepRow(dataset=data.name, mu=mu, mse_mean=round(float(mse.mean()), 6),
                          mse_std=round(float(mse.std()), 6) if len(mse) > 1 else 0.0,
                          n_images=len(clean), iterations=round(iters, 1),
                          converged=round(converged, 4), solver=sc.solver)

    rows = [row(0.0, attacked, 0.0, 1.0)]
    for mu in sc.mus:
        r = robust_pca(attacked.double(), mu=mu, lam=cfg.recovery.lam, max_iter=sc.max_iter, tol=sc.tol,
                       eta=cfg.recovery.eta, svt=cfg.recovery.svt, solver=sc.solver)
        rows.append(row(mu, r.low_rank.float(), float(r.iterations.double().mean()),
                        float(r.converged.double().mean())))
        log.info("%s mu %.2f: MSE %.5f (%.0f iterations)", data.name, mu, rows[-1].mse_mean,
                 rows[-1].iterations)
    log.info("%s: mu sweep on %d images in %.0f s", data.name, len(clean), time.perf_counter() - t0)
    return rows


def best_mu(rows: Sequence[MuSweepRow], dataset: str) -> float:
    """The swept mu (> 0) with the lowest mean MSE on ``dataset``."""
    swept = [r for r in rows if r.dataset == dataset and r.mu > 0]
    return float(min(swept, key=lambda r: r.mse_mean).mu)


def plot(rows: Sequence[MuSweepRow], path: Path) -> None:
    """Fig. 3: MSE against mu, one line per dataset, the attacked image's MSE dashed."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.0, 4.0), dpi=120)
    for name in dict.fromkeys(r.dataset for r in rows):
        pts = [r for r in rows if r.dataset == name and r.mu > 0]
        (line,) = ax.plot([r.mu for r in pts], [r.mse_mean for r in pts], marker="o",
                          label=f"{name}: APG low-rank part (best mu {best_mu(rows, name):g})")
        ref = next(r.mse_mean for r in rows if r.dataset == name and r.mu == 0)
        ax.axhline(ref, color=line.get_color(), linestyle="--", linewidth=1,
                   label=f"{name}: attacked image, no recovery")
    ax.axvline(PAPER_BEST_MU, color="grey", linestyle=":", linewidth=1, label="paper's mu (0.55)")
    ax.set_xlabel("mu")
    ax.set_ylabel("MSE to the clean image (pixels in [0, 1])")
    ax.set_title("Fig. 3: recovering JSMA-attacked images with APG robust PCA", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)


def mu_sweep(configs: Sequence[Config], out: Path, sc: SweepConfig,
             device: torch.device) -> list[MuSweepRow]:
    """Sweep every dataset; write ``mu_sweep.csv``, ``mu_sweep.json`` and ``mu_sweep.png``."""
    out.mkdir(parents=True, exist_ok=True)
    rows: list[MuSweepRow] = []
    for cfg in configs:
        rows.extend(sweep_dataset(cfg, sc, device))
    write_rows(out / "mu_sweep.csv", rows)
    best = {name: best_mu(rows, name) for name in dict.fromkeys(r.dataset for r in rows)}
    write_rows(out / "mu_sweep.json", rows, config=dataclasses.asdict(sc), best_mu=best,
               paper_best_mu=PAPER_BEST_MU)
    plot(rows, out / "mu_sweep.png")
    return rows
