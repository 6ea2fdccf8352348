"""Run configuration: frozen dataclasses, loaded from the TOML presets in ``pgsl/configs``.

A preset holds the hyperparameters (``quick.toml``, ``paper.toml``); the dataset and its location
come from the command line. The fully resolved configuration is written beside every run as
``config.json`` so that ``pgsl evaluate`` and ``--resume`` rebuild exactly the same pipeline.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pgsl.defenses import PROPOSED
from pgsl.typed import build

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

PRESET_DIR = Path(__file__).parent / "configs"


@dataclass(frozen=True)
class DataConfig:
    """Which images, and how many of them."""

    dataset: str = "mnist"
    data_dir: str | None = None
    image_size: int = 256  # MIAS / DICOM only: images are resized to image_size x image_size
    limit_train: int | None = None  # a seeded random subset of the training split
    limit_test: int | None = None  # the first N test images (None: the whole test split)
    # MIAS: "whole" (the paper's: one sample per Info.txt row, the whole image) or "roi" (patches
    # of roi_size original pixels around each abnormality's centre, and of breast tissue from the
    # normal images, resized to image_size; roi_patches jittered crops per row in training, by up
    # to roi_jitter pixels; one centred crop per row in testing)
    protocol: str = "whole"
    roi_size: int = 128
    roi_patches: int = 8
    roi_jitter: int = 16
    # MIAS: the clinical task. "three-class" (the paper's: normal / benign / malignant), "abnormal"
    # (normal tissue vs any abnormality: screening) or "malignant" (benign vs malignant among the
    # abnormal rows: diagnosis)
    task: str = "three-class"
    # MIAS: patient-grouped, stratified k-fold cross-validation. folds = 0: the paper's single
    # seeded split; folds = K >= 2: the test split is fold `fold` (0..K-1) of K, drawn with `cv_seed`
    # (both films of a woman, and every patch of either, in one fold; stratified by the task's label)
    folds: int = 0
    fold: int = 0
    cv_seed: int = 0
    # MIAS preparation of each full-resolution film (pgsl.data.mammo): background and film-label
    # removal, the chest wall turned to the left, CLAHE's clip limit (0: off), and (whole protocol)
    # the breast's bounding box as the image
    segment: bool = False
    orient: bool = False
    clahe: float = 0.0
    crop_breast: bool = False
    # MIAS ROI protocol, with data.segment: where the normal films' patches come from. "interior":
    # windows wholly inside the breast; "scan": any window at least half breast, the windows
    # `pgsl predict` scans a film with (skin line, pectoral muscle and nipple included)
    roi_normal: str = "interior"

    def __post_init__(self) -> None:
        if self.image_size < 2 or self.image_size % 2:  # the reversible down-sampling halves it
            raise ValueError(f"data.image_size must be even and >= 2, got {self.image_size}")
        if self.protocol not in ("whole", "roi"):
            raise ValueError(f"data.protocol must be 'whole' or 'roi', got {self.protocol!r}")
        if self.roi_size < 8 or self.roi_patches < 1 or self.roi_jitter < 0:
            raise ValueError("data.roi_size must be >= 8, roi_patches >= 1 and roi_jitter >= 0")
        if self.task not in TASKS:
            raise ValueError(f"data.task must be one of {', '.join(TASKS)}, got {self.task!r}")
        if self.folds == 1 or self.folds < 0:
            raise ValueError(f"data.folds must be 0 (one split) or at least 2, got {self.folds}")
        if self.folds and not 0 <= self.fold < self.folds:
            raise ValueError(f"data.fold must be in 0..{self.folds - 1}, got {self.fold}")
        if self.roi_normal not in ("interior", "scan"):
            raise ValueError(f"data.roi_normal must be 'interior' or 'scan', got {self.roi_normal!r}")
        if not 0.0 <= self.clahe <= 1.0:
            raise ValueError(f"data.clahe (CLAHE's clip limit) must be in [0, 1], got {self.clahe}")
        mias_only = {"task": self.task != "three-class", "folds": self.folds != 0}
        if self.dataset != "mias" and any(mias_only.values()):
            used = ", ".join(f"data.{k}" for k, v in mias_only.items() if v)
            raise ValueError(f"{used} applies to the MIAS dataset only, not {self.dataset!r}")


# the MIAS tasks (data.task) and their classes, in label order
TASKS: dict[str, tuple[str, ...]] = {
    "three-class": ("normal", "benign", "malignant"),
    "abnormal": ("normal", "abnormal"),
    "malignant": ("benign", "malignant"),
}


@dataclass(frozen=True)
class DefenseConfig:
    """What protects the cut: a name from :data:`pgsl.defenses.DEFENSES` (``pgsl train
    --defense NAME``) and that defence's options (``[defense.params]``, e.g. ``scale = 0.5`` for
    ``noise``), checked by the defence's own ``Params`` dataclass."""

    kind: str = PROPOSED
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        import pgsl.defenses  # a registry of names: no defence module is loaded for the name

        pgsl.defenses.DEFENSES.check([self.kind])
        if self.params:  # options are checked by the defence's own dataclass (its module loads)
            from pgsl.defenses.base import parse_params

            parse_params(pgsl.defenses.DEFENSES[self.kind].Params, self.params, self.kind)


