"""MIAS's ROI protocol on a synthetic fixture in the real on-disk format: patches centred on the
planted lesions (Info.txt's bottom-left origin), breast tissue for the normal images, no image on
both sides of the split, and a model that learns from patches where the whole image at 128² does not."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from fixtures import synthetic_mammograms

from pgsl.config import load_preset
from pgsl.data import mias
from pgsl.runtime import train_run

TESTS = Path(__file__).parent


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, tuple[int, int, int]]]:
    path = tmp_path_factory.mktemp("synthetic_mias")
    return path, synthetic_mammograms(path)


@pytest.mark.slow
def test_info_coordinates_are_read_from_the_bottom_left(folder: tuple[Path, dict]) -> None:
    path, lesions = folder
    rows = {r.ref: r for r in mias.parse_info(path / "Info.txt")}
    for ref, (row, col, radius) in lesions.items():
        x, y, r = mias.abnormality(rows[ref])  # type: ignore[misc]
        assert mias.array_index(x, y, 1024) == (row, col) and r == radius
    assert mias.abnormality(rows["mdb001"]) is None  # a normal row


def test_roi_patches_are_centred_on_the_lesions_and_on_tissue(folder: tuple[Path, dict]) -> None:
    path, lesions = folder
    ds = mias.load(str(path), image_size=48, protocol="roi", roi_size=96, roi_patches=3, roi_jitter=0)
    train_rows, test_rows = mias.split_rows(mias.parse_info(path / "Info.txt"))
    assert not {r.ref for r in train_rows} & {r.ref for r in test_rows}
    assert len(ds.train) == 3 * len(train_rows) and len(ds.test) == len(test_rows)
    assert torch.equal(ds.test.labels, torch.tensor([mias.CLASSES.index(r.label) for r in test_rows]))
    x = ds.test.images[:, 0].float()
    centre = x[:, 20:28, 20:28].mean((1, 2))
    border = torch.cat([x[:, :4].flatten(1), x[:, -4:].flatten(1)], 1)
    for i, row in enumerate(test_rows):
        if row.ref in lesions:  # the lesion (bright) at the centre, tissue around it
            assert centre[i] > border[i].mean() + 25, row.ref
        else:  # breast tissue, not the dark background
            assert x[i].mean() > 60, row.ref
    # reading the coordinates from the top instead lands in the other half of the image: no lesion
    image = mias.read_pgm(path / f"{test_rows[-1].ref}.pgm")
    x0, y0, _ = mias.abnormality(test_rows[-1])  # type: ignore[misc]
    wrong, right = mias.crop(image, y0, x0, 96), mias.crop(image, *mias.array_index(x0, y0, 1024), 96)
    assert wrong[40:56, 40:56].mean() < right[40:56, 40:56].mean() - 25
    # test patches are the same every time; training patches are jittered
    again = mias.load(str(path), image_size=48, protocol="roi", roi_size=96, roi_patches=3, roi_jitter=0)
    assert torch.equal(again.test.images, ds.test.images)
    jittered = mias.load(str(path), image_size=48, protocol="roi", roi_size=96, roi_patches=3, roi_jitter=12)
    assert torch.equal(jittered.test.images, ds.test.images)
    assert not torch.equal(jittered.train.images, ds.train.images)


def _balanced(metrics: dict) -> float:
    return float(metrics["test_metrics"]["decision"]["balanced_accuracy"])


@pytest.mark.slow
def test_the_roi_protocol_learns_where_the_whole_image_does_not(folder: tuple[Path, dict],
                                                                 tmp_path: Path) -> None:
    path, _ = folder
    base = load_preset(str(TESTS / "tiny.toml")).replace(
        data={"dataset": "mias", "data_dir": str(path), "limit_test": None}, defense={"kind": "none"},
        train={"epochs": 6, "batch_size": 16}, model={"width": 8, "hidden": 32, "pool": 4})
    roi_data = {"protocol": "roi", "image_size": 32, "roi_size": 96, "roi_patches": 6, "roi_jitter": 8,
                "limit_train": None}
    roi = train_run(base.replace(data=roi_data), tmp_path / "roi")
    whole = train_run(base.replace(data={"protocol": "whole", "image_size": 128, "limit_train": None}),
                      tmp_path / "whole")
    assert _balanced(roi) >= 0.7  # chance: 1/3
    assert _balanced(whole) <= 0.5
    assert roi["majority_baseline"]["class"] == "normal"  # the most frequent training class


def test_mias_presets_and_the_reproduce_default() -> None:
    from pgsl.experiments.reproduce import default_preset

    quick, paper = load_preset("mias-quick"), load_preset("mias-paper")
    assert (quick.data.dataset, quick.data.protocol, quick.train.augment, quick.train.balanced) == (
        "mias", "roi", True, True)
    assert (paper.data.dataset, paper.data.protocol, paper.train.augment, paper.train.balanced) == (
        "mias", "whole", True, True)
    for preset in (quick, paper):  # the preparation the cross-validation chose
        assert (preset.data.segment, preset.data.orient, preset.data.clahe) == (True, True, 0.01)
    assert default_preset("mias") == "mias-quick" and default_preset("mnist") == "quick"


@pytest.mark.slow
def test_baselines_train_pgsl_the_vanilla_split_and_the_plain_cnn_on_the_same_split(
        folder: tuple[Path, dict], tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from pgsl.cli import app
    from pgsl.experiments.results import BaselineRow, read_rows

    path, _ = folder
    out = tmp_path / "baselines"
    args = ["baselines", "--dataset", "mias", "--data-dir", str(path), "--out", str(out), "--folds", "0",
            "--set", "data.image_size=16", "--set", "data.roi_patches=2", "--set", "train.epochs=1",
            "--set", "recovery.max_iter=2", "--set", "model.width=8"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    rows = read_rows(out / "baselines.json", BaselineRow)
    assert [r.model for r in rows] == ["PGSL", "vanilla split", "plain CNN", "majority"]
    assert len({r.n_test for r in rows}) == 1  # the same test split for all four
    for r in rows[:2]:  # the split runs: the decision's metrics from the run's own metrics.json
        m = json.loads((Path(r.run) / "metrics.json").read_text())
        assert r.balanced_accuracy == m["test_metrics"]["decision"]["balanced_accuracy"]
        assert json.loads((Path(r.run) / "config.json").read_text())["data"]["protocol"] == "roi"
    assert rows[3].balanced_accuracy == pytest.approx(1 / 3)
    assert "| plain CNN |" in (out / "baselines.md").read_text()
    again = CliRunner().invoke(app, args)  # cached: nothing retrained, the same rows
    assert again.exit_code == 0 and read_rows(out / "baselines.json", BaselineRow) == rows
