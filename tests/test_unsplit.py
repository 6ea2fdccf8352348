"""UnSplit (Erdogan et al. 2022): the architecture-only attacker, its clone factory and its budget."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from pgsl.attacks import ATTACKS, AttackerView, Need, reconstruction_scores
from pgsl.attacks.mean import MeanImage
from pgsl.attacks.unsplit import UnSplit, UnSplitBudget, stretch, unsplit
from pgsl.data import to_float
from pgsl.experiments.privacy import PrivacyConfig, attacker_views, evaluate_privacy
from pgsl.runtime import Run, load_run

# main_iters x (input_iters + model_iters) = 5 x (10 + 10) steps on 16 victims of the tiny run
FAST = UnSplitBudget(victims=16, main_iters=5, input_iters=10, model_iters=10)


def _views(run_dir: Path, device: torch.device, n_victims: int, n_aux: int
           ) -> tuple[Run, torch.Tensor, dict[str, AttackerView]]:
    """The run as the evaluator loads it, its first training images as victims, the first test
    images as the attacker's auxiliary set, and the views by target."""
    run = load_run(run_dir, device, full_test=True)
    victims = to_float(run.dataset.train.images[:n_victims], device)
    labels = run.dataset.train.labels[:n_victims].to(device)
    aux = to_float(run.dataset.test.images[:n_aux], device)
    return run, victims, {v.target: v for v in attacker_views(run, victims, labels, aux, 0)}


def test_unsplit_beats_the_mean_image_without_victims_or_auxiliary_data(
        runs: dict[str, Path], device: torch.device) -> None:
    _, victims, views = _views(runs["none"], device, n_victims=16, n_aux=256)
    view = views["cut"]
    clean = victims.clone()
    victims.fill_(float("nan"))  # the view holds no alias of the victims' images
    baseline = reconstruction_scores(MeanImage()(view).images, clean)
    # the attacker has no data: its auxiliary images are NaN (their shape still gives the images')
    blind = dataclasses.replace(view, aux_images=torch.full_like(view.aux_images, float("nan")))
    assert UnSplit().missing(blind) == set()
    recon = UnSplit(FAST)(blind).images
    assert recon.shape == clean.shape and torch.isfinite(recon).all()
    assert recon.min() >= 0 and recon.max() <= 1
    s = reconstruction_scores(recon, clean)
    # measured (CPU, seed 0): MSE 0.0092 against 0.0634 for the mean image, SSIM 0.896 against
    # 0.359. The bars (MSE under 0.3x, SSIM 0.3 above the mean image's) fail for what a broken
    # attack returns: its grey start never updated (MSE 0.23, SSIM 0.003), that start stretched
    # (black), uniform noise (MSE 0.31, SSIM 0.003), and the mean image itself.
    mse, ssim = float(s["mse"].mean()), float(s["ssim"].mean())
    bar_mse, bar_ssim = 0.3 * float(baseline["mse"].mean()), float(baseline["ssim"].mean()) + 0.3
    assert mse < bar_mse and ssim > bar_ssim, (mse, ssim, baseline["mse"].mean(), baseline["ssim"].mean())
    g = torch.Generator().manual_seed(0)
    for broken in (torch.full_like(clean, 0.5), torch.zeros_like(clean),
                   torch.rand(clean.shape, generator=g).to(clean.device)):
        b = reconstruction_scores(broken, clean)
        assert float(b["mse"].mean()) > bar_mse and float(b["ssim"].mean()) < bar_ssim


def test_unsplit_refuses_a_view_without_a_clone(runs: dict[str, Path]) -> None:
    _, _, views = _views(runs["none"], torch.device("cpu"), n_victims=2, n_aux=8)
    bare = dataclasses.replace(views["cut"], clone=None)
    assert Need.ARCHITECTURE in views["cut"].holds() and Need.ARCHITECTURE not in bare.holds()
    assert UnSplit.needs == frozenset({Need.ARCHITECTURE})  # no auxiliary data, no weights
    with pytest.raises(ValueError, match="unsplit cannot attack target 'cut': it needs the client "
                                         "pipeline's architecture, without its weights"):
        UnSplit(FAST)(bare)
    assert views["cut"].first(1).clone is views["cut"].clone
    assert ATTACKS["unsplit"] is UnSplit


