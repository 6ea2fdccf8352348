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


def test_config_sections_defence_options_and_attack_budgets_are_read_alike() -> None:
    """One reader (pgsl.typed.build) for the three: wrong types refused, ints widened to floats."""
    from pgsl.attacks import parse_budget
    from pgsl.attacks.dlg import DLGBudget
    from pgsl.config import config_from_dict

    with pytest.raises(ValueError, match=r"attack 'dlg': budget iterations must be an integer, got 1.5"):
        parse_budget(DLGBudget, {"iterations": 1.5}, "dlg")
    with pytest.raises(ValueError, match=r"budget stages must be a list, got 3"):
        parse_budget(DLGBudget, {"stages": 3}, "dlg")
    assert parse_budget(DLGBudget, {"stages": [0, 1]}, "dlg").stages == (0, 1)
    with pytest.raises(ValueError, match=r"\[train\] epochs must be an integer, got '3'"):
        config_from_dict({"train": {"epochs": "3"}})
    with pytest.raises(ValueError, match=r"\[data\] limit_train must be an integer or none, got 1.5"):
        config_from_dict({"data": {"limit_train": 1.5}})
    with pytest.raises(ValueError, match=r"data.task must be one of"):
        config_from_dict({"data": {"task": "benign"}})
    cfg = config_from_dict({"train": {"lr": 1}, "fusion": {"weights": [1, 0, 0]}})
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float) and cfg.fusion.weights == (1.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="unknown key"):
        config_from_dict({"train": {"epoch": 3}})