@dataclass(frozen=True)
class PixelAttackConfig:
    """PGSL's own client-side JSMA pixel attack (paper §IV-A): section ``[pixel_attack]``, not to
    be confused with the adversary's attacks (:mod:`pgsl.attacks`) or Table II's evasion attacks."""

    pixels: float = 4  # budget: a count of input features if >= 1, a fraction of them if < 1
    pixels_per_step: int = 1  # how many features one saliency step may change
    theta: float = 1.0  # change applied to each chosen feature before clipping to [0, 1]
    # which class the training-time attack moves away from: "predicted" (the surrogate's own
    # prediction, as at inference where the client has no label) or "true" (the label). "true"
    # writes the label into the perturbation and the server learns to read it back: it scores
    # ~0.998 when test images are attacked with their labels too, but only the surrogate's
    # accuracy when they are not (measured on MNIST; see the README).
    label_source: Literal["predicted", "true"] = "predicted"
    surrogate_width: int = 16
    surrogate_epochs: int = 1


@dataclass(frozen=True)
class RecoveryConfig:
    """The server's APG robust-PCA recovery (paper §IV-C, docs/design.md#the-pgsl-pipeline)."""

    mu: float = 0.55
    lam: float | None = None  # None: 1 / sqrt(max(m, n))
    max_iter: int = 30
    tol: float = 1e-4
    eta: float = 0.9  # continuation factor of Lin et al. (2009); 1.0 disables continuation
    svt: str = "svd"  # singular value thresholding: "svd" (exact), "gram" (f64 eigh), "subspace",
    # "products" (Newton-Schulz, no eigensolver), "auto"


@dataclass(frozen=True)
class ModelConfig:
    """The 7-conv + 2-FC network, cut after conv2 (paper §IV-F)."""

    width: int = 64  # channels of every conv layer; the cut carries width x H/2 x W/2
    dropout: float = 0.25
    pool: int = 4  # adaptive average pool to pool x pool before the FC layers
    hidden: int = 128


@dataclass(frozen=True)
class FusionConfig:
    """Adaptive weighted decision fusion (paper eqs. 9-11)."""

    weights: tuple[float, float, float] = (0.5, 0.3, 0.2)  # (W_gamma: S_r, W_rho: S_f, W_beta: S_a)
    confidence: Literal["sample", "class"] = "sample"


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 1
    batch_size: int = 64
    eval_batch_size: int = 256
    eval_every: int = 1  # test-set evaluation every N epochs (the last epoch is always evaluated)
    lr: float = 1e-3
    weight_decay: float = 3e-4
    seed: int = 0
    augment: bool = False  # flips, small rotations and shifts, intensity jitter (pgsl.data.augment)
    balanced: bool = False  # each epoch samples the classes equally often (with replacement)


