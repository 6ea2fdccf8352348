"""The benchmark scripts still run and still report sane numbers (short settings, real processes).

``bench/train.py`` needs MNIST and is exercised by ``bench/device.sh``'s smoke mode instead.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> str:
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def _row(out: str, start: str) -> list[str]:
    rows = [line.split() for line in out.splitlines() if line.strip().startswith(start)]
    assert rows, f"no row starting {start!r} in:\n{out}"
    return rows[0]


@pytest.mark.slow
def test_solver_bench_runs_and_our_solvers_recover_the_planted_matrices() -> None:
    out = _run("bench/solver.py", "--sizes", "14", "--reference-tols", "1e-5", "--our-tols", "1e-5")
    assert "time to accuracy" in out
    for solver in ("apg", "admm"):
        row = _row(out, f"{solver} cpu")
        assert "float32" in row
        median_all = float(row[-1])  # median error over the whole batch against the planted truth
        assert median_all < 1e-4, (solver, median_all)


@pytest.mark.slow
def test_svt_kernel_bench_reports_accurate_svts() -> None:
    out = _run("bench/svt_kernels.py", "--sizes", "14", "--methods", "svt:gram", "svt:products")
    assert float(_row(out, "14")[-1]) < 1e-6  # svt:gram, float64 inside
    products = [line.split() for line in out.splitlines() if "svt:products" in line]
    assert products and float(products[0][-1]) < 1e-5


def test_device_script_parses() -> None:
    subprocess.run(["bash", "-n", str(ROOT / "bench" / "device.sh")], check=True)
