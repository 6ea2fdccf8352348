"""The command line's own contract: cheap to start, every command listed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from probes import loaded


def test_the_cli_imports_no_torch_and_its_help_lists_every_command() -> None:
    heavy = ("torch", "PIL", "pydicom", "opacus", "sklearn", "skimage")
    assert [m for m in loaded("import pgsl.cli", also=heavy) if m in heavy] == []
    r = subprocess.run([sys.executable, "-m", "pgsl", "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    for command in ("train", "privacy", "reproduce", "baselines", "predict", "benchmark", "flare"):
        assert f" {command} " in r.stdout, command


def test_the_api_refuses_what_the_cli_refuses(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from pgsl.cli import app
    from pgsl.experiments.mu_sweep import SweepConfig

    cases = [({"mus": (0.5, 0.0)}, ["--mus", "0.5,0"], "mu values must be positive"),
             ({"images": 0}, ["--images", "0"], "images and max_iter must be >= 1"),
             ({"solver": "svd"}, ["--solver", "svd"], "solver must be apg or admm")]
    for api, cli, message in cases:
        with pytest.raises(ValueError, match=message):
            SweepConfig(**api)  # type: ignore[arg-type]
        r = CliRunner().invoke(app, ["mu-sweep", "--out", str(tmp_path / "m"), *cli])
        assert r.exit_code == 2 and message in " ".join(r.output.split()), r.output
    with pytest.raises(ValueError, match="positive"):
        SweepConfig(mus=())
    assert not (tmp_path / "m").exists()  # refused before writing anything
