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
from pgsl.runtime import load_run, train_run
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


# --- MIAS: the protocol read from the run ---------------------------------------------------------

@pytest.fixture(scope="module")
def films(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, tuple[int, int, int]]]:
    from fixtures import synthetic_mammograms

    path = tmp_path_factory.mktemp("films")
    return path, synthetic_mammograms(path, counts=(12, 8, 8), size=512, as_films=True)


@pytest.fixture(scope="module")
def patch_cv(films: tuple[Path, dict], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A patch model (ROI protocol, prepared films) cross-validated over 2 patient-grouped folds."""
    from pgsl.experiments.cv import cross_validate

    path, _ = films
    cfg = load_preset(str(TESTS / "tiny.toml")).replace(
        data={"dataset": "mias", "data_dir": str(path), "protocol": "roi", "image_size": 16, "roi_size": 64,
              "roi_patches": 2, "limit_train": None, "limit_test": None, "task": "abnormal",
              "segment": True, "orient": True, "clahe": 0.01},
        defense={"kind": "none"}, model={"width": 8, "hidden": 16, "pool": 2})
    out = tmp_path_factory.mktemp("patch_cv") / "cv"
    cross_validate(cfg, out, models=["none"], folds=2, cv_seed=0)
    return out


def test_a_patch_model_scans_a_film_and_answers_with_its_most_abnormal_patch(
        films: tuple[Path, dict], patch_cv: Path, tmp_path: Path) -> None:
    from pgsl.experiments.predict import load_patches, patches_path

    path, lesions = films
    run = patch_cv / "fold-0" / "none"
    predictor = Predictor.in_process(run, torch.device("cpu"))
    assert predictor.card.patches and predictor.card.roi_size == 64
    small = tmp_path / "small.png"  # smaller than a patch: refused, not resized into the model
    Image.fromarray(np.full((40, 40), 120, np.uint8)).save(small)
    region = tmp_path / "region.png"  # exactly the model's input: one region, classified as it is
    region_pixels = np.random.default_rng(0).integers(0, 256, (16, 16)).astype(np.uint8)
    Image.fromarray(region_pixels).save(region)
    refs = ["mdb013", "mdb014"]  # a mirrored (right) film and a left one, both with a lesion
    files = [path / f"{r}.pgm" for r in refs] + [small, region]
    out = tmp_path / "preds.csv"
    rows = predict_images(predictor, files, out)
    per_patch = list(csv.DictReader(patches_path(out).open()))
    for ref, row in zip(refs, rows, strict=False):
        mine = [p for p in per_patch if Path(p["file"]).name == f"{ref}.pgm"]
        assert row["patches"] == len(mine) > 4
        best = max(mine, key=lambda p: float(p["abnormal_score"]))
        assert (int(best["row"]), int(best["col"])) == (row["row"], row["col"])
        assert row["abnormal_score"] == pytest.approx(float(best["abnormal_score"]))
        assert row["y"] == 511 - row["row"] and row["x"] == row["col"]
        # the windows' centres are in the stored film's coordinates: the one nearest the planted
        # lesion (mirrored film or not) holds it
        lr, lc, _ = lesions[ref]
        scan = load_patches(path / f"{ref}.pgm", predictor.card)
        nearest = min(range(len(scan.centres)),
                      key=lambda j: abs(scan.centres[j][0] - lr) + abs(scan.centres[j][1] - lc))
        assert abs(scan.centres[nearest][0] - lr) <= 16 and abs(scan.centres[nearest][1] - lc) <= 16
        patch = scan.images[nearest, 0]
        assert patch[6:10, 6:10].mean() > patch.mean() + 0.03
    assert "smaller than this run's 64-pixel patches" in rows[2]["error"]
    expected = predictor.scores(torch.from_numpy(region_pixels).float().div(255)[None, None])[DECISION][0]
    assert rows[3]["patches"] == 1
    assert rows[3]["confidence"] == pytest.approx(float(expected.max()), abs=1e-5)


def test_a_cross_validation_scores_each_film_by_the_fold_that_never_trained_on_it(
        films: tuple[Path, dict], patch_cv: Path, tmp_path: Path) -> None:
    from pgsl.data import mias

    path, _ = films
    out = tmp_path / "cv-preds.csv"
    files = sorted(path.glob("mdb*.pgm"))
    result = CliRunner().invoke(app, ["predict", str(patch_cv), "--images", str(path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = _rows(out)
    assert len(rows) == len(files) == 28
    info = mias.parse_info(path / "Info.txt")
    for k in range(2):
        train, test = mias.task_split(info, task="abnormal", folds=2, fold=k, cv_seed=0, seed=0,
                                      localised=True)
        trained_on = {mias.patient(r.ref) for r in train}
        for r in test:  # the film's fold model is the one whose test split holds it...
            assert rows[f"{r.ref}.pgm"]["fold"] == str(k)
        for name, row in rows.items():  # ...and no film is scored by a model that trained on it
            if row["fold"] == str(k):
                assert mias.patient(name[:6]) not in trained_on, name
    import json

    summary = json.loads((tmp_path / "cv-preds.summary.json").read_text())
    assert summary["films"] == 28 and summary["abnormal_films"] == 16
    from torchmetrics.functional.classification import binary_auroc

    truth = torch.tensor([0 if r.label == "normal" else 1 for r in sorted(info, key=lambda r: r.ref)])
    scores = torch.tensor([float(rows[f"mdb{i:03d}.pgm"]["abnormal_score"]) for i in range(1, 29)])
    assert summary["auc_normal_vs_abnormal"] == pytest.approx(float(binary_auroc(scores, truth)))
    assert summary["film_rule_auc"]["max"] == pytest.approx(summary["auc_normal_vs_abnormal"])
    assert summary["lesions"]["with_coordinates"] == sum(1 for r in info if mias.abnormality(r))


def test_film_diagnostics_on_a_constructed_scan() -> None:
    """Four films whose patch scores are set by hand: the film rules' AUCs and the lesion counts
    are known."""
    from pgsl.data.mias import InfoRow
    from pgsl.experiments.predict import film_diagnostics

    info = [InfoRow("mdb001", "F", "NORM", None, ""), InfoRow("mdb002", "F", "NORM", None, ""),
            InfoRow("mdb003", "F", "CIRC", "B", "100 100 10"),
            InfoRow("mdb004", "F", "CIRC", "M", "500 500 10")]
    windows = {  # (x, y, score): a normal film with one hot false positive, a quiet normal film,
        "mdb001": [(50, 50, 0.99), (200, 200, 0.1), (300, 300, 0.1)],
        "mdb002": [(50, 50, 0.2), (200, 200, 0.2), (300, 300, 0.2)],
        # a lesion found at the top of its film, a lesion ranked in the middle of its film
        "mdb003": [(110, 90, 0.9), (400, 400, 0.3), (600, 600, 0.1)],
        "mdb004": [(520, 480, 0.5), (100, 100, 0.8), (900, 900, 0.05)],
    }
    rows = [{"file": f"/d/{f}.pgm", "x": x, "y": y, "abnormal_score": s}
            for f, w in windows.items() for x, y, s in w]
    d = film_diagnostics(rows, info, roi_size=64)
    # max: 0.99, 0.2 | 0.9, 0.8 -> the hot normal film outranks both abnormal ones: AUC 0.5
    # top-3 mean: 0.397, 0.2 | 0.433, 0.45 -> 1.0; mean: the same order -> 1.0
    assert d["film_rule_auc"] == {"max": pytest.approx(0.5), "top3_mean": pytest.approx(1.0),
                                  "mean": pytest.approx(1.0)}
    assert d["lesions"] == {"with_coordinates": 2, "covered_by_a_window": 2, "top_patch_on_lesion": 1,
                            "lesion_window_percentile_median": pytest.approx((2 / 3 + 1 / 3) / 2)}


def test_a_whole_image_model_prepares_films_as_its_training_films(
        films: tuple[Path, dict], tmp_path: Path) -> None:
    from pgsl.data import load_dataset, mias
    from pgsl.experiments.predict import load_image

    path, _ = films
    cfg = load_preset(str(TESTS / "tiny.toml")).replace(
        data={"dataset": "mias", "data_dir": str(path), "protocol": "whole", "image_size": 32,
              "limit_train": None, "limit_test": None, "segment": True, "orient": True, "clahe": 0.02,
              "crop_breast": True, "folds": 2, "fold": 1},
        defense={"kind": "none"}, model={"width": 8, "hidden": 16, "pool": 2})
    train_run(cfg, tmp_path / "whole")
    predictor = Predictor.in_process(tmp_path / "whole", torch.device("cpu"))
    assert not predictor.card.patches
    test = load_dataset(cfg.data).test
    _, rows = mias.task_split(mias.parse_info(path / "Info.txt"), task="three-class", folds=2, fold=1,
                              cv_seed=0, seed=0, localised=False)
    for i, row in enumerate(rows[:6]):
        x = load_image(path / f"{row.ref}.pgm", predictor.card)
        assert torch.equal(x, to_float(test.images[i])), row.ref
