"""Presets load, and bad configuration is refused with a clear message."""

from __future__ import annotations

from pathlib import Path

import pytest

from pgsl.config import (
    apply_settings,
    available_presets,
    config_from_dict,
    load_config,
    load_preset,
    save_config,
)


@pytest.mark.parametrize("name", ["quick", "paper", "mias-quick", "mias-paper"])
def test_shipped_presets_load(name: str, tmp_path: Path) -> None:
    assert name in available_presets()
    cfg = load_preset(name)
    assert cfg.model.width % 4 == 0 and cfg.train.lr == 1e-3 and cfg.recovery.mu == 0.55
    assert cfg.fusion.weights == (0.5, 0.3, 0.2)
    save_config(cfg, tmp_path / "c.json")
    assert load_config(tmp_path / "c.json") == cfg  # the run folder's copy round-trips


def test_unknown_section_or_key() -> None:
    with pytest.raises(ValueError, match=r"unknown config section \[optim\]"):
        config_from_dict({"optim": {}})
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['lr'\] in \[model\]"):
        config_from_dict({"model": {"lr": 1}})


def test_missing_preset_lists_the_available_ones() -> None:
    with pytest.raises(FileNotFoundError, match="available presets: mias-paper, mias-quick, paper, quick"):
        load_preset("fast")


def test_set_overrides_typed_fields_and_refuses_unknown_or_mistyped() -> None:
    from pgsl.config import apply_settings, load_preset

    cfg = apply_settings(load_preset("quick"), ["recovery.svt=gram", "pixel_attack.pixels=8",
                                                "recovery.mu=1", "train.epochs = 3"])
    assert cfg.recovery.svt == "gram" and cfg.pixel_attack.pixels == 8 and cfg.train.epochs == 3
    assert cfg.recovery.mu == 1.0 and isinstance(cfg.recovery.mu, float)
    with pytest.raises(ValueError, match="unknown setting"):
        apply_settings(cfg, ["recovery.nope=1"])
    with pytest.raises(ValueError, match="section.key=value"):
        apply_settings(cfg, ["svt"])
    with pytest.raises(ValueError, match="must be a int"):
        apply_settings(cfg, ["train.epochs=many"])


def test_the_old_attack_section_gets_a_message_that_says_its_new_name(tmp_path: Path) -> None:
    old = tmp_path / "old.toml"
    old.write_text("[attack]\npixels = 8\n")
    with pytest.raises(ValueError, match=r"\[attack\] is now \[pixel_attack\]"):
        load_preset(str(old))
    with pytest.raises(ValueError, match=r"attack.pixels -> pixel_attack.pixels"):
        apply_settings(load_preset("quick"), ["attack.pixels=8"])
    # the command line prints the section names as they are (not read as console markup)
    from typer.testing import CliRunner

    from pgsl.cli import app

    r = CliRunner().invoke(app, ["train", "--out", str(tmp_path / "r"), "--set", "attack.pixels=8"])
    assert r.exit_code == 2 and "section [attack] is now [pixel_attack]" in " ".join(r.output.split())


def test_building_a_config_loads_no_defence_module() -> None:
    """In a fresh interpreter: a Config names its defence without importing any defence module
    (nor torch, nor Opacus); options are checked by the named defence's module alone."""
    from probes import loaded

    named = ("from pgsl.config import Config, DefenseConfig\n"
             "Config(defense=DefenseConfig('dp'))\n"
             "Config().replace(defense={'kind': 'dp'})")
    assert [m for m in loaded(named, also=("torch", "opacus"))
            if m in ("torch", "opacus") or m.startswith("pgsl.defenses.")] == []
    with_options = named + "\nDefenseConfig('noise', {'scale': 0.5})"
    assert [m for m in loaded(with_options) if m.startswith("pgsl.defenses.")] == [
        "pgsl.defenses.base", "pgsl.defenses.noise"]
