"""Table I (pgsl.experiments.privacy): the protocol, its table and grids, the frontier, seeds, and
the whole table cached by what produced it, on tiny real-MNIST runs."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from attack_views import views_of

from pgsl.attacks import Need
from pgsl.experiments.privacy import PrivacyConfig, evaluate_privacy, privacy
from pgsl.experiments.results import FrontierPoint, PrivacyRow, read_rows

TINY = str(Path(__file__).parent / "tiny.toml")


def test_defenses_change_what_crosses_the_cut(runs: dict[str, Path]) -> None:
    shapes = {}
    for kind, path in runs.items():
        _, _, _, views = views_of(path, n_victims=16, n_aux=16)
        for target, view in views.items():
            shapes[kind, target] = tuple(view.observed.shape[1:])
            assert torch.isfinite(view.observed).all()
    # one-stream defences expose only the cut; PGSL's server also derives its recovered maps
    assert shapes == {("none", "cut"): (8, 28, 28), ("noise", "cut"): (8, 28, 28),
                      ("nopeek", "cut"): (8, 28, 28), ("pgsl", "cut"): (8, 14, 14),
                      ("pgsl", "recovered"): (8, 14, 14)}
    # the noise defence answers the same query differently each time
    run, victims, _, _ = views_of(runs["noise"], n_victims=4, n_aux=4)
    assert not torch.equal(run.client.query(victims), run.client.query(victims))


@pytest.mark.slow
def test_privacy_cli_writes_table_and_grids(runs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "priv"
    cmd = [sys.executable, "-m", "pgsl", "privacy", str(runs["none"]), str(runs["pgsl"]), "--out", str(out),
           "--victims", "64", "--aux", "500", "--attacks", "mean,mia,activation,ggl",
           "--budget", "mia.epochs=2", "--budget", "activation.victims=32", "--budget", "activation.steps=50",
           "--budget", "ggl.victims=2", "--budget", "ggl.prior_epochs=2", "--budget", "ggl.generations=2",
           "--budget", "ggl.population=4", "--budget", "ggl.starts=16"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = read_rows(out / "table1.json", PrivacyRow)
    # (mean, mia, activation) x (none cut, pgsl cut, pgsl recovered) + GGL on the two cuts (no
    # client gradient flows from the recovered maps)
    assert [(r.defense, r.target, r.attack, r.n_victims) for r in rows] == [
        ("none", "cut", "mean", 64), ("none", "cut", "mia", 64), ("none", "cut", "activation", 32),
        ("none", "cut", "ggl", 2), ("pgsl", "cut", "mean", 64), ("pgsl", "cut", "mia", 64),
        ("pgsl", "cut", "activation", 32), ("pgsl", "cut", "ggl", 2), ("pgsl", "recovered", "mean", 64),
        ("pgsl", "recovered", "mia", 64), ("pgsl", "recovered", "activation", 32)]
    assert all(r.dataset == "mnist" and np.isfinite(r.mse_mean) and r.mse_mean > 0 for r in rows)
    # the trivial baseline ignores what was observed: one score for every target of every run
    assert len({r.mse_mean for r in rows if r.attack == "mean"}) == 1
    assert {(r.defense, r.target): r.paper_mse for r in rows if r.attack == "mia"} == {
        ("none", "cut"): 0.08, ("pgsl", "cut"): None, ("pgsl", "recovered"): None}
    assert all(r.label_accuracy == 1.0 for r in rows if r.attack == "ggl")  # iDLG's analytic label
    table = json.loads((out / "table1.json").read_text())
    assert table["skipped"] == [f"pgsl / recovered / ggl: needs {Need.GRADIENTS}"]
    md = (out / "table1.md").read_text()
    assert "MIA (learned inversion)" in md and "Left out: pgsl / recovered / ggl" in md
    assert (out / "fig4_none_cut.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "fig4_pgsl_recovered.png").read_bytes()[:4] == b"\x89PNG"
    bad = subprocess.run([sys.executable, "-m", "pgsl", "privacy", str(tmp_path / "nope"), "--out",
                          str(out)], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "not a trained run" in " ".join((bad.stderr + bad.stdout).split())


@pytest.mark.slow
def test_frontier_cli_trains_attacks_plots_and_resumes_from_its_cache(tmp_path: Path) -> None:
    out = tmp_path / "front"
    cmd = [sys.executable, "-m", "pgsl", "frontier", "--out", str(out), "--preset", TINY,
           "--limit-train", "512", "--defenses", "none,noise,pgsl", "--setting", "noise:scale=1",
           "--setting", "pgsl:mu=0.55", "--victims", "64", "--aux", "300", "--mia-epochs", "2"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = read_rows(out / "frontier.json", FrontierPoint)
    # one point per defence setting, from the registry: the defence's title and knob, its run
    assert [(p.curve, p.run) for p in rows] == [
        ("vanilla split", "none"), ("Laplacian noise (scale)", "noise-scale-1"),
        ("PGSL (mu)", "pgsl-mu-0.55")]
    assert math.isnan(rows[0].value) and [p.value for p in rows[1:]] == [1.0, 0.55]
    for p in rows:
        metrics = json.loads((out / "runs" / p.run / "metrics.json").read_text())
        assert p.accuracy == metrics["test_accuracy"]["decision"] and p.n_test == metrics["n_test"]
        assert p.n_victims == 64 and 0 < p.mse < 1 and p.mse_std > 0
    # the PGSL point is the attacker's better view of the run: the lower of its two targets
    pgsl = rows[-1]
    pc = PrivacyConfig(victims=64, aux=300, attacks=("mia",), budgets={"mia": {"epochs": 2}})
    scored, _ = evaluate_privacy(out / "runs" / "pgsl-mu-0.55", pc)
    assert {r.target for r in scored} == {"cut", "recovered"}
    best = min(scored, key=lambda r: r.mse_mean)
    # (the CLI process runs more torch threads than this one: the decoder's float sums differ)
    assert pgsl.target == best.target and pgsl.mse == pytest.approx(best.mse_mean, rel=1e-2)
    config = json.loads((out / "runs" / "noise-scale-1" / "config.json").read_text())
    assert config["defense"] == {"kind": "noise", "params": {"scale": 1.0}}
    assert (out / "frontier.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a second call reuses every cached stage: no run is retrained
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/metrics.json")}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert stamps and all(p.stat().st_mtime_ns == t for p, t in stamps.items())
    # another attack protocol into the same folder: every point is attacked again (the runs are
    # reused), never the 64-victim numbers returned as the 32-victim ones
    fewer = [c if c != "64" else "32" for c in cmd]
    r = subprocess.run(fewer, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert [p.n_victims for p in read_rows(out / "frontier.json", FrontierPoint)] == [32, 32, 32]
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())
    # runs of another configuration are refused, naming the difference, and left as they were
    other = [c if c != "512" else "256" for c in cmd]
    r = subprocess.run(other, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr[-2000:]
    assert "data.limit_train: 512 -> 256" in " ".join(r.stderr.split()), r.stderr[-2000:]
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())
    bad_cmd = [c if c != "pgsl:mu=0.55" else "pgsl:mu=x" for c in cmd]
    bad = subprocess.run(bad_cmd, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "KNOB=NUMBER" in bad.stderr, bad.stderr[-2000:]


@pytest.mark.slow
def test_seeds_repeat_the_protocol_and_report_the_spread_of_the_per_seed_means(
        runs: dict[str, Path], tmp_path: Path) -> None:
    base = PrivacyConfig(victims=8, aux=64, attacks=("mean", "mia"), budgets={"mia": {"epochs": 1}})
    single = [privacy([runs["none"]], tmp_path / str(s), dataclasses.replace(base, seed=s)) for s in (0, 1)]
    rows = privacy([runs["none"]], tmp_path / "both", dataclasses.replace(base, seeds=2))
    assert [(r.attack, r.seeds) for r in rows] == [("mean", 2), ("mia", 2)]
    for i, r in enumerate(rows):
        per_seed = [single[0][i].mse_mean, single[1][i].mse_mean]
        assert r.mse_mean == pytest.approx(sum(per_seed) / 2, abs=2e-6)
        assert r.mse_seed_std == pytest.approx(float(torch.tensor(per_seed).std()), abs=2e-6)
        assert r.mse_seed_std is not None and r.mse_seed_std > 0  # another sample, another score
    assert read_rows(tmp_path / "both" / "table1.json", PrivacyRow) == rows
    assert "seeds 0..1" in (tmp_path / "both" / "table1.md").read_text()
    assert all(r.seeds == 1 and r.mse_seed_std is None for r in single[0])
