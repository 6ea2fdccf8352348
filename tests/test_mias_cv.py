"""MIAS's protocol of record on synthetic fixtures in the real on-disk format: patient-grouped,
stratified folds, the clinical tasks and their majority baselines, film preparation that keeps a
planted lesion in its patch, and a cross-validation that resumes after a kill and refuses another
configuration's folds."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures import mias_folder, synthetic_mammograms

from pgsl.config import TASKS, DataConfig, load_preset
from pgsl.data import load_dataset, mammo, mias
from pgsl.experiments.cache import StaleResult

TESTS = Path(__file__).parent


@pytest.fixture(scope="module")
def info_rows(tmp_path_factory: pytest.TempPathFactory) -> list[mias.InfoRow]:
    path = tmp_path_factory.mktemp("mias_rows")
    mias_folder(path)
    return mias.parse_info(path / "Info.txt")


@pytest.fixture(scope="module")
def films(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, tuple[int, int, int]]]:
    """Stored as real films: right breasts mirrored, a bright label in a corner."""
    path = tmp_path_factory.mktemp("mias_films")
    return path, synthetic_mammograms(path, counts=(24, 18, 18), size=512, as_films=True)


def test_consecutive_films_are_one_patient() -> None:
    assert mias.patient("mdb001") == mias.patient("mdb002") == 1
    assert mias.patient("mdb003") == mias.patient("mdb004") == 2 != mias.patient("mdb002")
    assert mias.patient("mdb322") == 161


@pytest.mark.parametrize("task", list(TASKS))
def test_folds_keep_every_patient_on_one_side_and_are_stratified(info_rows: list[mias.InfoRow],
                                                                 task: str) -> None:
    folds = 5
    splits = [mias.task_split(info_rows, task=task, folds=folds, fold=k, cv_seed=3, seed=0, localised=True)
              for k in range(folds)]
    usable = [r for r in info_rows if mias.task_label(r, task) is not None
              and (r.abnormality == "NORM" or mias.abnormality(r) is not None)]
    tests = [test for _, test in splits]
    # every usable row is tested exactly once, and nothing else is
    assert sorted(r.ref for t in tests for r in t) == sorted(r.ref for r in usable)
    for train, test in splits:
        assert len(train) + len(test) == len(usable)
        assert not {mias.patient(r.ref) for r in train} & {mias.patient(r.ref) for r in test}
    # stratified: each fold holds its share of each class, to within one patient's two films
    totals = Counter(mias.task_label(r, task) for r in usable)
    for test in tests:
        counts = Counter(mias.task_label(r, task) for r in test)
        for label, total in totals.items():
            assert abs(counts[label] - total / folds) <= 2.5, (task, label, counts, totals)
    # another seed draws other folds
    other = mias.task_split(info_rows, task=task, folds=folds, fold=0, cv_seed=4, seed=0, localised=True)[1]
    assert {r.ref for r in other} != {r.ref for r in tests[0]}


def test_each_task_has_its_labels(info_rows: list[mias.InfoRow]) -> None:
    by_label = {r.label: r for r in info_rows}
    normal, benign, malignant = by_label["normal"], by_label["benign"], by_label["malignant"]
    assert [mias.task_label(r, "three-class") for r in (normal, benign, malignant)] == [0, 1, 2]
    assert [mias.task_label(r, "abnormal") for r in (normal, benign, malignant)] == [0, 1, 1]
    assert [mias.task_label(r, "malignant") for r in (normal, benign, malignant)] == [None, 0, 1]
    assert TASKS["abnormal"][1] == "abnormal" and TASKS["malignant"] == ("benign", "malignant")


@pytest.mark.parametrize(("task", "majority"), [("three-class", "normal"), ("abnormal", "abnormal"),
                                                ("malignant", "benign")])
def test_task_datasets_and_their_majority_baselines(
        films: tuple[Path, dict], task: str, majority: str) -> None:
    from pgsl.experiments.cv import _majority

    path, _ = films
    cfg = load_preset(str(TESTS / "tiny.toml")).replace(
        data={"dataset": "mias", "data_dir": str(path), "protocol": "whole", "image_size": 16,
              "limit_train": None, "limit_test": None, "task": task, "folds": 3, "fold": 1})
    ds = load_dataset(cfg.data)
    rows = {r.ref: r for r in mias.parse_info(path / "Info.txt")}
    assert ds.classes == TASKS[task]
    expected = {"three-class": 60, "abnormal": 60, "malignant": 36}[task]  # 24 normal, 18 + 18 abnormal
    assert len(ds.train) + len(ds.test) == expected
    # the labels are the task's: in the whole protocol a sample is one Info.txt row, in file order
    train, test = mias.task_split(list(rows.values()), task=task, folds=3, fold=1, cv_seed=0, seed=0,
                                  localised=False)
    assert ds.test.labels.tolist() == [mias.task_label(r, task) for r in test]
    assert ds.train.labels.tolist() == [mias.task_label(r, task) for r in train]
    m = _majority(cfg)
    assert m["class"] == majority
    top = ds.classes.index(majority)
    assert m["accuracy"] == pytest.approx(float((ds.test.labels == top).float().mean()))
    assert m["balanced_accuracy"] == pytest.approx(1 / len(ds.classes)) and m["auc_ovr"] == pytest.approx(0.5)


def test_preparation_removes_the_label_turns_the_breast_and_keeps_the_lesion(
        films: tuple[Path, dict]) -> None:
    path, lesions = films
    ref = next(r for r in sorted(lesions) if int(r[3:]) % 2 == 1)  # a mirrored film with a lesion
    film = mias.read_pgm(path / f"{ref}.pgm")
    assert film[30:60, 30:60].mean() > 200  # the stored film: a label in the top-left corner
    p = mammo.prepare(film, segment=True, orient=True, clahe=0.01)
    assert p.flipped and mammo.chest_wall_left(p.mask)
    assert p.image[~p.mask].max() == 0 and p.image[30:60, -60:-30].max() == 0  # the label is gone
    row = {r.ref: r for r in mias.parse_info(path / "Info.txt")}[ref]
    r, c = mias.lesion_centre(row, p)  # type: ignore[misc]
    lr, lc, _ = lesions[ref]
    assert (r, c) == (lr, film.shape[1] - 1 - lc)
    patch = mias.crop(p.image, r, c, 64).astype(float)
    assert patch[28:36, 28:36].mean() > patch[:8].mean() + 25  # bright lesion at the patch's centre
    # a film already facing left is not flipped, and without preparation nothing changes
    left = mias.read_pgm(path / "mdb002.pgm")
    assert not mammo.prepare(left, segment=True, orient=True, clahe=0.0).flipped
    plain = mammo.prepare(left, segment=False, orient=False, clahe=0.0)
    assert np.array_equal(plain.image, left) and plain.mask.all()


def test_prepared_roi_patches_hold_the_lesions_and_normal_patches_hold_tissue(
        films: tuple[Path, dict]) -> None:
    path, lesions = films
    rows = mias.parse_info(path / "Info.txt")
    for fold in range(3):
        ds = mias.load(str(path), image_size=32, protocol="roi", roi_size=64, roi_patches=2, roi_jitter=0,
                       folds=3, fold=fold, prep=mias.Preparation(segment=True, orient=True, clahe=0.01))
        _, test = mias.task_split(rows, task="three-class", folds=3, fold=fold, cv_seed=0, seed=0,
                                  localised=True)
        x = ds.test.images[:, 0].float()
        for i, row in enumerate(test):
            if row.ref in lesions:
                assert x[i, 13:19, 13:19].mean() > x[i, :4].mean() + 20, row.ref
            else:  # segmented breast tissue, never the label or the background
                assert (x[i] > 0).float().mean() > 0.95, row.ref


def _cv_config(path: Path):
    return load_preset(str(TESTS / "tiny.toml")).replace(
        data={"dataset": "mias", "data_dir": str(path), "protocol": "roi", "image_size": 16, "roi_size": 64,
              "roi_patches": 2, "roi_jitter": 4, "limit_train": None, "limit_test": None, "task": "abnormal"},
        train={"epochs": 1, "batch_size": 16}, model={"width": 8, "hidden": 16, "pool": 2})


def test_a_killed_cross_validation_resumes_at_the_unfinished_fold(
        films: tuple[Path, dict], tmp_path: Path) -> None:
    from pgsl.experiments.cv import cross_validate

    path, _ = films
    out = tmp_path / "cv"
    cfg = _cv_config(path)
    models = ["none", "plain", "majority"]
    first = cross_validate(cfg, out, models=models, folds=3, cv_seed=1)
    kept = {p: p.stat().st_mtime_ns for p in out.glob("fold-[01]/**/*") if p.is_file()}
    # the state a kill during fold 2's split run leaves: its checkpoint, no metrics, no fold result
    (out / "fold-2" / "fold.json").unlink()
    (out / "fold-2" / "none" / "metrics.json").unlink()
    os.remove(out / "fold-2" / "plain" / "plain_cnn.pt")
    (out / "cv.json").unlink()
    again = cross_validate(cfg, out, models=models, folds=3, cv_seed=1)
    assert {p: p.stat().st_mtime_ns for p in kept} == kept  # folds 0 and 1 were not touched
    assert (out / "fold-2" / "none" / "metrics.json").is_file()
    for m in models:
        assert [f["balanced_accuracy"] for f in again["models"][m]["per_fold"]] == \
               [f["balanced_accuracy"] for f in first["models"][m]["per_fold"]]
    assert json.loads((out / "cv.json").read_text())["models"]["none"]["per_fold"][2]["fold"] == 2
    # the same folder with another configuration is refused, not read
    with pytest.raises(StaleResult, match="other settings .*data.task: 'abnormal' -> 'three-class'"):
        cross_validate(cfg.replace(data={"task": "three-class"}), out, models=models, folds=3, cv_seed=1)
    with pytest.raises(StaleResult, match="data.cv_seed: 1 -> 2"):
        cross_validate(cfg, out, models=models, folds=3, cv_seed=2)


@pytest.mark.slow
def test_baselines_cross_validate_every_model_on_the_same_folds(
        films: tuple[Path, dict], tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from pgsl.cli import app

    path, _ = films
    out = tmp_path / "cvb"
    args = ["baselines", "--dataset", "mias", "--data-dir", str(path), "--out", str(out), "--folds", "3",
            "--cv-seed", "5", "--set", "data.image_size=16", "--set", "data.roi_size=64",
            "--set", "data.roi_patches=2", "--set", "data.task=malignant", "--set", "train.epochs=1",
            "--set", "recovery.max_iter=2", "--set", "model.width=8", "--set", "model.hidden=16",
            "--set", "pixel_attack.surrogate_epochs=1"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "cv.json").read_text())
    assert (report["task"], report["folds"], report["cv_seed"]) == ("malignant", 3, 5)
    assert list(report["models"]) == ["pgsl", "none", "plain", "majority"]
    n_test = None
    for name, m in report["models"].items():
        for key in ("balanced_accuracy_mean", "balanced_accuracy_std", "auc_mean", "auc_std"):
            assert isinstance(m[key], float), (name, key)
        folds = [f["n_test"] for f in m["per_fold"]]
        assert n_test is None or folds == n_test  # the same folds for every model
        n_test = folds
        values = [f["balanced_accuracy"] for f in m["per_fold"]]
        assert m["balanced_accuracy_mean"] == pytest.approx(float(np.mean(values)))
        assert m["balanced_accuracy_std"] == pytest.approx(float(np.std(values, ddof=1)))
    assert sum(n_test) == 36  # every abnormal row of the 36 tested once (no normal row in this task)
    assert report["models"]["majority"]["auc_mean"] == pytest.approx(0.5)
    for k in range(3):
        run_cfg = json.loads((out / f"fold-{k}" / "pgsl" / "config.json").read_text())["data"]
        assert (run_cfg["folds"], run_cfg["fold"], run_cfg["cv_seed"]) == (3, k, 5)
        assert run_cfg["task"] == "malignant"
    assert "| PGSL |" in (out / "cv.md").read_text()
    from pgsl.experiments.report import cv_section

    html = cv_section(out)  # the report's MIAS section reads the same numbers
    pgsl = report["models"]["pgsl"]
    assert "task malignant: 3-fold" in html
    assert f"{pgsl['balanced_accuracy_mean']:.3f} ± {pgsl['balanced_accuracy_std']:.3f}" in html
    assert cv_section(tmp_path / "nothing") == ""


def test_cv_options_are_checked() -> None:
    with pytest.raises(ValueError, match="MIAS dataset only"):
        DataConfig(dataset="mnist", task="abnormal")
    with pytest.raises(ValueError, match="MIAS dataset only"):
        DataConfig(dataset="mnist", folds=5)
    with pytest.raises(ValueError, match="data.fold must be in 0..4"):
        DataConfig(dataset="mias", folds=5, fold=5)
    with pytest.raises(ValueError, match="data.folds"):
        DataConfig(dataset="mias", folds=1)
    with pytest.raises(ValueError, match="data.task"):
        DataConfig(dataset="mias", task="benign")
    with pytest.raises(ValueError, match="clip limit"):
        DataConfig(dataset="mias", clahe=2.0)


def test_scan_normal_patches_include_the_breast_edge_where_interior_ones_do_not(
        films: tuple[Path, dict]) -> None:
    path, _ = films
    prep = mias.Preparation(segment=True, orient=True, clahe=0.0)

    def background(roi_normal: str) -> torch.Tensor:
        ds = mias.load(str(path), image_size=32, protocol="roi", roi_size=64, roi_patches=8, folds=3, fold=0,
                       prep=prep, roi_normal=roi_normal)
        normal = ds.train.images[ds.train.labels == 0].float()
        return (normal == 0).flatten(1).float().mean(1)  # each patch's share of background

    interior, scan = background("interior"), background("scan")
    assert interior.max() < 0.02  # wholly inside the breast
    assert (scan > 0.1).float().mean() > 0.1 and scan.max() <= 0.55  # edges, but at least half breast
    with pytest.raises(ValueError, match="roi_normal"):
        DataConfig(dataset="mias", roi_normal="edge")