@dataclass(frozen=True)
class GuardConfig:
    """The client's hijack detector, SplitGuard (:mod:`pgsl.client.splitguard`): on when
    ``splitguard`` (``pgsl train --guard``), and its knobs."""

    splitguard: bool = False
    p_fake: float = 0.1  # probability that a batch after the warm-up is sent as a fake one
    warmup: int = 20  # regular steps before the first fake batch (the paper's N)
    min_fakes: int = 10  # fake batches scored before a decision, and the window of the mean
    threshold: float = 0.5  # flag when the mean score falls below it
    mult: float = 5.0  # squashing: sigmoid(mult * x) ** exp (the paper's choice)
    exp: float = 2.0

    def __post_init__(self) -> None:
        if not 0 < self.p_fake < 1 or self.warmup < 0 or self.min_fakes < 1 or not 0 < self.threshold < 1:
            raise ValueError(f"SplitGuard needs 0 < p_fake < 1, warmup >= 0, min_fakes >= 1 and "
                             f"0 < threshold < 1, got {self}")

    @property
    def expected_steps(self) -> int:
        """About how many steps a hijack takes to be flagged."""
        return self.warmup + math.ceil(self.min_fakes / self.p_fake)


@dataclass(frozen=True)
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    defense: DefenseConfig = field(default_factory=DefenseConfig)
    pixel_attack: PixelAttackConfig = field(default_factory=PixelAttackConfig)
    recovery: RecoveryConfig = field(default_factory=RecoveryConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    guard: GuardConfig = field(default_factory=GuardConfig)

    def replace(self, **sections: dict[str, Any]) -> Config:
        """A copy with some fields of some sections replaced: ``cfg.replace(train={"epochs": 3})``."""
        d = sections.get("defense", {})
        if d.get("kind", self.defense.kind) != self.defense.kind and "params" not in d:
            # another defence's options do not carry over to this one
            sections = {**sections, "defense": {**sections["defense"], "params": {}}}
        updated = {
            name: dataclasses.replace(getattr(self, name), **values)
            for name, values in sections.items()
            if values
        }
        return dataclasses.replace(self, **updated)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def key(self) -> dict[str, Any]:
        """The config as it reads back from its JSON file (tuples as lists, the defence's
        parameters completed): the key of every result computed from it."""
        read_back = config_from_dict(json.loads(json.dumps(self.to_dict())))
        return dict(json.loads(json.dumps(read_back.to_dict())))


# the section's name before it said whose attack it configures
RENAMED = ("the config section [attack] is now [pixel_attack] (PGSL's own client-side pixel attack): "
           "rename it in the TOML file or --set option (attack.pixels -> pixel_attack.pixels)")
_SECTION_TYPES = {
    "data": DataConfig,
    "defense": DefenseConfig,
    "pixel_attack": PixelAttackConfig,
    "recovery": RecoveryConfig,
    "model": ModelConfig,
    "fusion": FusionConfig,
    "train": TrainConfig,
    "guard": GuardConfig,
}


def config_from_dict(raw: dict[str, Any]) -> Config:
    """Build a Config, rejecting unknown sections and keys with a clear message."""
    sections: dict[str, Any] = {}
    if "attack" in raw:
        raise ValueError(RENAMED)
    for name, values in raw.items():
        if name not in _SECTION_TYPES:
            raise ValueError(f"unknown config section [{name}]; known: {sorted(_SECTION_TYPES)}")
        sections[name] = build(_SECTION_TYPES[name], values, field=f"[{name}] ",
                               unknown=f"unknown key(s) {{names}} in [{name}]; known: {{known}}")
    return Config(**sections)


def parse_value(text: str) -> Any:
    """A command-line value read as a TOML value (``8``, ``0.5``, ``true``, ``"svd"``, ``[1, 2]``);
    anything that is not TOML (a bare word) is the stripped string itself."""
    try:
        return tomllib.loads(f"v = {text.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        return text.strip()


def parse_options(items: Sequence[str], option: str) -> dict[str, Any]:
    """``KEY=VALUE`` items (``--defense-option scale=0.5``) as a dict, values read by
    :func:`parse_value`."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{option} needs KEY=VALUE, got {item!r}")
        out[key.strip()] = parse_value(text)
    return out


def configure(preset: str, fields: Mapping[str, Any] | None = None,
              settings: Sequence[str] = ()) -> Config:
    """The preset (a name or a TOML path) with ``fields`` set (``{"data.limit_train": 512}``; a
    None value leaves the preset's), then ``settings`` (``section.key=value``, :func:`apply_settings`)."""
    cfg = load_preset(preset)
    changes: dict[str, dict[str, Any]] = {}
    for dotted, value in (fields or {}).items():
        section, _, key = dotted.partition(".")
        if value is not None:
            changes.setdefault(section, {})[key] = value
    return apply_settings(cfg.replace(**changes), list(settings))


def apply_settings(cfg: Config, settings: list[str]) -> Config:
    """Apply ``section.key=value`` overrides (``recovery.svt=auto``, ``pixel_attack.pixels=8``).

    The value is read as a TOML value (``8``, ``0.5``, ``true``, ``"svd"``; a bare word is a
    string) and must have the type of the field it replaces.
    """
    raw = cfg.to_dict()
    for item in settings:
        key, sep, text = item.partition("=")
        section, dot, name = key.strip().partition(".")
        if not sep or not dot:
            raise ValueError(f"--set needs section.key=value, got {item!r}")
        if section == "attack":
            raise ValueError(RENAMED)
        if section not in raw or name not in raw[section]:
            known = sorted(f"{s}.{k}" for s, fields in raw.items() for k in fields)
            raise ValueError(f"unknown setting {key!r}; known: {', '.join(known)}")
        value = parse_value(text)
        old = raw[section][name]
        if isinstance(old, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if old is not None and not isinstance(value, type(old)) and not (
                isinstance(old, (tuple, list)) and isinstance(value, list)):
            raise ValueError(f"{key} must be a {type(old).__name__}, got {value!r}")
        raw[section][name] = value
    return config_from_dict(raw)


def default_preset(dataset: str) -> str:
    """The training preset a command uses when none is given: ``mias-quick`` (the ROI protocol,
    augmentation, class-balanced batches) for MIAS, ``quick`` otherwise."""
    return "mias-quick" if dataset == "mias" else "quick"


@functools.cache
def published() -> dict[str, Any]:
    """The paper's published numbers (``configs/published/khowaja2023.toml``: Table I's MSE and
    Table II's accuracies by dataset), which reports put beside ours."""
    with (PRESET_DIR / "published" / "khowaja2023.toml").open("rb") as f:
        return tomllib.load(f)


def available_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.toml"))


def load_preset(name_or_path: str) -> Config:
    """Load a preset by name (``quick``, ``paper``) or from a TOML file path."""
    path = Path(name_or_path)
    if not path.suffix:
        path = PRESET_DIR / f"{name_or_path}.toml"
    if not path.is_file():
        raise FileNotFoundError(
            f"preset {name_or_path!r} not found (looked for {path}); "
            f"available presets: {', '.join(available_presets())}"
        )
    with path.open("rb") as f:
        return config_from_dict(tomllib.load(f))


def save_config(cfg: Config, path: Path) -> None:
    from pgsl.checkpoint import write_json  # atomic: a kill never leaves half a config

    write_json(path, cfg.to_dict())


def load_config(path: Path) -> Config:
    return config_from_dict(json.loads(path.read_text()))
