"""The command line's own contract: cheap to start, every command listed."""

from __future__ import annotations

import subprocess
import sys


def test_the_cli_imports_no_torch_and_its_help_lists_every_command() -> None:
    probe = ("import sys, pgsl.cli; heavy = {'torch', 'PIL', 'pydicom', 'opacus', 'sklearn', 'skimage'}; "
             "print(sorted(m for m in heavy if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr
    r = subprocess.run([sys.executable, "-m", "pgsl", "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    for command in ("train", "privacy", "reproduce", "baselines", "predict", "benchmark", "flare"):
        assert f" {command} " in r.stdout, command
