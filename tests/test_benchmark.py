"""`pgsl benchmark`: every registered defence x setting x seed against every registered attack, its
summary statistics, and resuming a killed benchmark."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
from torch import Tensor
from typer.testing import CliRunner

import pgsl.attacks
import pgsl.defenses
from pgsl.attacks.base import Attack, Reconstruction
from pgsl.attacks.mean import MeanImage
from pgsl.attacks.mia import MIA
from pgsl.attacks.view import AttackerView, Need
from pgsl.cli import app
from pgsl.config import load_preset
from pgsl.defenses.base import Defense, Setting
from pgsl.defenses.noise import LaplaceNoise
from pgsl.defenses.none import VanillaSplit
from pgsl.experiments.benchmark import benchmark, heatmap_grid, matched, score, summarise
from pgsl.experiments.cache import StaleResult
from pgsl.experiments.plan import available_plans, load_plan, strengths
from pgsl.experiments.results import BenchmarkRow, read_rows
from pgsl.registry import Registry

TESTS = Path(__file__).parent
# loaded before the test's registries leave out the preset's defence
BASE = load_preset(str(TESTS / "tiny.toml")).replace(defense={"kind": "none"})


class Blackout(Defense):
    """A toy defence: sends zeros (nothing leaks, nothing is learned)."""

    summary = "toy: sends zeros"

    def perturb(self, a: Tensor) -> Tensor:
        return a * 0


class Echo(Attack):
    """A toy attack: answers the first auxiliary image for every victim."""

    name = "echo"
    title = "echo (toy)"
    needs = frozenset({Need.AUX})
    calls = 0

    def reconstruct(self, view: AttackerView) -> Reconstruction:
        Echo.calls += 1
        return Reconstruction(view.aux_images[:1].expand(len(view.observed), -1, -1, -1).clone())

TINY = load_plan("benchmark", "tiny")


def _row(defense: str, setting: str, seed: int, attack: str, mse: float, ssim: float, accuracy: float,
         target: str = "cut") -> BenchmarkRow:
    return BenchmarkRow(dataset="mnist", defense=defense, setting=setting, value=0.0, seed=seed,
                        attack=attack, target=target, n_victims=8, accuracy=accuracy, mse=mse, psnr=0.0,
                        ssim=ssim, epsilon=None, run=f"{defense}-{setting}-{seed}")


def test_summary_keeps_the_attackers_better_target_and_the_strongest_attack_over_seeds() -> None:
    rows = [_row("pgsl", "mu=0.55", s, "mean", 0.07, 0.34, acc) for s, acc in ((0, 0.90), (1, 0.92))]
    rows += [_row("pgsl", "mu=0.55", 0, "mia", 0.004, 0.60, 0.90, "cut"),
             _row("pgsl", "mu=0.55", 0, "mia", 0.002, 0.70, 0.90, "recovered"),  # the better view
             _row("pgsl", "mu=0.55", 1, "mia", 0.006, 0.50, 0.92, "cut"),  # the better view
             _row("pgsl", "mu=0.55", 1, "mia", 0.008, 0.65, 0.92, "recovered"),  # higher SSIM, worse MSE
             _row("pgsl", "mu=0.55", 0, "dlg", 0.030, 0.40, 0.90),
             _row("pgsl", "mu=0.55", 1, "dlg", 0.050, 0.45, 0.92)]
    (s,) = summarise(rows)
    assert (s.seeds, s.strongest) == (2, "mia")
    assert s.accuracy == pytest.approx(0.91) and s.accuracy_std == pytest.approx(math.sqrt(2e-4))
    assert s.mse == pytest.approx(0.004) and s.mse_std == pytest.approx(math.sqrt(8e-6))
    assert s.ssim == pytest.approx(0.60)  # the per-seed best targets' SSIMs, 0.70 and 0.50
    assert (s.ssim_max, s.ssim_max_attack) == (pytest.approx(0.60), "mia")  # the baseline is no attack
    # the heatmap's cell is the summary's number, not the highest SSIM of either target (0.675)
    attacks, defenses, grid = heatmap_grid(rows, {"pgsl": s})
    assert defenses == ["pgsl"] and grid[attacks.index("mia")][0] == pytest.approx(0.60)
    assert grid[attacks.index("dlg")][0] == pytest.approx(0.425)


def test_the_paper_plan_gives_ressfl_the_reference_bottleneck_at_the_paper_width() -> None:
    plans = {name: load_plan("benchmark", name) for name in available_plans("benchmark")}
    quick, paper = (strengths("ressfl", plans[n].settings) for n in ("quick", "paper"))
    assert [s.value for s in paper] == [s.value for s in quick] == [0.0, 0.3, 1.0, 3.0]
    assert {s.changes["defense"]["params"]["bottleneck"] for s in quick} == {2}
    assert {s.changes["defense"]["params"]["bottleneck"] for s in paper} == {8}
    assert all(p.privacy.budgets["mia"]["loss"] == "mse+ssim" for p in plans.values())


def test_score_and_matched_accuracy() -> None:
    rows = []
    for setting, acc, mse, ssim in (("w=1", 0.95, 0.01, 0.60), ("w=2", 0.93, 0.02, 0.38),
                                    ("w=3", 0.80, 0.05, 0.30)):
        rows += [_row("d", setting, 0, "mean", 0.07, 0.34, acc), _row("d", setting, 0, "mia", mse, ssim, acc)]
    rows += [_row("none", "default", 0, "mean", 0.07, 0.34, 0.955),
             _row("none", "default", 0, "mia", 0.001, 0.6, 0.955)]
    summary = summarise(rows)
    mine = [s for s in summary if s.defense == "d"]
    assert score(mine, baseline_ssim=0.34) == pytest.approx(0.93)  # 0.38 <= 0.34 + 0.05
    assert score(mine, baseline_ssim=0.30) == pytest.approx(0.80)
    assert score(mine[:1], baseline_ssim=0.34) is None
    chosen = matched(summary)
    # within 3 points of 95.5%: w=1 (95%) and w=2 (93%, the more private); w=3 is too costly
    assert chosen["d"].setting == "w=2" and chosen["none"].setting == "default"


@pytest.fixture
def registries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Registries with two real defences, a toy defence, two real attacks and a toy attack."""
    monkeypatch.setattr(pgsl.defenses, "DEFENSES", Registry("defence", {}))
    for name, cls in {"none": VanillaSplit, "noise": LaplaceNoise, "blackout": Blackout}.items():
        pgsl.defenses.register_defense(name, cls)  # as a plug-in registers itself at run time
    monkeypatch.setattr(LaplaceNoise, "settings", tuple(Setting.option("scale", b) for b in (0.5, 4.0)))
    monkeypatch.setattr(pgsl.attacks, "ATTACKS", Registry("attack", {}))
    for name, cls in {"mean": MeanImage, "mia": MIA, "echo": Echo}.items():
        pgsl.attacks.ATTACKS[name] = cls


