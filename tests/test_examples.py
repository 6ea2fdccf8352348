"""The documented Python API example runs as written and prints what it promises."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).parent.parent / "examples"


@pytest.mark.slow
def test_train_and_attack_example(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, str(EXAMPLES / "train_and_attack.py"), str(tmp_path)],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    accuracy = float(re.search(r"decision accuracy: ([0-9.]+)", out.stdout).group(1))  # type: ignore[union-attr]
    assert accuracy > 0.5, out.stdout  # chance is 0.1
    rows = re.findall(r"^\s*(cut|recovered)\s+(\w+): MSE ([0-9.]+)", out.stdout, re.M)
    seen = {(t, a) for t, a, _ in rows}
    assert {("cut", "mean"), ("cut", "mia"), ("cut", "activation"), ("recovered", "mia"),
            ("recovered", "activation")} <= seen
    mse = {(t, a): float(m) for t, a, m in rows}
    assert mse[("cut", "mia")] < mse[("cut", "mean")]  # the learned attack beats the trivial one
