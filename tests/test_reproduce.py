"""Fig. 3 (the mu sweep), Table II (robustness) and the reproduce report, on tiny real-MNIST runs.

One tiny ``pgsl reproduce`` -- the README's main command, run as a user runs it -- is shared by
every reproduce test (module fixture); they read its typed rows back with ``read_rows``."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pgsl.attacks import ATTACKS
from pgsl.experiments.plan import load_plan
from pgsl.experiments.privacy import PAPER_MSE
from pgsl.experiments.results import (
    FrontierPoint,
    HijackRow,
    MuSweepRow,
    PrivacyRow,
    RobustnessRow,
    read_rows,
)
from pgsl.experiments.robustness import PAPER

TINY = str(Path(__file__).parent / "tiny.toml")
REPRODUCE = [sys.executable, "-m", "pgsl", "reproduce", "--dataset", "mnist", "--preset", TINY,
             "--plan", "tiny"]
MAIN = {"pgsl": "pgsl", "none": "none", "noise": "noise-scale-0.5", "nopeek": "nopeek-weight-0.5"}


@pytest.mark.slow
def test_mu_sweep_cli_writes_curve_and_reports_the_attacked_reference(tmp_path: Path) -> None:
    out = tmp_path / "mu"
    cmd = [sys.executable, "-m", "pgsl", "mu-sweep", "--out", str(out), "--preset", TINY,
           "--images", "32", "--mus", "0.15,0.55"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = read_rows(out / "mu_sweep.json", MuSweepRow)
    assert [(row.dataset, row.mu, row.n_images, row.solver) for row in rows] == [
        ("mnist", 0.0, 32, "apg"), ("mnist", 0.15, 32, "apg"), ("mnist", 0.55, 32, "apg")]
    # mu 0 is the attacked image: the 2-pixel attack moved it away from the clean one
    assert 0 < rows[0].mse_mean < 0.05
    assert all(0 < row.mse_mean < 1 for row in rows[1:])
    summary = json.loads((out / "mu_sweep.json").read_text())
    best = min(rows[1:], key=lambda row: row.mse_mean)
    assert summary["best_mu"] == {"mnist": best.mu} and summary["paper_best_mu"] == 0.55
    assert f"lowest MSE at mu = {best.mu:g}" in " ".join(r.stdout.split())
    assert (out / "mu_sweep.png").read_bytes()[:4] == b"\x89PNG"
    # ADMM solves the same problem: the same curve, in fewer iterations
    out_admm = tmp_path / "mu_admm"
    r = subprocess.run(cmd[:4] + ["--out", str(out_admm)] + cmd[6:] + ["--solver", "admm"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    admm_rows = read_rows(out_admm / "mu_sweep.json", MuSweepRow)
    assert [row.solver for row in admm_rows] == ["admm"] * 3
    for apg_row, admm_row in zip(rows[1:], admm_rows[1:], strict=True):
        assert abs(apg_row.mse_mean - admm_row.mse_mean) < 1e-5
        assert admm_row.iterations < apg_row.iterations
    # refused before any work (in-process: no interpreter to start)
    from pgsl.cli import app

    for args, message in ((["--mus", "0,0.5"], "positive"), (["--solver", "alm"], "apg or admm")):
        bad = CliRunner().invoke(app, [*cmd[3:-2], *args])
        assert bad.exit_code == 2 and message in " ".join(bad.output.split()), bad.output


class _Balanced(HTMLParser):
    """Fails on a closing tag that does not match the open one; void elements need no close."""

    VOID = {"meta", "img", "br", "hr", "link", "input"}

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.images: list[bytes] = []
        self.tables = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            src = dict(attrs)["src"] or ""
            assert src.startswith("data:image/png;base64,"), src[:40]
            self.images.append(base64.b64decode(src.split(",", 1)[1], validate=True))
        if tag == "table":
            self.tables += 1
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack[-1] == tag, (tag, self.stack[-3:])
        self.stack.pop()


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("reproduce") / "rep"
    r = subprocess.run([*REPRODUCE, "--out", str(out)], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    return out


@pytest.mark.slow
def test_reproduce_writes_a_valid_self_contained_report(reproduced: Path) -> None:
    out = reproduced
    text = (out / "report.html").read_text()
    assert text.startswith("<!DOCTYPE html>")
    parser = _Balanced()
    parser.feed(text)
    parser.close()
    assert parser.stack == []
    assert parser.tables == 6  # runs, Table I, hijack, Table II, mu sweep, frontier
    # the first screen: one sentence per section, linked to it, read from the section's numbers
    summary = text[text.index("<h2"):text.index('<h2 id="runs">')]
    for anchor in ("table1", "hijack", "table2", "mu", "frontier"):
        assert f'href="#{anchor}"' in summary and f'<h2 id="{anchor}">' in text
    strongest = min((r for r in read_rows(out / "privacy" / "table1.json", PrivacyRow)
                     if r.defense == "pgsl" and r.attack != "mean"), key=lambda r: r.mse_mean)
    assert f"({strongest.attack}, {strongest.target}) reaches MSE {strongest.mse_mean:.4f}" in summary
    # a hijack still above the mean image after the plan's steps is called what it is
    (fsha,) = [r for r in read_rows(out / "hijack" / "hijack.json", HijackRow) if r.defense == "pgsl"]
    unconverged = fsha.mse_mean >= fsha.mean_image_mse
    assert (": not yet converged, which is no protection" in summary) == unconverged
    # every figure in the report is a file this run produced, byte for byte
    produced = {p.read_bytes() for p in out.rglob("*.png")}
    assert len(parser.images) == len(produced) == 5 + 1 + 1 + 1  # 5 Fig. 4 grids, Fig. 5, Fig. 3, frontier
    assert set(parser.images) == produced
    assert sorted(p.name for p in (out / "privacy").glob("fig4_*.png")) == [
        "fig4_noise-scale-0.5_cut.png", "fig4_none_cut.png", "fig4_nopeek-weight-0.5_cut.png",
        "fig4_pgsl_cut.png", "fig4_pgsl_recovered.png"]
    # every number of every table in the report comes from this run's typed rows
    for r in read_rows(out / "privacy" / "table1.json", PrivacyRow):
        assert f"{r.mse_mean:.4f} ± {r.mse_std:.4f}" in text
        assert r.paper_mse is None or f"<td>{r.paper_mse}</td>" in text
    for t in read_rows(out / "robustness" / "table2.json", RobustnessRow):
        assert f"{100 * t.clean:.1f}%" in text
    hijacked = read_rows(out / "hijack" / "hijack.json", HijackRow)
    assert sorted(h.defense for h in hijacked) == ["noise", "none", "nopeek", "pgsl"]
    for h in hijacked:
        assert f"{h.mse_mean:.4f} ± {h.mse_std:.4f}" in text
    for m in read_rows(out / "mu_sweep" / "mu_sweep.json", MuSweepRow):
        assert f"{m.mse_mean:.5f}" in text
    for f in read_rows(out / "frontier" / "frontier.json", FrontierPoint):
        assert f"{f.mse:.4f} ± {f.mse_std:.4f}" in text
    assert "99.8%" in text and "paper" in text  # the paper's figures beside ours
    for metrics_path in (out / "runs").glob("*/metrics.json"):  # the decision's balanced accuracy
        m = json.loads(metrics_path.read_text())
        assert f"{100 * m['test_metrics']['decision']['balanced_accuracy']:.2f}%" in text


@pytest.mark.slow
def test_reproduce_table1_attacks_every_target_of_every_run_within_the_plans_budgets(
        reproduced: Path) -> None:
    rows = read_rows(reproduced / "privacy" / "table1.json", PrivacyRow)
    everything = ("mean", "mia", "gan", "activation", "unsplit", "dlg", "idlg", "ggl")
    black_box = ("mean", "mia", "gan", "activation", "unsplit")  # what needs no client gradient
    expected = [(d, "cut", a) for d in MAIN for a in everything]
    expected[8:8] = [("pgsl", "recovered", a) for a in black_box]
    assert [(r.defense, r.target, r.attack) for r in rows] == expected
    assert {r.run for r in rows} == {str(reproduced / "runs" / name) for name in MAIN.values()}
    table = json.loads((reproduced / "privacy" / "table1.json").read_text())
    assert table["skipped"] == [f"pgsl / recovered / {a}: needs the victims' training-step gradients "
                                "of the client segment's weights" for a in ("dlg", "idlg", "ggl")]
    budgets = {"mean": 32, "mia": 32, "gan": 32, "activation": 4, "unsplit": 4, "dlg": 2, "idlg": 2,
               "ggl": 2}
    assert all(r.n_victims == budgets[r.attack] and r.dataset == "mnist" for r in rows)
    assert all(r.paper_mse == PAPER_MSE["mnist"].get((r.attack, r.defense, r.target)) for r in rows)
    # every cell of the paper's Table I but DLG's and iDLG's on the recovered maps (left out above)
    assert {(r.attack, r.defense, r.target) for r in rows if r.paper_mse is not None} == set(
        PAPER_MSE["mnist"]) - {("dlg", "pgsl", "recovered"), ("idlg", "pgsl", "recovered")}
    # the trivial baseline ignores the observation: one score for every target of every run
    assert len({(r.mse_mean, r.ssim_mean) for r in rows if r.attack == "mean"}) == 1
    # iDLG and GGL read the label off the last layer's gradient: exact
    assert all(r.label_accuracy == 1.0 for r in rows if r.attack in ("idlg", "ggl"))
    assert all(r.label_accuracy is None for r in rows if r.attack in black_box)


@pytest.mark.slow
def test_reproduce_frontier_and_table2_reuse_the_main_runs(reproduced: Path) -> None:
    table1 = read_rows(reproduced / "privacy" / "table1.json", PrivacyRow)
    points = read_rows(reproduced / "frontier" / "frontier.json", FrontierPoint)
    assert [(p.curve, p.run) for p in points] == [  # the plan's defences in its order, titled
        ("PGSL", "pgsl"), ("vanilla split", "none"), ("Laplacian noise (scale)", "noise-scale-0.5"),
        ("NoPeek (weight)", "nopeek-weight-0.5")]
    assert sorted(p.name for p in (reproduced / "runs").iterdir() if p.is_dir()) == sorted(MAIN.values())
    for p in points:  # Table I's learned-inversion scores, the attacker's better view; no new attack
        mia = [r for r in table1 if r.run == str(reproduced / "runs" / p.run) and r.attack == "mia"]
        best = min(mia, key=lambda r: r.mse_mean)
        assert (p.mse, p.mse_std, p.target, p.n_victims) == (best.mse_mean, best.mse_std, best.target, 32)
        metrics = json.loads((reproduced / "runs" / p.run / "metrics.json").read_text())
        assert p.accuracy == metrics["test_accuracy"]["decision"] and p.n_test == 128
    rows = read_rows(reproduced / "robustness" / "table2.json", RobustnessRow)
    assert [(r.defense, r.stream) for r in rows[:8]] == [
        ("-", "-"), ("pgsl", "S_a"), ("pgsl", "S_f"), ("pgsl", "S_r"), ("pgsl", "decision"),
        ("none", "-"), ("noise", "-"), ("nopeek", "-")]
    assert all(r.n_test == 32 and list(r.adversarial) == ["jsma", "cw", "bim", "fgsm"] for r in rows[:8])
    # then a CNN trained on each attack's reconstructions of each target (the mean image is no
    # reconstruction; the gradient attacks have none of the recovered maps)
    # reconstructions, file by file in name order (recon_noise-0.5_cut.pt first), each set of
    # victims first with its control (the same victims for every run: one control per count)
    controls = [r for r in rows[8:] if r.defense == "-"]
    tiny = load_plan("reproduce", "tiny").privacy
    budgets = tiny.budgets
    counts = (tiny.victims, budgets["activation"]["victims"], budgets["dlg"]["victims"])
    assert [r.model.split(" (")[0] for r in controls] == [
        f"plain CNN trained on the {n} victims' clean images" for n in counts]
    attacked = [r for r in rows[8:] if r.defense != "-"]
    recon = [(r.defense, r.model.split(" reconstructions")[0].split(" ", 5)[-1]) for r in attacked]
    # every attack's reconstructions but the mean image's, in the registry's order, titled by it
    table1 = read_rows(reproduced / "privacy" / "table1.json", PrivacyRow)
    files = sorted({(Path(r.run).name, r.target) for r in table1})  # recon_<run>_<target>.pt order
    expected = [(next(r.defense for r in table1 if Path(r.run).name == run), a) for run, target in files
                for a in ATTACKS if a != "mean" and any(
                    r.attack == a and r.target == target and Path(r.run).name == run for r in table1)]
    assert recon == [(d, ATTACKS[a].title.partition(" (")[0]) for d, a in expected]
    assert all(r.adversarial == {} and r.paper_clean == PAPER["mnist"].get(a)
               for r, (_, a) in zip(attacked, expected, strict=True))
    for r in rows:  # accuracies are counts over the same 32 test images (rounded to 4 places)
        assert all(abs(a - round(32 * a) / 32) <= 5e-5 for a in (r.clean, *r.adversarial.values())), r


@pytest.mark.slow
def test_reproduce_cli_resumes_only_the_missing_stage(reproduced: Path, tmp_path: Path) -> None:
    out = tmp_path / "rep"
    shutil.copytree(reproduced, out)  # a run killed during Table II
    (out / "robustness" / "table2.json").unlink()
    (out / "report.html").unlink()
    r = subprocess.run([*REPRODUCE, "--out", str(out)], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    log = " ".join(r.stderr.split())
    for stage in ("train", "table1", "hijack", "frontier", "mu_sweep"):
        assert f"{stage}: cached" in log, stage
    assert "table2 ..." in log and (out / "report.html").is_file()
    # the stage recomputed from its own caches gives the same table
    assert (read_rows(out / "robustness" / "table2.json", RobustnessRow)
            == read_rows(reproduced / "robustness" / "table2.json", RobustnessRow))
    # the same folder under another configuration: refused before any work, naming the difference
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.json")}
    r = subprocess.run([*REPRODUCE, "--out", str(out), "--set", "train.lr=0.5"], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 2, r.stderr[-3000:]
    message = " ".join(r.stderr.split())
    assert "the stage 'train' was computed with other settings (config.train.lr:" in message
    assert stamps == {p: p.stat().st_mtime_ns for p in out.rglob("*.json")}


def test_runs_on_mias_carry_the_papers_mias_numbers(tmp_path: Path) -> None:
    """The paper figures attached to a row are its dataset's: MIAS's, not MNIST's."""
    from fixtures import mias_folder

    from pgsl.config import load_preset
    from pgsl.experiments.privacy import PrivacyConfig, privacy
    from pgsl.experiments.robustness import RobustnessConfig, robustness
    from pgsl.runtime import train_run

    data = tmp_path / "mias"
    mias_folder(data, size=16)
    cfg = load_preset(TINY).replace(data={"dataset": "mias", "data_dir": str(data)}, defense={"kind": "none"})
    train_run(cfg, tmp_path / "none")
    rows = privacy([tmp_path / "none"], tmp_path / "t1",
                   PrivacyConfig(victims=8, attacks=("mean", "mia"), budgets={"mia": {"epochs": 1}}))
    assert [(r.dataset, r.attack, r.paper_mse) for r in rows] == [
        ("mias", "mean", None), ("mias", "mia", 2.925)]  # not MNIST's 0.08
    table2 = robustness([tmp_path / "none"], tmp_path / "t2",
                        RobustnessConfig(n_test=8, attacks=("fgsm",)))
    assert table2[0].paper == {"fgsm": 61.9} and table2[0].n_test == 8
