"""Table II: the test-time attacks, our JSMA against ART's, and `pgsl robustness` end to end."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from pgsl.client.pixel_attack import jsma
from pgsl.client.surrogate import Surrogate, train_surrogate
from pgsl.config import load_preset
from pgsl.data import load_dataset, to_float
from pgsl.experiments.privacy import PrivacyConfig, privacy
from pgsl.experiments.results import RobustnessRow, read_rows
from pgsl.experiments.robustness import ATTACKS, CRAFTERS, RobustnessConfig, ShiftedLogits, craft

TINY = str(Path(__file__).parent / "tiny.toml")


@pytest.fixture(scope="module")
def mnist_model() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A small CNN trained on 4,000 real MNIST digits (~87% on the test sample), and 100 test images."""
    torch.manual_seed(0)
    data = load_dataset(load_preset(TINY).replace(data={"limit_train": 4000, "limit_test": 200}).data)
    model = Surrogate(1, 10, 16)
    train_surrogate(model, data.train, epochs=2, batch_size=32, seed=0)
    model.eval()
    x, y = to_float(data.test.images[:100]), data.test.labels[:100]
    with torch.no_grad():
        assert (model(x).argmax(1) == y).float().mean() > 0.75
    return model, x, y


@pytest.mark.slow
def test_our_jsma_agrees_with_art_saliency_map_method(mnist_model) -> None:
    """Same model, images, random targets, theta 1 and a 10% budget. ART ranks features by the
    target's gradient alone, we by Papernot's two-condition saliency; stated tolerance: success
    rates within 0.15, mean changed pixels (successful images) within 30%, and the budget kept."""
    from art.attacks.evasion import SaliencyMapMethod
    from art.estimators.classification import PyTorchClassifier

    model, x, y = mnist_model
    target = (y + torch.randint(1, 10, y.shape, generator=torch.Generator().manual_seed(0))) % 10
    ours = jsma(model, x, target, pixels=0.1, pixels_per_step=2, theta=1.0, targeted=True,
                stop_when_fooled=True).attacked
    clf = PyTorchClassifier(model, loss=nn.CrossEntropyLoss(), input_shape=(1, 28, 28), nb_classes=10,
                            clip_values=(0.0, 1.0))
    art = torch.from_numpy(SaliencyMapMethod(clf, theta=1.0, gamma=0.1, batch_size=100, verbose=False)
                           .generate(x.numpy(), y=target.numpy()))
    stats = {}
    for name, adv in (("ours", ours), ("art", art)):
        with torch.no_grad():
            ok = model(adv).argmax(1) == target
        changed = (adv != x).flatten(1).sum(1).float()
        stats[name] = (float(ok.float().mean()), float(changed[ok].mean()), int(changed.max()))
    assert stats["ours"][0] > 0.5, stats
    assert abs(stats["ours"][0] - stats["art"][0]) <= 0.15, stats
    assert abs(stats["ours"][1] - stats["art"][1]) <= 0.3 * stats["art"][1], stats
    assert stats["ours"][2] <= round(0.1 * 784), stats
    # stopping when fooled: an image already of the target class is left untouched
    same = jsma(model, x[:4], model(x[:4]).argmax(1), pixels=0.1, targeted=True, stop_when_fooled=True)
    assert torch.equal(same.attacked, x[:4])


@pytest.mark.slow
def test_every_test_time_attack_lowers_accuracy(mnist_model, monkeypatch: pytest.MonkeyPatch) -> None:
    model, x, y = mnist_model
    rc = RobustnessConfig(cw_steps=50)
    with torch.no_grad():
        clean = float((model(x).argmax(1) == y).float().mean())
    assert tuple(CRAFTERS) == ATTACKS  # the registry holds the default set, in table order
    for attack in CRAFTERS:
        adv = craft(model, x, y, attack, rc, 10)
        assert adv.shape == x.shape and adv.min() >= 0 and adv.max() <= 1
        with torch.no_grad():
            acc = float((model(adv).argmax(1) == y).float().mean())
        assert acc < clean - 0.3, (attack, clean, acc)
        if attack in ("fgsm", "bim"):  # L-inf attacks stay in their ball
            assert float((adv - x).abs().max()) <= rc.fgsm_eps + 1e-6
    # a crafter is a registry entry: craft() batches it and hands it the seeded generator
    calls = []

    def flip(model: nn.Module, xb: torch.Tensor, yb: torch.Tensor, rc: RobustnessConfig, k: int,
             g: torch.Generator) -> torch.Tensor:
        calls.append((len(xb), k, int(torch.randint(1000, (1,), generator=g))))
        return 1 - xb

    monkeypatch.setitem(CRAFTERS, "flip", flip)
    assert torch.equal(craft(model, x, y, "flip", RobustnessConfig(batch_size=64), 10), 1 - x)
    assert [c[:2] for c in calls] == [(64, 10), (36, 10)] and calls[0][2] != calls[1][2]
    with pytest.raises(ValueError, match="unknown attack 'pgd'"):
        craft(model, x, y, "pgd", rc, 10)


