"""DLG, iDLG and GGL (pgsl.attacks.dlg, .ggl): on trained runs against the mean image, on a batch
of victims against each victim alone, and the scipy reference against the batched solver."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from attack_views import poison, views_of
from torch import nn

from pgsl.attacks.dlg import DLG, IDLG, DLGBudget, gradient_inversion, idlg_label
from pgsl.attacks.ggl import GGL, GGLBudget, ImagePrior, ggl_inversion
from pgsl.attacks.view import GradientLeak, reconstruction_scores
from pgsl.client.party import ClientParty
from pgsl.config import load_preset
from pgsl.data import load_dataset, to_float
from pgsl.experiments.privacy import PrivacyConfig, evaluate_privacy, gradient_leak
from pgsl.optim.per_sample import per_sample_grads
from pgsl.server.party import ServerParty

ROOT = Path(__file__).resolve().parents[1]
TINY = str(Path(__file__).parent / "tiny.toml")
BATCH_TOL = 1e-9


def test_idlg_reads_the_label_off_the_last_layer(runs: dict[str, Path]) -> None:
    for kind in ("none", "pgsl"):
        run, victims, labels, _ = views_of(runs[kind], n_victims=8, n_aux=64)
        leak = gradient_leak(run, victims, labels)
        assert len(leak.gradients) == 8 and leak.params[-1] is run.server.model.output_layer().weight
        got = torch.tensor([idlg_label(g[-1]) for g in leak.gradients])
        assert torch.equal(got, labels), kind
        assert leak.output_bias is not None  # and dL/dlogits off the last bias: negative at the label
        bias = torch.stack([g[leak.output_bias] for g in leak.gradients])
        assert torch.equal(bias.argmin(1), labels), kind


def test_ggl_prior_is_trained_once_per_dataset_and_shared_by_runs(runs: dict[str, Path],
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """GGL's prior depends only on the auxiliary images: a second run on the same data reuses it,
    a different number of auxiliary images gets its own."""
    import pgsl.attacks.ggl as ggl

    trained = []
    train_prior = ggl.train_prior

    def counting(images: torch.Tensor, **kw):
        trained.append(len(images))
        return train_prior(images, **kw)

    monkeypatch.setattr(ggl, "train_prior", counting)
    pc = PrivacyConfig(victims=4, aux=64, attacks=("ggl",),
                       budgets={"ggl": {"victims": 1, "prior_epochs": 1, "population": 4,
                                        "generations": 1, "starts": 4}})
    attacks = pc.build()
    rows, _ = evaluate_privacy(runs["none"], pc, attacks=attacks)
    assert trained == [64]
    rows, _ = evaluate_privacy(runs["noise"], pc, attacks=attacks)
    assert trained == [64]
    assert [(r.defense, r.attack, r.n_victims) for r in rows] == [("noise", "ggl", 1)]
    evaluate_privacy(runs["none"], dataclasses.replace(pc, aux=32), attacks=attacks)
    assert trained == [64, 32]


@pytest.fixture(scope="module")
def quick_arch_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An undefended run with the quick preset's architecture (width 16, 128 hidden, 4x4 pooling),
    trained for seconds: the tiny preset's width-8 network leaks too little through its gradients
    for the gradient attacks (GGL measured MSE 0.108 vs the mean image's 0.078 there)."""
    from pgsl.runtime import train_run

    cfg = load_preset(TINY).replace(
        data={"limit_train": 1024}, defense={"kind": "none"}, model={"width": 16, "hidden": 128, "pool": 4})
    out = tmp_path_factory.mktemp("quick_arch") / "run"
    train_run(cfg, out)
    return out


def _leak_thenpoison(run_dir: Path, n: int):
    """The evaluator builds the view with the victims' gradient leak; then the victims' images
    are poisoned with NaN, so an attack that read them would fail."""
    _, victims, labels, views = views_of(run_dir, n_victims=n, n_aux=1000, leak_victims=n)
    view = views["cut"]
    assert view.leak is not None and len(view.leak.gradients) == n
    clean, baseline = poison(victims, view)
    return view, clean, labels, baseline


