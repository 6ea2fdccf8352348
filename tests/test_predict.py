"""`pgsl predict`: new images through a trained split model, in process and over gRPC, with a clear
row for every image that cannot be used."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures import dicom_file
from PIL import Image
from typer.testing import CliRunner

from pgsl.checkpoint import load_checkpoint
from pgsl.cli import app
from pgsl.config import load_preset
from pgsl.data import to_float
from pgsl.experiments.predict import Predictor, find_images, predict_images
from pgsl.experiments.train import load_run, train_run
from pgsl.server.party import ServerParty
from pgsl.split.trainer import DECISION
from pgsl.transport.client import GrpcChannel
from pgsl.transport.server import SplitLearningService, serve

TESTS = Path(__file__).parent
N_GOOD = 6


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny PGSL run on MNIST (three streams and the fused decision)."""
    out = tmp_path_factory.mktemp("predict") / "run"
    train_run(load_preset(str(TESTS / "tiny.toml")), out)
    return out


@pytest.fixture(scope="module")
def images(run: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.Tensor]:
    """A folder with the run's first test images as PNG, and images that cannot be used."""
    folder = tmp_path_factory.mktemp("images")
    test = load_run(run, torch.device("cpu")).dataset.test.images[:N_GOOD]
    for i, img in enumerate(test):
        Image.fromarray(img[0].numpy()).save(folder / f"good_{i}.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(folder / "big.png")
    Image.fromarray(np.zeros((28, 28, 3), np.uint8)).save(folder / "colour.png")
    (folder / "sub").mkdir()
    dicom_file(folder / "sub" / "scan.dcm", np.arange(28 * 28).reshape(28, 28) * 50, "P1")
    dicom_file(folder / "sub" / "empty.dcm", np.zeros((28, 28)), "P2")
    _drop_pixel_data(folder / "sub" / "empty.dcm")
    (folder / "notes.txt").write_text("not an image")  # not an image suffix: not picked up
    return folder, test


def _drop_pixel_data(path: Path) -> None:
    import pydicom

    ds = pydicom.dcmread(path)
    del ds.PixelData
    ds.save_as(path)


def _rows(path: Path) -> dict[str, dict[str, str]]:
    with path.open() as f:
        return {Path(r["file"]).name: r for r in csv.DictReader(f)}


def test_predict_classifies_as_the_trained_model_and_names_every_unusable_image(
        run: Path, images: tuple[Path, torch.Tensor], tmp_path: Path) -> None:
    folder, test = images
    out = tmp_path / "preds.csv"
    result = CliRunner().invoke(app, ["predict", str(run), "--images", str(folder), "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = _rows(out)
    assert len(rows) == N_GOOD + 5 and "notes.txt" not in rows
    # the PNGs get the decision the trained model gives the same images from the dataset
    loaded = load_run(run, torch.device("cpu"))
    expected = loaded.client.predict(to_float(test), loaded.channel).decision
    classes = loaded.dataset.classes
    for i in range(N_GOOD):
        r = rows[f"good_{i}.png"]
        assert r["error"] == "" and r["predicted"] == classes[int(expected[i].argmax())]
        got = torch.tensor([float(r[f"{DECISION}.{c}"]) for c in classes])
        torch.testing.assert_close(got, expected[i], atol=1e-5, rtol=0)
        for stream in ("S_a", "S_f", "S_r"):
            assert sum(float(r[f"{stream}.{c}"]) for c in classes) == pytest.approx(1.0, abs=1e-4)
    assert rows["scan.dcm"]["error"] == "" and rows["scan.dcm"]["predicted"] in classes
    for name, message in (("broken.png", "broken.png: not a readable image"),
                          ("big.png", "big.png: is 32x32; this run takes 28x28 images"),
                          ("colour.png", "colour.png: has 3 channel(s); this run takes 1-channel images"),
                          ("empty.dcm", "empty.dcm: not a readable DICOM image")):
        assert message in rows[name]["error"] and rows[name]["predicted"] == "", (name, rows[name])
        assert message.split(":")[0] in result.output.replace("\n", "")
    assert f"classified {N_GOOD + 1} of {N_GOOD + 5} image(s)" in result.output


def test_a_site_classifies_through_the_running_server_as_in_process(
        run: Path, images: tuple[Path, torch.Tensor], tmp_path: Path) -> None:
    folder, _ = images
    files = find_images(folder)
    local = predict_images(Predictor.in_process(run, torch.device("cpu")), files, tmp_path / "local.csv")
    cfg = load_preset(str(TESTS / "tiny.toml"))
    server = ServerParty(cfg, num_classes=10)
    server.load_state_dict(load_checkpoint(run / "checkpoint.pt", torch.device("cpu"))["server"])
    server.model.eval()
    grpc_server, port = serve(SplitLearningService(server, secure=False), "127.0.0.1:0", tls_dir=None)
    try:
        with GrpcChannel(f"127.0.0.1:{port}", site="h1", tls_dir=None) as channel:
            remote = predict_images(Predictor.remote(run, channel, torch.device("cpu")), files,
                                    tmp_path / "remote.csv")
    finally:
        grpc_server.stop(0)
    assert [r["file"] for r in remote] == [r["file"] for r in local]
    for a, b in zip(local, remote, strict=True):
        assert a.get("predicted") == b.get("predicted") and a["error"] == b["error"]
        for key, value in a.items():
            if isinstance(value, float):
                assert value == pytest.approx(b[key], abs=1e-5)


def test_predict_refuses_bad_arguments_clearly(run: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    empty = tmp_path / "empty"
    empty.mkdir()
    pred = ["predict", "--out", str(tmp_path / "p.csv")]
    cases = [([*pred, str(tmp_path / "nope"), "--images", str(empty)], "no image files"),
             ([*pred, str(tmp_path / "nope"), "--images", str(tmp_path / "missing.png")],
              "missing.png: no such file or folder"),
             ([*pred, str(empty), "--images", str(TESTS / "tiny.toml")], "is not a trained run"),
             ([*pred, str(run), "--images", str(TESTS / "tiny.toml"), "--site", "h1"],
              "--site, --tls and --insecure go with --server")]
    for args, message in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == 2 and message in " ".join(result.output.split()), (args, result.output)
