"""Process boundaries as facts: what a process imports is read from ``sys.modules`` in a fresh
interpreter (:func:`probes.loaded`), so indirect imports count too."""

from __future__ import annotations

import pytest
from probes import loaded

# What `pgsl client` runs: the CLI, the run driver, the gRPC channel, and a PGSL client party
# built for a remote server (the run object a site trains with), then one query through it.
HOSPITAL = """
import torch
import pgsl.cli
from pgsl.cli import client
from pgsl.config import load_preset
from pgsl.data.base import Dataset, ImageSet
from pgsl.runtime import Run
from pgsl.transport.client import GrpcChannel
cfg = load_preset("quick").replace(model={"width": 8})
images = torch.zeros(4, 1, 8, 8, dtype=torch.uint8)
labels = torch.tensor([0, 1, 0, 1])
data = Dataset("toy", ("a", "b"), ImageSet(images, labels), ImageSet(images, labels))
channel = GrpcChannel("127.0.0.1:1", site="a", tls_dir=None)
run = Run(cfg, data, torch.device("cpu"), channel)
assert run.server is None
run.client.query(torch.rand(2, 1, 8, 8))
"""


@pytest.mark.slow
def test_the_hospital_process_never_loads_the_server() -> None:
    modules = loaded(HOSPITAL)
    assert "pgsl.client.party" in modules and "pgsl.transport.client" in modules  # it did run
    server = [m for m in modules if m.startswith(("pgsl.server", "pgsl.recovery"))]
    assert not server, f"the hospital process loaded server code: {server}"


@pytest.mark.parametrize("module", ["pgsl.split", "pgsl.split.trainer", "pgsl.split.channel",
                                    "pgsl.split.messages"])
@pytest.mark.slow
def test_the_split_protocol_loads_neither_party(module: str) -> None:
    modules = loaded(f"import {module}")
    assert module in modules
    parties = [m for m in modules if m.startswith(("pgsl.client", "pgsl.server", "pgsl.recovery"))]
    assert not parties, f"{module} loads party code: {parties}"


@pytest.mark.slow
def test_an_in_process_run_does_load_the_server() -> None:
    """The probe can see a server import: without a channel, the run builds its server party."""
    modules = loaded(HOSPITAL.replace("run = Run(cfg, data, torch.device(\"cpu\"), channel)",
                                      "run = Run(cfg, data, torch.device(\"cpu\"))")
                     .replace("assert run.server is None", "assert run.server is not None"))
    assert "pgsl.server.party" in modules and "pgsl.recovery.rpca" in modules


@pytest.mark.slow
def test_a_flare_site_process_never_loads_the_server() -> None:
    """What a hospital's FLARE process imports to run its part of the job: the site object, its
    channel, and the run it trains (built for a remote server)."""
    pytest.importorskip("nvflare", reason="NVIDIA FLARE is not installed (pip install 'pgsl[flare]')")
    modules = loaded(HOSPITAL.replace("from pgsl.transport.client import GrpcChannel",
                                      "from pgsl.flare.site_app import FlareSite\n"
                                      "from pgsl.flare.channel import FlareChannel\n"
                                      "from pgsl.transport.client import GrpcChannel")
                     .replace('channel = GrpcChannel("127.0.0.1:1", site="a", tls_dir=None)',
                              "channel = FlareChannel()"))
    assert "pgsl.flare.site_app" in modules and "pgsl.client.party" in modules  # it did run
    server = [m for m in modules if m.startswith(("pgsl.server", "pgsl.recovery", "pgsl.flare.server_app"))]
    assert not server, f"the FLARE site process loaded server code: {server}"