# Measured with 8 victims on quick_arch_run's network and more draws of its weights (train seeds
# 1, 2, and a fourth draw), and seed 0 again on two other machines of the same kind (an AMD EPYC
# 2-core: "EPYC"; and the machine these bounds were last checked on: "other"), whose weights differ
# in the last bits:
# MSE / mean image's MSE and SSIM - mean image's SSIM
#                       seed 0          seed 1          seed 2          fourth draw     EPYC    other
#   GGL (batched)      0.860 +0.326 | 0.838 +0.307 | 0.656 +0.343 |      -        | 0.926 | 0.903
#   DLG (torch)        0.616 +0.110 | 0.619 +0.291 | 0.512 +0.214 |      -        | 0.756 | <0.85 +0.040
#   iDLG (torch)       0.509 +0.162 | 0.538 +0.323 | 0.476 +0.229 |      -        |   -   |   -
#   GGL (per victim)   0.870 +0.317 | 0.803 +0.323 | 0.700 +0.333 | 0.788 +0.328
#   DLG (scipy)        0.686 +0.085 | 0.647 +0.278 | 0.521 +0.232 | 0.688 +0.344
#   iDLG (scipy)       0.519 +0.176 | 0.494 +0.345 |      -       | 0.532 +0.401
# The MSE ratio moves by ~0.27 between draws of the weights (GGL: 0.66-0.93). GGL's and iDLG's SSIM
# gains are stable relative to their size (+0.31-+0.34, +0.16-+0.40), DLG's is not (+0.04-+0.34).
# So each test asserts an MSE ratio with a margin of at least 0.07 over the highest draw (GGL: below
# the mean image's, which is what "beats the mean image" means), GGL and iDLG an SSIM gain with a
# margin of at least 0.06 under the lowest, and DLG an SSIM no lower than the mean image's (0.04).
# Thread count, seed 0, one machine (`PGSL_TEST_THREADS=1|2 pytest -p no:xdist -k "ggl_beats or
# dlg_and_idlg_beat" --junitxml=J`, the values recorded as the tests' properties):
#   1 thread (as under xdist):  GGL 0.927 +0.309 | DLG 0.757 +0.040 | iDLG 0.439 +0.191
#   2 threads:                  GGL 0.904 +0.309 | DLG 0.632 +0.096 | iDLG 0.485 +0.149
# -- the thread count moves DLG's ratio by 0.13, as much as a draw of the weights does; the
# smallest margins kept: GGL MSE 0.07, DLG MSE 0.09 and SSIM 0.04, iDLG SSIM 0.05.


@pytest.mark.slow
def test_ggl_beats_the_mean_image_on_an_undefended_run_without_reading_victims(
        quick_arch_run: Path, record_property: Callable[[str, object], None]) -> None:
    """GGL's learned prior recovers victims from their gradients (attacks/ggl.py)."""
    view, clean, labels, baseline = _leak_thenpoison(quick_arch_run, 8)
    rec = GGL(GGLBudget(victims=None, prior_epochs=20, population=32, generations=30))(view)
    assert rec.images.shape == clean.shape and torch.isfinite(rec.images).all()
    assert rec.labels is not None and torch.equal(rec.labels, labels)
    s = reconstruction_scores(rec.images, clean)
    record_property("mse_ratio", float(s["mse"].mean() / baseline["mse"].mean()))
    record_property("ssim_gain", float(s["ssim"].mean() - baseline["ssim"].mean()))
    assert s["mse"].mean() < baseline["mse"].mean(), (s["mse"].mean(), baseline["mse"].mean())
    assert s["ssim"].mean() > baseline["ssim"].mean() + 0.2, (s["ssim"].mean(), baseline["ssim"].mean())


@pytest.mark.parametrize(("cls", "mse_ratio", "ssim_gain"), [(DLG, 0.85, 0.0), (IDLG, 0.75, 0.1)],
                         ids=["dlg", "idlg"])
@pytest.mark.slow
def test_dlg_and_idlg_beat_the_mean_image_on_an_undefended_run_without_reading_victims(
        quick_arch_run: Path, cls: type[DLG], mse_ratio: float, ssim_gain: float,
        record_property: Callable[[str, object], None]) -> None:
    """The layer-wise L-BFGS-B matching of attacks/dlg.py on PGSL's ReLU + BatchNorm network."""
    view, clean, labels, baseline = _leak_thenpoison(quick_arch_run, 8)
    assert view.leak is not None and view.leak.output_bias is not None  # iDLG reads dL/dlogits off it
    rec = cls(DLGBudget(victims=None, iterations=100))(view)
    assert rec.images.shape == clean.shape and torch.isfinite(rec.images).all()
    assert rec.labels is not None and torch.equal(rec.labels, labels)
    s = reconstruction_scores(rec.images, clean)
    record_property("mse_ratio", float(s["mse"].mean() / baseline["mse"].mean()))
    record_property("ssim_gain", float(s["ssim"].mean() - baseline["ssim"].mean()))
    assert s["mse"].mean() < mse_ratio * baseline["mse"].mean(), (s["mse"].mean(), baseline["mse"].mean())
    assert s["ssim"].mean() > baseline["ssim"].mean() + ssim_gain, (s["ssim"].mean(), baseline["ssim"].mean())


