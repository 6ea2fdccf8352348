"""Fig. 3 (the mu sweep), Table II (robustness) and the reproduce report, on tiny real-MNIST runs."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

TINY = str(Path(__file__).parent / "tiny.toml")


def test_mu_sweep_cli_writes_curve_and_reports_the_attacked_reference(tmp_path: Path) -> None:
    out = tmp_path / "mu"
    cmd = [sys.executable, "-m", "pgsl", "mu-sweep", "--out", str(out), "--preset", TINY,
           "--images", "32", "--mus", "0.15,0.55"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = list(csv.DictReader((out / "mu_sweep.csv").open()))
    assert [float(row["mu"]) for row in rows] == [0.0, 0.15, 0.55]
    assert all(int(row["n_images"]) == 32 for row in rows)
    # mu 0 is the attacked image: the 2-pixel attack moved it away from the clean one
    assert 0 < float(rows[0]["mse_mean"]) < 0.05
    assert all(0 < float(row["mse_mean"]) < 1 for row in rows[1:])
    summary = json.loads((out / "mu_sweep.json").read_text())
    best = min(rows[1:], key=lambda row: float(row["mse_mean"]))
    assert summary["best_mu"] == {"mnist": float(best["mu"])} and summary["paper_best_mu"] == 0.55
    assert (out / "mu_sweep.png").read_bytes()[:4] == b"\x89PNG"
    bad = subprocess.run(cmd[:-1] + ["0,0.5"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "positive" in bad.stderr