def test_shifted_logits_keep_every_difference_and_are_positive() -> None:
    z = torch.randn(5, 10) * 10 - 20
    lin = nn.Linear(10, 10)
    shifted = ShiftedLogits(lin)(z)
    ref = lin(z)
    assert (shifted > 0).all()
    np.testing.assert_allclose((shifted[:, :, None] - shifted[:, None, :]).detach().numpy(),
                               (ref[:, :, None] - ref[:, None, :]).detach().numpy(), atol=1e-4)


@pytest.mark.slow
def test_robustness_cli_writes_table2_with_every_model_and_reconstruction_rows(
        runs: dict[str, Path], tmp_path: Path) -> None:
    priv = tmp_path / "priv"
    privacy([runs["none"]], priv, PrivacyConfig(victims=64, aux=300, attacks=("mia",),
                                                budgets={"mia": {"epochs": 1}}))
    out = tmp_path / "rob"
    cmd = [sys.executable, "-m", "pgsl", "robustness", str(runs["pgsl"]), str(runs["none"]),
           "--out", str(out), "--n-test", "64", "--cw-steps", "5", "--bim-steps", "3",
           "--reconstructions", str(priv / "recon_none_cut.pt"),
           "--reconstructions", str(priv / "recon_none_cut.pt")]  # the same victims twice: one control
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = read_rows(out / "table2.json", RobustnessRow)
    # one-stream models: one row, stream "-"; PGSL: each stream, then its decision
    assert [(row.defense, row.stream) for row in rows] == [
        ("-", "-"), ("pgsl", "S_a"), ("pgsl", "S_f"), ("pgsl", "S_r"), ("pgsl", "decision"), ("none", "-"),
        ("-", "-"), ("none", "-"), ("none", "-")]
    rows = rows[:-1]  # the second file's row
    assert [row.model for row in rows[:-2]] == [
        "plain CNN (centralised)", *["pgsl (pgsl)"] * 4, "none (none)"]
    assert rows[0].paper == {"jsma": 65.4, "cw": 58.6, "bim": 81.2, "fgsm": 83.8}
    assert [row.paper_clean for row in rows] == [None, 65.4, 86.6, 99.2, 99.8, None, None, None]
    # the control: the same CNN on the same 64 victims' clean images, then on their reconstructions
    assert rows[-2].model == ("plain CNN trained on the 64 victims' clean images (control for the "
                              "reconstruction rows)")
    assert rows[-1].model == "plain CNN trained on 64 MIA reconstructions (none cut, recon_none_cut)"
    assert rows[-1].adversarial == {} == rows[-2].adversarial and rows[-1].n_test == 64
    for row in rows:  # accuracies are counts over the same 64 test images (rounded to 4 places)
        accs = [row.clean, *row.adversarial.values()]
        assert all(abs(a - round(64 * a) / 64) <= 5e-5 for a in accs), row
    for row in rows[:-2]:
        assert row.n_test == 64 and list(row.adversarial) == ["jsma", "cw", "bim", "fgsm"]
    assert "adversarial.jsma" in (out / "table2.csv").read_text().splitlines()[0]
    md = (out / "table2.md").read_text()
    assert "white-box against the plain CNN" in md and "| pgsl (pgsl) | decision |" in md
    assert (out / "fig5.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "plain_cnn.pt").is_file() and (out / "adversarial.pt").is_file()
    # the same runs, reconstructions and protocol again: the table is read back, not recomputed
    stamp = (out / "table2.json").stat().st_mtime_ns
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and (out / "table2.json").stat().st_mtime_ns == stamp, again.stderr[-2000:]
    bad = subprocess.run(cmd[:-2] + ["--attacks", "pgd"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "unknown attack" in bad.stderr


def test_a_smaller_reconstruction_set_trains_for_as_many_steps_with_its_control(
        runs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pgsl.checkpoint import save_checkpoint
    from pgsl.experiments import robustness as rob
    from pgsl.runtime import load_run

    run = load_run(runs["none"], torch.device("cpu"))
    g = torch.Generator().manual_seed(0)
    clean, labels = torch.rand(64, 1, 28, 28, generator=g), torch.randint(0, 10, (64,), generator=g)
    path = tmp_path / "recon_x_cut.pt"
    save_checkpoint(path, {"labels": labels, "clean": clean, "defense": "none", "target": "cut",
                           "mia": clean.clone(), "dlg": clean[:16].clone()})
    seen: list[tuple[int, int]] = []
    fit = rob.fit

    def recording_fit(model: nn.Module, images: torch.Tensor, *args: object, epochs: int,
                      **kw: object) -> object:
        seen.append((len(images), epochs))
        return fit(model, images, *args, epochs=epochs, **kw)  # type: ignore[arg-type]
    monkeypatch.setattr(rob, "fit", recording_fit)
    x, y = to_float(run.dataset.test.images[:32]), run.dataset.test.labels[:32]
    controls: set[tuple[int, int]] = set()
    rows = rob._reconstruction_rows(path, run, x, y, RobustnessConfig(recon_epochs=2), {}, controls)
    # 16 images train 4x the epochs of 64: the same number of steps; one control per victims' set
    assert seen == [(64, 2), (64, 2), (16, 8), (16, 8)]  # in the registry's order: MIA, then DLG
    assert [r.model.split(" (")[0] for r in rows] == [
        "plain CNN trained on the 64 victims' clean images", "plain CNN trained on 64 MIA reconstructions",
        "plain CNN trained on the 16 victims' clean images", "plain CNN trained on 16 DLG reconstructions"]
    # the same victims again: no second control
    assert len(rob._reconstruction_rows(path, run, x, y, RobustnessConfig(recon_epochs=2), {}, controls)) == 2
    # a plan may name the attacks whose reconstructions train a CNN: the others are left out
    seen.clear()
    only = RobustnessConfig(recon_epochs=2, recon_attacks=("mia",))
    assert [r.model.split(" (")[0] for r in rob._reconstruction_rows(path, run, x, y, only, {}, set())] == [
        "plain CNN trained on the 64 victims' clean images", "plain CNN trained on 64 MIA reconstructions"]
    assert seen == [(64, 2), (64, 2)]


def test_a_missing_torchattacks_is_named_before_any_work(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from pgsl.cli import app
    from pgsl.experiments.reproduce import reproduce
    from pgsl.experiments.robustness import robustness
    from pgsl.extras import MissingExtra

    monkeypatch.setitem(sys.modules, "torchattacks", None)  # what an install without the extra sees
    with pytest.raises(MissingExtra, match="needs torchattacks, which is not installed .extra 'robustness'"):
        robustness([tmp_path / "no-run"], tmp_path / "t2", RobustnessConfig(attacks=("jsma", "fgsm")))
    with pytest.raises(MissingExtra, match="extra 'robustness'"):
        reproduce(load_preset(TINY), TINY, tmp_path / "rep", plan="tiny")
    assert not (tmp_path / "rep" / "runs").exists()  # refused before training anything
    # JSMA alone is pgsl's own: no extra needed (the missing run is what is reported then)
    with pytest.raises(FileNotFoundError, match="not a trained run"):
        robustness([tmp_path / "no-run"], tmp_path / "t2", RobustnessConfig(attacks=("jsma",)))
    r = CliRunner().invoke(app, ["robustness", str(tmp_path / "no-run"), "--out", str(tmp_path / "t2"),
                                 "--attacks", "fgsm"])
    assert r.exit_code == 2 and "scripts/setup.sh" in " ".join(r.output.split())
