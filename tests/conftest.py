"""Shared fixtures: a fixed seed for every test, and ``--device`` (default cpu) like kornia's."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--device", default="cpu", help="torch device for device-aware tests")


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
