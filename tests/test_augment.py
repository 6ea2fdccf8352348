"""Client-side training augmentation and class-balanced sampling."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from typer.testing import CliRunner

from pgsl.cli import app
from pgsl.data.augment import augment
from pgsl.data.base import ImageSet, batches

TESTS = Path(__file__).parent


def test_augment_is_seeded_per_image_and_stays_an_image() -> None:
    x = torch.rand(16, 1, 20, 20)
    a = augment(x, torch.Generator().manual_seed(0))
    b = augment(x, torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and a.shape == x.shape and 0 <= float(a.min()) and float(a.max()) <= 1
    assert not torch.allclose(a[0], x[0]) and not torch.allclose(a[0], a[1])
    # without rotation, shift or jitter: each image is itself or its mirror image, about half flipped
    plain = augment(x, torch.Generator().manual_seed(1), degrees=0, shift=0, contrast=0, brightness=0)
    same = [torch.allclose(p, i, atol=1e-5) for p, i in zip(plain, x, strict=True)]
    mirrored = [torch.allclose(p, i.flip(-1), atol=1e-5) for p, i in zip(plain, x, strict=True)]
    assert all(s or m for s, m in zip(same, mirrored, strict=True)) and 3 <= sum(mirrored) <= 13


def test_balanced_sampling_draws_each_class_equally_often() -> None:
    labels = torch.cat([torch.zeros(900, dtype=torch.long), torch.ones(100, dtype=torch.long)])
    data = ImageSet(torch.zeros(1000, 1, 2, 2, dtype=torch.uint8), labels)
    drawn = torch.cat([y for _, y in batches(data, 100, shuffle_seed=3, balanced=True)])
    assert len(drawn) == 1000 and abs(int(drawn.sum()) - 500) < 60
    again = torch.cat([y for _, y in batches(data, 100, shuffle_seed=3, balanced=True)])
    assert torch.equal(drawn, again)


def test_a_run_trains_with_augmentation_and_balanced_batches(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", "--preset", str(TESTS / "tiny.toml"), "--out", str(out),
                                      "--defense", "none", "--set", "train.augment=true",
                                      "--set", "train.balanced=true"])
    assert result.exit_code == 0, result.output
    train = json.loads((out / "config.json").read_text())["train"]
    assert train["augment"] is True and train["balanced"] is True