@pytest.mark.parametrize("kind", ["none", "noise", "nopeek", "pgsl"])
def test_the_clone_is_a_fresh_seeded_copy_of_each_targets_pipeline(runs: dict[str, Path], kind: str) -> None:
    """Same seed, same initial weights; another seed, others; never the client's own. Loaded with
    the client's weights (and PGSL's surrogate), the clone answers what the client answered:
    the clone is the pipeline's architecture, and only the weights are missing."""
    run, _, views = _views(runs[kind], torch.device("cpu"), n_victims=2, n_aux=16)
    assert set(views) == {"cut", *run.server.model.observables()}
    trained = run.client.segment.state_dict()
    for target, view in views.items():
        assert view.clone is not None
        a, b, c = view.clone(3), view.clone(3), view.clone(4)
        sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
        assert [n for n, _ in a.named_parameters()] and all(p.requires_grad for p in a.parameters())
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
        assert any(not torch.equal(sa[k], sc[k]) for k in sa if k.endswith("weight"))
        assert not torch.equal(sa["weights.conv1.0.weight"], trained["conv1.0.weight"])
        x = view.aux_images[:5].clone().requires_grad_(True)
        out = a(x)
        assert out.shape == (5, *view.observed.shape[1:]), (kind, target)
        grads = torch.autograd.grad(out.square().sum(), [x, *a.parameters()])
        assert all(torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads), (kind, target)
        a.weights.load_state_dict(trained)
        a.encode.__self__.load_state_dict(run.client.defense.state_dict())  # type: ignore[attr-defined]
        with torch.no_grad():
            torch.manual_seed(5)  # the noise defence: the same draws on both sides
            got = a(view.aux_images)
            torch.manual_seed(5)
            torch.testing.assert_close(got, view.path(view.aux_images), atol=1e-5, rtol=1e-5)
            if kind != "noise":
                torch.testing.assert_close(got, view.aux_observed, atol=1e-5, rtol=1e-5)


def test_unsplit_batches_are_a_memory_knob_and_the_seed_fixes_the_answer(runs: dict[str, Path]) -> None:
    _, _, views = _views(runs["none"], torch.device("cpu"), n_victims=6, n_aux=8)
    view = views["cut"]
    small = dict(victims=None, main_iters=2, input_iters=3, model_iters=3)
    whole = UnSplit(UnSplitBudget(**small, batch_size=64))(view).images
    chunked = UnSplit(UnSplitBudget(**small, batch_size=4))(view).images
    torch.testing.assert_close(chunked, whole, atol=1e-4, rtol=0)
    assert torch.equal(UnSplit(UnSplitBudget(**small), seed=0)(view).images, whole)
    assert not torch.equal(UnSplit(UnSplitBudget(**small), seed=1)(view).images, whole)
    noisy = UnSplit(UnSplitBudget(**small, init="noise"))(view).images
    assert not torch.allclose(noisy, whole, atol=1e-3)
    # the clone is fitted in place: its weights move, and the images do too
    clone = view.clone(0)
    before = [p.detach().clone() for p in clone.parameters()]
    out = unsplit(clone, view.observed, view.image_shape, main_iters=1, input_iters=2, model_iters=2,
                  lr_input=1.0, lr_model=1e-2, tv=0.2, normalize=False)
    assert any(not torch.equal(p, q) for p, q in zip(clone.parameters(), before, strict=True))
    assert not torch.allclose(out, torch.full_like(out, 0.5))


def test_stretch_maps_each_image_onto_the_unit_range() -> None:
    x = torch.stack([torch.linspace(0.2, 0.4, 16).view(1, 4, 4), torch.full((1, 4, 4), 0.3)])
    y = stretch(x)
    assert float(y[0].min()) == 0.0 and float(y[0].max()) == pytest.approx(1.0)
    torch.testing.assert_close(y[0], (x[0] - 0.2) / 0.2)
    assert torch.equal(y[1], torch.zeros_like(y[1]))


@pytest.mark.parametrize("knobs", [{"main_iters": 0}, {"input_iters": 0}, {"batch_size": 0},
                                   {"lr_input": 0.0}, {"lr_model": -1.0}, {"tv": -0.1},
                                   {"init": "pink"}, {"victims": 0}])
def test_a_bad_budget_is_refused(knobs: dict) -> None:
    with pytest.raises(ValueError):
        UnSplitBudget(**knobs)


def test_unsplit_is_scored_on_every_target(runs: dict[str, Path]) -> None:
    pc = PrivacyConfig(victims=4, aux=32, attacks=("mean", "unsplit"),
                       budgets={"unsplit": {"main_iters": 1, "input_iters": 2, "model_iters": 2}})
    rows, skipped = evaluate_privacy(runs["pgsl"], pc)
    assert [(r.target, r.attack, r.n_victims) for r in rows] == [
        ("cut", "mean", 4), ("cut", "unsplit", 4), ("recovered", "mean", 4), ("recovered", "unsplit", 4)]
    assert skipped == [] and all(0 <= r.mse_mean <= 1 for r in rows)