@pytest.mark.slow
def test_dlg_and_idlg_recover_victims_in_their_published_setting() -> None:
    """Zhu et al. and Zhao et al. attack a LeNet with sigmoid activations, one victim per leak: there
    our L-BFGS gradient matching must recover real MNIST digits almost exactly, and iDLG the label."""
    from torch.nn import functional as F

    from pgsl.attacks.dlg import gradient_inversion
    from pgsl.data import load_dataset, to_float

    train = load_dataset(load_preset(TINY).data).train
    x, y = to_float(train.images[:2]), train.labels[:2]
    net = nn.Sequential(nn.Conv2d(1, 12, 5, 2, 2), nn.Sigmoid(), nn.Conv2d(12, 12, 5, 2, 2), nn.Sigmoid(),
                        nn.Conv2d(12, 12, 5, 1, 2), nn.Sigmoid(), nn.Flatten(), nn.Linear(12 * 7 * 7, 10))
    for p in net.parameters():
        nn.init.uniform_(p, -0.5, 0.5)  # DLG's initialisation
    last = net[-1].weight
    params = [p for p in net.parameters() if p is not last] + [last]
    grads = [[g.detach() for g in torch.autograd.grad(F.cross_entropy(net(x[i:i + 1]), y[i:i + 1]), params)]
             for i in range(len(x))]
    leak = GradientLeak(grads, params, net, 10)
    baseline = reconstruction_scores(torch.full_like(x, float(x.mean())), x)
    for idlg in (False, True):  # from noise (no auxiliary images), every weight tensor at once
        recon, labels = gradient_inversion(leak, (1, 28, 28), idlg=idlg, iterations=1000, stages=(0,))
        s = reconstruction_scores(recon, x)
        assert s["mse"].max() < 0.05 * baseline["mse"].mean(), (idlg, s["mse"])
        assert s["ssim"].min() > 0.8, (idlg, s["ssim"])
        assert torch.equal(labels, y)


def _pipeline(kind: str) -> SimpleNamespace:
    """A (untrained) client and server of the tiny preset in float64, in eval mode: enough of a
    run for :func:`gradient_leak`, whose path is the real one (PGSL: JSMA, RPCA, three streams)."""
    cfg = load_preset(TINY).replace(defense={"kind": kind}, model={"width": 8, "hidden": 16, "pool": 2})
    torch.manual_seed(0)
    client, server = ClientParty(cfg, 1, 10), ServerParty(cfg, 10)
    client.defense.double()
    client.segment.double()
    server.model.double().eval()
    return SimpleNamespace(client=client, server=server)


