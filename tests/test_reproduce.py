"""Fig. 3 (the mu sweep), Table II (robustness) and the reproduce report, on tiny real-MNIST runs."""

from __future__ import annotations

import base64
import csv
import json
import subprocess
import sys
from html.parser import HTMLParser
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
    # ADMM solves the same problem: the same curve, in fewer iterations
    out_admm = tmp_path / "mu_admm"
    r = subprocess.run(cmd[:4] + ["--out", str(out_admm)] + cmd[6:] + ["--solver", "admm"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    admm_rows = list(csv.DictReader((out_admm / "mu_sweep.csv").open()))
    assert [row["solver"] for row in admm_rows] == ["admm"] * 3 and rows[1]["solver"] == "apg"
    for apg_row, admm_row in zip(rows[1:], admm_rows[1:], strict=True):
        assert abs(float(apg_row["mse_mean"]) - float(admm_row["mse_mean"])) < 1e-5
        assert float(admm_row["iterations"]) < float(apg_row["iterations"])
    bad = subprocess.run(cmd + ["--solver", "alm"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "apg or admm" in bad.stderr


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


def test_reproduce_writes_a_valid_self_contained_report_and_resumes(tmp_path: Path) -> None:
    out = tmp_path / "rep"
    cmd = [sys.executable, "-m", "pgsl", "reproduce", "--out", str(out), "--preset", TINY, "--plan", "tiny"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    text = (out / "report.html").read_text()
    assert text.startswith("<!DOCTYPE html>")
    parser = _Balanced()
    parser.feed(text)
    parser.close()
    assert parser.stack == []
    assert parser.tables == 5  # runs, Table I, Table II, mu sweep, frontier
    # every figure in the report is a file this run produced, byte for byte
    produced = {p.read_bytes() for p in out.rglob("*.png")}
    assert len(parser.images) == len(produced) == 5 + 1 + 1 + 1  # 5 Fig. 4 grids, Fig. 5, Fig. 3, frontier
    assert set(parser.images) == produced
    # every Table I and Table II number in the report comes from this run's tables
    for row in csv.DictReader((out / "privacy" / "table1.csv").open()):
        assert f"{float(row['mse_mean']):.4f} ± {float(row['mse_std']):.4f}" in text
    for row in csv.DictReader((out / "robustness" / "table2.csv").open()):
        assert f"{100 * float(row['clean']):.1f}%" in text
    assert "99.8%" in text and "paper" in text  # the paper's figures beside ours
    # a killed run resumes: only the missing stage is recomputed
    (out / "robustness" / "table2.json").unlink()
    (out / "report.html").unlink()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    log = " ".join(r.stderr.split())
    for stage in ("train", "table1", "frontier", "mu_sweep"):
        assert f"{stage}: cached" in log, stage
    assert "table2 ..." in log and (out / "report.html").is_file()


def test_reproduce_runs_on_mias_with_the_papers_mias_numbers(tmp_path: Path) -> None:
    from fixtures import mias_folder

    data = tmp_path / "mias"
    mias_folder(data, size=16)
    out = tmp_path / "rep"
    cmd = [sys.executable, "-m", "pgsl", "reproduce", "--out", str(out), "--preset", TINY,
           "--plan", "tiny", "--dataset", "mias", "--data-dir", str(data)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = list(csv.DictReader((out / "privacy" / "table1.csv").open()))
    assert rows and all(row["dataset"] == "mias" for row in rows)
    # the paper's MIAS MSE for the learned attack on the vanilla split, not its MNIST one
    assert any(row["paper_mse"] == "2.925" for row in rows)
    assert not any(row["paper_mse"] == "0.08" for row in rows)
    text = (out / "report.html").read_text()
    assert "mias" in text.lower() and "2.925" in text
