"""Results cached by their key (pgsl.experiments.cache): differences named, stale files refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pgsl.config import load_preset
from pgsl.data import ImageSet
from pgsl.experiments.cache import StaleResult, check, differences
from pgsl.experiments.plain import plain_cnn

TINY = str(Path(__file__).parent / "tiny.toml")


def test_differences_name_every_changed_added_and_removed_setting() -> None:
    saved = {"data": {"limit": 512, "dataset": "mnist"}, "victims": 64, "gone": 1}
    wanted = {"data": {"limit": 256, "dataset": "mnist"}, "victims": 64, "new": [1, 2]}
    assert differences(saved, wanted) == ["data.limit: 512 -> 256", "gone: 1 -> (absent)",
                                          "new: (absent) -> [1, 2]"]
    assert differences(saved, saved) == []


def test_check_accepts_the_same_key_as_it_reads_back_and_refuses_others() -> None:
    check({"pixels": [1, 2]}, {"pixels": (1, 2)}, "x")  # a tuple reads back from JSON as a list
    with pytest.raises(StaleResult, match=r"R was computed with other settings \(pixels: \[1, 2\] -> "
                                          r"\[1, 3\]\): use another"):
        check({"pixels": [1, 2]}, {"pixels": (1, 3)}, "R")
    with pytest.raises(StaleResult, match="carries no record"):
        check(None, {"pixels": 1}, "R")
    many = {f"k{i}": i for i in range(8)}
    with pytest.raises(StaleResult, match=r"\(and 3 more\)"):
        check(many, {k: v + 1 for k, v in many.items()}, "R")


def test_the_config_key_is_what_reads_back_from_disk() -> None:
    cfg = load_preset(TINY)
    assert cfg.key() == cfg.replace(train={"epochs": cfg.train.epochs}).key()
    assert cfg.key() != cfg.replace(train={"epochs": cfg.train.epochs + 1}).key()
    assert isinstance(cfg.key()["fusion"]["weights"], list)


def test_a_cached_plain_cnn_of_another_configuration_is_refused_not_loaded(tmp_path: Path) -> None:
    cfg = load_preset(TINY).replace(train={"epochs": 1})
    train = ImageSet(torch.randint(0, 256, (16, 1, 28, 28), dtype=torch.uint8), torch.arange(16) % 10)
    path = tmp_path / "plain_cnn.pt"
    first = plain_cnn(cfg, train, 1, 10, path, torch.device("cpu"))
    again = plain_cnn(cfg, train, 1, 10, path, torch.device("cpu"))  # read back, not retrained
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), again.state_dict().values(),
                                                 strict=True))
    with pytest.raises(StaleResult, match=r"config.train.lr: .* -> 0.5"):
        plain_cnn(cfg.replace(train={"lr": 0.5}), train, 1, 10, path, torch.device("cpu"))
    with pytest.raises(StaleResult, match="train_images: 16 -> 8"):
        plain_cnn(cfg, ImageSet(train.images[:8], train.labels[:8]), 1, 10, path, torch.device("cpu"))
