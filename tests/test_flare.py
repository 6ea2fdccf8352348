"""PGSL as an NVIDIA FLARE job: the simulator (SimEnv) and the proof of concept (PocEnv, separate
processes with mutual TLS on loopback), against the in-process reference."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("nvflare", reason="NVIDIA FLARE is not installed (pip install 'pgsl[flare]')")

from flare_sites import MalformedFirstSite  # noqa: E402

from pgsl.checkpoint import load_checkpoint  # noqa: E402
from pgsl.config import Config, load_preset  # noqa: E402
from pgsl.flare.job import make_recipe, project_yml, simulate  # noqa: E402
from pgsl.runtime import CHECKPOINT, train_run  # noqa: E402
from pgsl.server.party import ServerParty  # noqa: E402
from pgsl.split.channel import InProcessChannel  # noqa: E402

TINY = str(Path(__file__).parent / "tiny.toml")
pytestmark = pytest.mark.slow


def tiny(epochs: int = 1) -> Config:
    # no dropout on the server: its draws would come from the server's own RNG under FLARE (another
    # process) but from the shared one in-process
    return load_preset(TINY).replace(data={"limit_train": 96, "limit_test": 32},
                                     train={"epochs": epochs}, model={"dropout": 0.0})


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], what: str) -> None:
    assert a.keys() == b.keys(), what
    for key in a:
        if torch.is_tensor(a[key]) and a[key].is_floating_point():
            assert torch.allclose(a[key], b[key], atol=1e-6, rtol=0), f"{what}: {key}"


def test_a_site_in_the_simulator_trains_the_in_process_weights_refuses_malformed_steps_and_resumes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # one torch thread in FLARE's processes and here: the same order of every floating-point sum
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        parity_refusals_and_resume(tmp_path)
    finally:
        torch.set_num_threads(threads)


def parity_refusals_and_resume(tmp_path: Path) -> None:
    cfg = tiny()
    server_out, site_out = tmp_path / "server", tmp_path / "sites"
    recipe = make_recipe(cfg, sites=["solo"], classes=10, server_out=str(server_out),
                         site_out=str(site_out), site_class=MalformedFirstSite)
    summary = simulate(recipe, ["solo"], server_out=server_out, workspace=tmp_path / "flare")
    assert summary["failed"] == {}
    report = summary["sites"]["solo"]
    # every malformed step is refused as the gRPC server refuses it, and changes nothing (below)
    assert len(report["refusals"]) == 5
    assert all(r.startswith("INVALID_ARGUMENT: ") for r in report["refusals"]), report["refusals"]
    assert "NaN or Inf" in report["refusals"][0] and "labels must lie" in report["refusals"][2]
    assert report["bytes_per_sample"] > 0 and report["samples_per_second"] > 0
    assert "bytes sent per sample" in (site_out / "solo" / "site.log").read_text()

    # the same run in process: server seeded as the FLARE server seeds it, same site seed
    torch.manual_seed(cfg.train.seed)
    party = ServerParty(cfg, 10)
    train_run(cfg, tmp_path / "ref", channel=InProcessChannel(party))
    ref = load_checkpoint(tmp_path / "ref" / CHECKPOINT, torch.device("cpu"))
    site = load_checkpoint(site_out / "solo" / CHECKPOINT, torch.device("cpu"))
    server = load_checkpoint(server_out / "server.pt", torch.device("cpu"))
    assert_same(site["client"]["segment"], ref["client"]["segment"], "client segment")
    assert_same(server["server"]["model"], party.state_dict()["model"], "server model")
    steps = summary["train_steps"]
    assert steps == 96 // 32  # only the honest steps were recorded

    # run the job again with two epochs: the site and the server continue where they stopped
    recipe = make_recipe(tiny(epochs=2), sites=["solo"], classes=10, server_out=str(server_out),
                         site_out=str(site_out))
    again = simulate(recipe, ["solo"], server_out=server_out, workspace=tmp_path / "flare")
    report = again["sites"]["solo"]
    assert report["resumed"] and report["epochs"] == 2 and again["train_steps"] == 2 * steps
    history = json.loads((site_out / "solo" / "metrics.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [1, 2]


ENV_COLUMNS = {"COLUMNS": "200", "PYTHONUNBUFFERED": "1"}


def pgsl(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run([sys.executable, "-m", "pgsl", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **ENV_COLUMNS})


def test_two_sites_train_concurrently_in_the_proof_of_concept(tmp_path: Path) -> None:
    done = pgsl("flare", "poc", "--sites", "2", "--out", str(tmp_path), "--preset", TINY,
                "--limit-train", "192", "--limit-test", "32", "--epochs", "2")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "site-1" in done.stdout and "site-2" in done.stdout and "bytes/sample" in done.stdout
    summary = json.loads((tmp_path / "server" / "flare-summary.json").read_text())
    assert summary["failed"] == {} and set(summary["last_step"]) == {"site-1", "site-2"}
    assert summary["train_steps"] == 2 * 2 * (192 // 32)
    for site in ("site-1", "site-2"):
        losses = [h["train_loss"]["S_f"] for h in
                  json.loads((tmp_path / "sites" / site / "metrics.json").read_text())["history"]]
        assert losses[1] < losses[0], (site, losses)  # the shared server model learns for each
    log = (tmp_path / "server" / "server.log").read_text()
    assert "site site-1 joined" in log and "site site-2 joined" in log


def test_the_exported_job_and_project_provision_with_the_site_names(tmp_path: Path) -> None:
    done = pgsl("flare", "job", "--sites", "hospital-a,hospital-b", "--out", str(tmp_path / "job"),
                "--server-name", "pgsl.hospital.example", "--preset", TINY,
                "--site-data", "hospital-b=/data/mammograms", timeout=120)
    assert done.returncode == 0, done.stderr
    job = tmp_path / "job" / "pgsl"
    meta = json.loads((job / "meta.json").read_text())
    assert meta["deploy_map"] == {"app_hospital-a": ["hospital-a"], "app_hospital-b": ["hospital-b"],
                                  "app_server": ["server"]}
    site_b = json.loads((job / "app_hospital-b" / "config" / "config_fed_client.json").read_text())
    assert site_b["components"][0]["path"] == "pgsl.flare.site_app.FlareSite"
    assert site_b["executors"][0]["executor"]["args"]["props"] == {"seed": 1,
                                                                    "data_dir": "/data/mammograms"}
    # the sites' apps carry no server code: pgsl is installed there, FLARE copies none of it
    assert not list((job / "app_hospital-a").rglob("server_app.py"))
    assert not list(job.rglob("pgsl/server/*.py"))
    provision = subprocess.run([str(Path(sys.executable).parent / "nvflare"), "provision", "-p",
                                str(tmp_path / "job" / "project.yml"), "-w", str(tmp_path / "ws")],
                               capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert provision.returncode == 0, provision.stdout + provision.stderr
    kits = {p.name for p in (tmp_path / "ws" / "pgsl" / "prod_00").iterdir()}
    assert {"pgsl.hospital.example", "hospital-a", "hospital-b"} <= kits
    assert (tmp_path / "ws" / "pgsl" / "prod_00" / "hospital-a" / "startup" / "client.crt").is_file()
    assert "name: hospital-b" in project_yml(["hospital-b"], server="s")


def test_bad_flare_arguments_get_a_clear_error(tmp_path: Path) -> None:
    bad = pgsl("flare", "job", "--sites", "a,a", "--out", str(tmp_path), "--server-name", "s",
               "--preset", TINY, timeout=120)
    assert bad.returncode == 2 and "distinct" in bad.stderr
    bad = pgsl("flare", "simulate", "--sites", "0", "--out", str(tmp_path), timeout=120)
    assert bad.returncode == 2 and "--sites must lie in 1..64" in bad.stderr