def _mnist(n: int, offset: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    train = load_dataset(load_preset(TINY).data).train
    return (to_float(train.images[offset:offset + n]).double()[:, :, 6:22, 6:22].contiguous(),
            train.labels[offset:offset + n])


@pytest.mark.parametrize("kind", ["none", "pgsl"])
def test_per_sample_gradients_on_the_real_white_box_path(kind: str) -> None:
    run = _pipeline(kind)
    x, y = _mnist(4)
    leak = gradient_leak(run, x, y)  # type: ignore[arg-type]
    owners = list(leak.owners(range(len(leak.params))).values())
    got = per_sample_grads(leak.logits, x, lambda z: F.cross_entropy(z, y, reduction="none"), owners)
    for i in range(len(x)):
        # the evaluator's leak (the client's own encoding) is the white-box path's at batch one
        for g, ref in zip(got, leak.gradients[i], strict=True):
            torch.testing.assert_close(g[i], ref, rtol=1e-9, atol=1e-12)


# A victim's problem reads nothing of the others', but a batched evaluation rounds differently
# from one at batch one (measured: 1e-21 .. 3e-18 on values and gradients, float64), and L-BFGS
# amplifies that along the way: max |batched - alone| over the images, 8 iterations per stage of
# stages (4, 0), float64: 1e-11 (iDLG), 2e-14 (DLG); at 16 iterations 1e-9 and 8e-12. (A stage on
# only the last 2 tensors of this untrained network is flat -- gradients ~1e-8 -- and its line
# search decisions turn on rounding: the test leaves it out.)
@pytest.mark.slow
@pytest.mark.parametrize("idlg", [False, True], ids=["dlg", "idlg"])
def test_dlg_on_a_batch_gives_each_victim_what_it_gets_alone(idlg: bool) -> None:
    run = _pipeline("none")
    x, y = _mnist(3)
    aux, _ = _mnist(24, offset=100)
    leak = gradient_leak(run, x, y)  # type: ignore[arg-type]
    kw = dict(idlg=idlg, aux_images=aux, iterations=8, stages=(4, 0), starts=24)
    batched, labels = gradient_inversion(leak, (1, 16, 16), batch=3, **kw)  # type: ignore[arg-type]
    alone, labels_alone = gradient_inversion(leak, (1, 16, 16), batch=1, **kw)  # type: ignore[arg-type]
    assert torch.equal(labels, labels_alone)
    assert (batched - alone).abs().max() <= BATCH_TOL
    start, _ = gradient_inversion(leak, (1, 16, 16), idlg=idlg, aux_images=aux, iterations=1, stages=(2,),
                                  starts=24)
    assert (batched - start).abs().max() > 1e-3  # it moved: the comparison is not of two starts


def test_ggl_on_a_batch_gives_each_victim_what_it_gets_alone() -> None:
    run = _pipeline("none")
    x, y = _mnist(3)
    aux, _ = _mnist(16, offset=100)
    leak = gradient_leak(run, x, y)  # type: ignore[arg-type]
    torch.manual_seed(1)
    prior = ImagePrior((1, 16, 16), latent=8).double().eval().requires_grad_(False)
    kw = dict(population=4, generations=3, starts=16)
    batched, labels = ggl_inversion(leak, prior, aux, batch=12, **kw)  # type: ignore[arg-type]
    alone, labels_alone = ggl_inversion(leak, prior, aux, batch=4, **kw)  # type: ignore[arg-type]
    assert torch.equal(labels, labels_alone) and torch.equal(labels, y)
    assert (batched - alone).abs().max() <= BATCH_TOL


@pytest.mark.slow
def test_attack_bench_runs_in_tiny_mode() -> None:
    proc = subprocess.run([sys.executable, "bench/attacks.py", "--tiny"], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = {tuple(line.split()[:2]): line.split() for line in proc.stdout.splitlines()
            if line.split()[:1] in (["dlg"], ["idlg"])}
    for attack in ("dlg", "idlg"):
        for solver in ("scipy", "torch"):
            mse = float(rows[(attack, solver)][3])
            assert 0 < mse < 1, (attack, solver, proc.stdout)
        assert "speed scipy/torch" in " ".join(rows[(attack, "ratio")])
    assert float(rows[("idlg", "torch")][5]) == 1.0  # the analytic label


def test_the_scipy_reference_and_the_batched_solver_start_alike_and_both_descend() -> None:
    """attacks/dlg_reference.py (scipy's L-BFGS-B, one victim at a time) against the batched torch
    solver on the same iDLG problem: the same start and first step, then each lowers every victim's
    gradient-matching distance (measured here: to 0.22-0.67 of the first step's after 12
    iterations; the two solvers' end points within 1.9x of each other)."""
    from pgsl.attacks.dlg_reference import _Matching

    run = _pipeline("none")
    x, y = _mnist(2)
    aux, _ = _mnist(24, offset=100)
    leak = gradient_leak(run, x, y)  # type: ignore[arg-type]
    k = leak.num_classes

    def distances(images: torch.Tensor) -> list[float]:
        return [float(_Matching(leak, t, int(y[i]))(images[i:i + 1], t[leak.output_bias].reshape(1, k),
                                                    leak.trailing(0), create_graph=False))
                for i, t in enumerate(leak.gradients)]

    kw = dict(idlg=True, aux_images=aux, stages=(0,), starts=24)
    got = {(s, n): gradient_inversion(leak, (1, 16, 16), iterations=n, solver=s, **kw)  # type: ignore[arg-type]
           for s in ("torch", "scipy") for n in (1, 12)}
    assert all(torch.equal(labels, y) for _, labels in got.values())
    assert torch.allclose(got[("torch", 1)][0], got[("scipy", 1)][0], atol=1e-6)
    first = distances(got[("torch", 1)][0])
    final = {s: distances(got[(s, 12)][0]) for s in ("torch", "scipy")}
    for s, values in final.items():
        assert all(v < 0.85 * f for v, f in zip(values, first, strict=True)), (s, values, first)
    assert all(max(a, b) < 3 * min(a, b) for a, b in zip(final["torch"], final["scipy"], strict=True)), final