@pytest.mark.usefixtures("registries")
def test_the_privacy_protocol_runs_every_registered_attack_by_default() -> None:
    from pgsl.experiments.privacy import PrivacyConfig

    assert PrivacyConfig().attacks == ("mean", "mia", "echo")


@pytest.mark.slow
@pytest.mark.usefixtures("registries")
def test_a_toy_defence_and_attack_appear_in_the_matrix_and_a_killed_benchmark_resumes(tmp_path: Path) -> None:
    # the tiny plan (read before the registries were narrowed) against every registered attack
    base, plan = BASE, TINY.narrowed(attacks=tuple(pgsl.attacks.ATTACKS))
    Echo.calls = 0
    summary = benchmark(base, tmp_path, plan)
    matrix = read_rows(tmp_path / "matrix.json", BenchmarkRow)
    cells = {(r.defense, r.setting, r.seed, r.attack) for r in matrix}
    settings = [("none", "default"), ("noise", "scale=0.5"), ("noise", "scale=4"),
                ("blackout", "default")]
    attacks = ("mean", "mia", "echo")
    assert cells == {(d, s, seed, a) for d, s in settings for seed in plan.seeds for a in attacks}
    assert Echo.calls == len(settings) * len(plan.seeds)
    assert {(s.defense, s.setting) for s in summary} == set(settings)
    # one cell, one value: the heatmap reads the summary's rows (the better target per seed)
    chosen = matched(summary)
    attack_names, defense_names, grid = heatmap_grid(matrix, chosen)
    for j, d in enumerate(defense_names):
        s = chosen[d]
        assert grid[attack_names.index(s.strongest)][j] == pytest.approx(s.ssim, abs=1e-12)
        assert grid[attack_names.index(s.ssim_max_attack)][j] == pytest.approx(s.ssim_max, abs=1e-12)
    # every run of a seed is attacked on the same victims with the same auxiliary images: the toy
    # attack, which ignores what it observes, scores the same everywhere within a seed
    for seed in plan.seeds:
        assert len({r.mse for r in matrix if r.attack == "echo" and r.seed == seed}) == 1
    for name in ("matrix.csv", "summary.csv", "summary.md", "heatmap.png", "frontier.png"):
        assert (tmp_path / name).stat().st_size > 0
    summary_json = json.loads((tmp_path / "summary.json").read_text())
    assert set(summary_json["scores"]) == {"none", "noise", "blackout"}
    assert "| blackout | default |" in (tmp_path / "summary.md").read_text()
    report = (tmp_path / "report.html").read_text()
    for s in summary:
        assert f"{100 * s.accuracy:.1f} ± {100 * s.accuracy_std:.1f}%" in report
    assert report.count("data:image/png;base64,") == 2  # the heatmap and the frontier
    # the toy defence on the frontier too: trained at its defaults, attacked, plotted, named
    from pgsl.experiments.frontier import frontier
    from pgsl.experiments.plan import arms

    points = frontier(base.replace(**plan.train), tmp_path / "frontier", arms(["blackout"]),
                      dataclasses.replace(plan.privacy, attacks=("mia",)))
    assert [(p.curve, p.run) for p in points] == [("blackout", "blackout")]
    assert (tmp_path / "frontier" / "frontier.png").stat().st_size > 0

    # killed after one attack's result was lost: only that one runs again, nothing is retrained
    (tmp_path / "matrix.json").unlink()
    (tmp_path / "attacks" / "noise-scale-4-seed1" / "echo.json").unlink()
    trained = {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").glob("*/checkpoint.pt")}
    again = benchmark(base, tmp_path, plan)
    assert Echo.calls == len(settings) * len(plan.seeds) + 1
    assert trained == {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").glob("*/checkpoint.pt")}
    assert [dataclasses.astuple(s) for s in again] == [dataclasses.astuple(s) for s in summary]

    # a cached attack from another protocol is attacked again; the others are read back
    others = {p: p.stat().st_mtime_ns for p in (tmp_path / "attacks").glob("*/m*.json")}  # mean, mia
    changed = dataclasses.replace(plan, privacy=dataclasses.replace(
        plan.privacy, attacks=attacks, budgets={"mia": plan.privacy.budgets["mia"], "echo": {"victims": 4}}))
    benchmark(base, tmp_path, changed)
    assert Echo.calls == 2 * len(settings) * len(plan.seeds) + 1
    assert len(others) == 2 * len(settings) * len(plan.seeds)
    assert others == {p: p.stat().st_mtime_ns for p in (tmp_path / "attacks").glob("*/m*.json")}
    echo = [r for r in read_rows(tmp_path / "matrix.json", BenchmarkRow) if r.attack == "echo"]
    assert {r.n_victims for r in echo} == {4}
    # a run folder trained under another configuration is refused, not reused or overwritten
    with pytest.raises(StaleResult, match=r"holds a run that was computed with other settings "
                                          r"\(train.lr: .* -> 0.5\)"):
        benchmark(base.replace(train={"lr": 0.5}), tmp_path, plan)
    assert trained == {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").glob("*/checkpoint.pt")}
    # a run moved away is trained again, and its attacks with it, not read from the old caches
    (tmp_path / "runs" / "none-seed0").rename(tmp_path / "elsewhere")
    benchmark(base, tmp_path, changed)
    assert Echo.calls == 2 * len(settings) * len(plan.seeds) + 2


def test_benchmark_cli_refuses_bad_input_clearly(tmp_path: Path) -> None:
    runner = CliRunner()
    bad_plan = runner.invoke(app, ["benchmark", "--out", str(tmp_path), "--plan", "huge"])
    assert bad_plan.exit_code == 2
    assert "benchmark plan 'huge' not found" in bad_plan.output
    assert "available: paper, quick, tiny" in bad_plan.output
    bad_attack = runner.invoke(app, ["benchmark", "--out", str(tmp_path), "--attacks", "mia,nope"])
    assert bad_attack.exit_code == 2 and "unknown attack 'nope'" in bad_attack.output
    bad_defence = runner.invoke(app, ["benchmark", "--out", str(tmp_path), "--defenses", "none,nope"])
    assert bad_defence.exit_code == 2 and "unknown defence 'nope'" in bad_defence.output
    assert not (tmp_path / "runs").exists()  # refused before any training
