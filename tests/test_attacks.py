"""The adversary's attacks (pgsl.attacks) on tiny real-MNIST runs: each beats the mean image
without reading the victims, the view serves only what an attack declares it needs, and a new
attack is one class and one registry entry."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from attack_views import poison, views_of
from probes import loaded
from typer.testing import CliRunner

from pgsl.attacks import ATTACKS, Attack, AttackerView, Budget, Need, Reconstruction, parse_budget
from pgsl.attacks.activation_matching import ActivationMatching, MatchingBudget
from pgsl.attacks.dlg import DLG, DLGBudget
from pgsl.attacks.gan import GAN, GANBudget
from pgsl.attacks.mean import MeanImage
from pgsl.attacks.mia import MIA, MIABudget
from pgsl.attacks.view import reconstruction_scores
from pgsl.checkpoint import load_checkpoint
from pgsl.experiments.privacy import PrivacyConfig, evaluate_privacy, privacy
from pgsl.experiments.results import PrivacyRow, read_rows

TINY = str(Path(__file__).parent / "tiny.toml")


@pytest.mark.slow
def test_attacks_beat_the_mean_image_on_an_undefended_run_without_reading_victims(
        runs: dict[str, Path]) -> None:
    _, victims, _, views = views_of(runs["none"])
    view = views["cut"]
    clean, baseline = poison(victims, view)
    # the baseline itself: the mean auxiliary image for every victim, whatever was observed
    mean = MeanImage()(view)
    assert torch.equal(mean.images, view.aux_images.mean(0, keepdim=True).expand_as(clean))
    for attack in (MIA(MIABudget(epochs=4)), ActivationMatching(MatchingBudget(victims=None, steps=150)),
                   GAN(GANBudget(pretrain_epochs=4, epochs=1))):  # GAN: MIA's decoder, then adversarial
        recon = attack(view).images
        assert torch.isfinite(recon).all() and recon.shape == clean.shape, attack.name
        s = reconstruction_scores(recon, clean)
        assert s["mse"].mean() < 0.5 * baseline["mse"].mean(), (attack.name, s["mse"].mean(),
                                                                 baseline["mse"].mean())
        assert s["ssim"].mean() > baseline["ssim"].mean() + 0.1, (attack.name, s["ssim"].mean())
    assert len(view.memo) == 1  # the GAN started from the decoder MIA fitted, not a second one


@pytest.mark.slow
def test_mia_trained_on_ssim_scores_higher_ssim_at_a_comparable_mse(runs: dict[str, Path]) -> None:
    _, victims, _, views = views_of(runs["none"])
    scores = {}
    for loss in ("mse", "mse+ssim"):
        recon = MIA(MIABudget(epochs=4, loss=loss))(dataclasses.replace(views["cut"], memo={})).images
        s = reconstruction_scores(recon, victims)
        scores[loss] = (float(s["mse"].mean()), float(s["ssim"].mean()))
    (mse, ssim_mse), (mse_both, ssim_both) = scores["mse"], scores["mse+ssim"]
    assert ssim_both > ssim_mse + 0.1, scores
    assert mse_both < 2 * mse, scores
    with pytest.raises(ValueError, match="unknown MIA loss 'l1'"):
        MIABudget(loss="l1")


@pytest.mark.slow
def test_attack_package_never_imports_data_loaders_or_the_server() -> None:
    """Read from ``sys.modules`` in a fresh interpreter after importing every attack module, so
    indirect imports count too: an attack cannot reach the victims' data or the server's model."""
    modules = loaded("import pkgutil, importlib\n"
                     "import pgsl.attacks\n"
                     "for m in pkgutil.iter_modules(pgsl.attacks.__path__):\n"
                     "    importlib.import_module('pgsl.attacks.' + m.name)")
    assert {"pgsl.attacks.dlg", "pgsl.attacks.ggl", "pgsl.attacks.gan"} <= set(modules)  # it ran
    forbidden = [m for m in modules
                 if m.startswith(("pgsl.data", "pgsl.server", "pgsl.recovery", "pgsl.experiments"))]
    assert not forbidden, f"the attack package loads {forbidden}"


@pytest.mark.parametrize("kind", ["none", "noise", "nopeek", "pgsl"])
def test_the_white_box_path_reproduces_the_auxiliary_observations(runs: dict[str, Path], kind: str) -> None:
    """For every target of every defence, ``view.path(aux_images)`` is what the pipeline answered
    (for the noise defence, under the same RNG), and it gives the attacker a gradient."""
    run, _, _, views = views_of(runs[kind], n_victims=4, n_aux=64)
    assert set(views) == {"cut", *run.server.model.observables()}
    for target, view in views.items():
        assert view.path is not None and Need.WHITE_BOX in view.holds()
        with torch.no_grad():
            if kind != "noise":  # deterministic pipelines: the view's own answers, image by image
                torch.testing.assert_close(view.path(view.aux_images), view.aux_observed,
                                           atol=1e-5, rtol=1e-5)
                torch.testing.assert_close(view.path(view.aux_images[:3]), view.aux_observed[:3],
                                           atol=1e-5, rtol=1e-5)
            torch.manual_seed(5)
            answer = run.client.query(view.aux_images)  # what the client sends, then what the
            if target != "cut":                         # server derives from it
                answer = run.server.model.observables()[target](answer)
            torch.manual_seed(5)
            torch.testing.assert_close(view.path(view.aux_images), answer, atol=1e-5, rtol=1e-5)
            if kind == "noise":  # and the noise is real: another draw answers differently
                assert (view.path(view.aux_images) - answer).abs().max() > 0.1
        x = view.aux_images[:2].clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(view.path(x).square().sum(), x)
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0, (kind, target)


def test_an_attack_the_view_cannot_serve_is_skipped_with_the_reason(runs: dict[str, Path]) -> None:
    """No client gradient flows from what the server derives: DLG runs on PGSL's cut and is left
    out, with the reason, on its recovered maps."""
    _, _, _, views = views_of(runs["pgsl"], n_victims=2, n_aux=16)
    assert DLG().missing(views["recovered"]) == {Need.GRADIENTS}
    with pytest.raises(ValueError, match="dlg cannot attack target 'recovered': it needs the victims' "
                                         "training-step gradients"):
        DLG()(views["recovered"])
    pc = PrivacyConfig(victims=4, aux=32, attacks=("mean", "dlg"),
                       budgets={"dlg": {"victims": 1, "iterations": 2, "starts": 4, "stages": (2,)}})
    rows, skipped = evaluate_privacy(runs["pgsl"], pc)
    assert [(r.target, r.attack, r.n_victims) for r in rows] == [
        ("cut", "mean", 4), ("cut", "dlg", 1), ("recovered", "mean", 4)]
    assert skipped == [f"pgsl / recovered / dlg: needs {Need.GRADIENTS}"]


@pytest.mark.slow
def test_the_attack_base_class_keeps_budgets_and_the_callers_rng(runs: dict[str, Path]) -> None:
    # a budget's victims limits what the attack is given, and so the rows' n_victims
    pc = PrivacyConfig(victims=6, aux=64, attacks=("mean", "mia"),
                       budgets={"mean": {"victims": 3}, "mia": {"epochs": 1}})
    rows, skipped = evaluate_privacy(runs["none"], pc)
    assert {r.attack: r.n_victims for r in rows} == {"mean": 3, "mia": 6} and skipped == []
    # an unknown knob is refused up front, naming the attack and its knobs
    with pytest.raises(ValueError, match=r"attack 'dlg' has no budget knob\(s\) \['iteratons'\]; "
                                         r"its knobs: .*iterations"):
        PrivacyConfig(attacks=("dlg",), budgets={"dlg": {"iteratons": 5}})
    with pytest.raises(ValueError, match="attack 'mia' has no budget knob"):
        parse_budget(MIABudget, {"steps": 3}, "mia")
    with pytest.raises(ValueError, match="unknown attack 'pgd'"):
        PrivacyConfig(attacks=("pgd",))
    with pytest.raises(TypeError, match="mia takes a MIABudget"):
        MIA(DLGBudget())
    # the global RNG is the caller's: left as it was, and the answer does not depend on it
    _, _, _, views = views_of(runs["none"], n_victims=4, n_aux=64)
    answers = []
    for caller_seed in (1, 2):
        for attack in (MIA(MIABudget(epochs=1)), GAN(GANBudget(pretrain_epochs=1, epochs=1))):
            torch.manual_seed(caller_seed)
            state = torch.get_rng_state()
            answers.append(attack(dataclasses.replace(views["cut"], memo={})).images)
            assert torch.equal(torch.get_rng_state(), state), attack.name
    assert torch.equal(answers[0], answers[2]) and torch.equal(answers[1], answers[3])


@dataclass(frozen=True)
class ShadeBudget(Budget):
    shade: float = 0.5


class Shade(Attack):
    """A toy attack: one grey image per victim, its level a budget knob."""

    name = "shade"
    title = "flat grey (toy)"
    needs = frozenset({Need.AUX})
    Budget = ShadeBudget
    seen: list[tuple[str, int]] = []

    def reconstruct(self, view: AttackerView) -> Reconstruction:
        assert isinstance(self.budget, ShadeBudget)
        Shade.seen.append((view.target, len(view.observed)))
        n, shape = len(view.observed), view.image_shape
        return Reconstruction(torch.full((n, *shape), self.budget.shade))


def test_a_new_attack_is_one_class_and_one_registry_entry(runs: dict[str, Path], tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(ATTACKS, "shade", Shade)
    Shade.seen = []
    out = tmp_path / "t1"
    pc = PrivacyConfig(victims=5, aux=32, attacks=("mean", "shade"),
                       budgets={"shade": {"shade": 0.25, "victims": 4}})
    rows = privacy([runs["none"], runs["pgsl"]], out, pc)
    assert Shade.seen == [("cut", 4), ("cut", 4), ("recovered", 4)]
    table = json.loads((out / "table1.json").read_text())
    assert read_rows(out / "table1.json", PrivacyRow) == rows
    shade = [r for r in rows if r.attack == "shade"]
    assert [(r.defense, r.target, r.n_victims) for r in shade] == [
        ("none", "cut", 4), ("pgsl", "cut", 4), ("pgsl", "recovered", 4)]
    assert all(r.mse_mean > 0 and r.paper_mse is None and r.label_accuracy is None for r in shade)
    # a flat guess is scored against the same victims wherever it is made
    assert len({(r.mse_mean, r.ssim_mean) for r in shade}) == 1
    assert table["titles"]["shade"] == "flat grey (toy)" and table["skipped"] == []
    assert "flat grey (toy): victims 4, shade 0.25" in table["protocol"]
    assert "| none | cut | flat grey (toy) | 4 |" in (out / "table1.md").read_text()
    saved = load_checkpoint(out / "recon_pgsl_recovered.pt")
    assert saved["defense"] == "pgsl" and saved["target"] == "recovered"
    assert torch.equal(saved["shade"], torch.full((4, 1, 28, 28), 0.25)) and "mean" not in saved
    # the whole table is cached by what produced it: the same runs and protocol read it back
    # without attacking; another protocol, or a table a kill left partial, is computed again
    stamp = (out / "table1.json").stat().st_mtime_ns
    Shade.seen = []
    assert privacy([runs["none"], runs["pgsl"]], out, pc) == rows and Shade.seen == []
    assert (out / "table1.json").stat().st_mtime_ns == stamp
    fewer = dataclasses.replace(pc, budgets={"shade": {"shade": 0.25, "victims": 2}})
    assert {r.n_victims for r in privacy([runs["none"], runs["pgsl"]], out, fewer)
            if r.attack == "shade"} == {2}
    table = json.loads((out / "table1.json").read_text())
    (out / "table1.json").write_text(json.dumps({**table, "key": None}))  # as a killed run leaves it
    Shade.seen = []
    privacy([runs["none"], runs["pgsl"]], out, fewer)
    assert Shade.seen == [("cut", 2), ("cut", 2), ("recovered", 2)]


def test_attacks_cli_lists_every_attack_and_refuses_an_unknown_knob(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pgsl.cli
    from pgsl.cli import app

    monkeypatch.setattr(pgsl.cli.console, "width", 250)  # one table row per attack
    listed = CliRunner().invoke(app, ["attacks"])
    assert listed.exit_code == 0, listed.output
    for name, cls in ATTACKS.items():
        assert any([cell.strip() for cell in line.split("│")[1:3]] == [name, cls.title]
                   for line in listed.output.splitlines()), name
    assert "iterations=150" in listed.output  # the budget knobs and their defaults
    args = ["privacy", str(tmp_path), "--out", str(tmp_path / "o"), "--budget"]
    bad = CliRunner().invoke(app, [*args, "dlg.iteratons=5"])
    assert bad.exit_code == 2
    assert "attack 'dlg' has no budget knob(s) ['iteratons']" in " ".join(bad.output.split())
    bad = CliRunner().invoke(app, [*args, "iterations=5"])
    assert bad.exit_code == 2 and "ATTACK.KNOB=VALUE" in " ".join(bad.output.split())
