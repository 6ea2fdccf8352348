"""Shared fixtures: a fixed seed for every test, and ``--device`` (default cpu) like kornia's."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--device", default="cpu", help="torch device for device-aware tests")


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get("PYTEST_XDIST_WORKER"):  # one of several workers: one core each
        torch.set_num_threads(1)
    if os.environ.get("PGSL_TEST_THREADS"):  # checking a statistical bound under another count
        torch.set_num_threads(int(os.environ["PGSL_TEST_THREADS"]))


@pytest.fixture(autouse=True)
def _seed() -> None:
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture
def device(request: pytest.FixtureRequest) -> torch.device:
    dev = torch.device(request.config.getoption("--device"))
    if dev.type == "cuda" and not torch.cuda.is_available():
        pytest.skip("CUDA not available")
    return dev


@pytest.fixture
def cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """An empty dataset cache for the test (real MNIST tests use the session cache instead)."""
    path = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("PGSL_CACHE", str(path))
    return path


@pytest.fixture(scope="session")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny trained runs on real MNIST (1,024 training images), one per defence."""
    from pgsl.config import load_preset
    from pgsl.runtime import train_run

    root = tmp_path_factory.mktemp("runs")
    base = load_preset(str(Path(__file__).parent / "tiny.toml")).replace(data={"limit_train": 1024})
    out = {}
    for kind in ("none", "noise", "nopeek", "pgsl"):
        params = {"noise": {"scale": 0.5}, "nopeek": {"weight": 0.5}}.get(kind, {})
        cfg = base.replace(defense={"kind": kind, "params": params})
        train_run(cfg, root / kind)
        out[kind] = root / kind
    return out
