"""Results cached by what produced them.

Every experiment writes its results beside the key that produced them: the run's configuration
(:meth:`pgsl.config.Config.key`) and the protocol (victims, budgets, plan). A cached result is
reused only when its key equals the one asked for. What is cheap to redo from a trained run (an
attack's scores, a frontier point) is recomputed when the key differs; what is costly or was asked
for by name (a trained run, a stage of ``pgsl reproduce``, a fold) is refused with an error naming
the settings that differ, so no number computed under one protocol is ever reported as another's.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from pgsl.config import Config, load_config
from pgsl.experiments.results import read_rows
from pgsl.runtime import CHECKPOINT, CONFIG, METRICS, Reporter, train_run

R = TypeVar("R")

log = logging.getLogger(__name__)


class StaleResult(ValueError):
    """A folder holds a result computed with other settings than the ones asked for."""


def as_key(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples become lists): comparable with a saved key."""
    return json.loads(json.dumps(value))


def differences(saved: Any, wanted: Any, prefix: str = "") -> list[str]:
    """The settings in which two keys differ, as ``name: saved -> wanted`` lines (sorted)."""
    if isinstance(saved, Mapping) and isinstance(wanted, Mapping):
        lines: list[str] = []
        for name in sorted(set(saved) | set(wanted), key=str):
            where = f"{prefix}.{name}" if prefix else str(name)
            if name not in saved:
                lines.append(f"{where}: (absent) -> {wanted[name]!r}")
            elif name not in wanted:
                lines.append(f"{where}: {saved[name]!r} -> (absent)")
            else:
                lines.extend(differences(saved[name], wanted[name], where))
        return lines
    return [] if saved == wanted else [f"{prefix or 'key'}: {saved!r} -> {wanted!r}"]


def check(saved: Any, wanted: Any, what: str, remedy: str = "use another --out, or move it away") -> None:
    """Raise :class:`StaleResult` when ``saved`` (a key read from disk, ``None``: written before
    results carried keys) is not ``wanted``; the message names ``what`` and up to five settings."""
    wanted = as_key(wanted)
    if saved == wanted:
        return
    if saved is None:
        raise StaleResult(f"{what} carries no record of the settings that produced it: {remedy}")
    lines = differences(saved, wanted)
    more = f" (and {len(lines) - 5} more)" if len(lines) > 5 else ""
    raise StaleResult(f"{what} was computed with other settings ({'; '.join(lines[:5])}{more}): {remedy}")


def ensure_trained(cfg: Config, out: Path, *, device: str = "cpu", reporter: Reporter | None = None,
                   before_training: Callable[[], object] | None = None) -> dict[str, Any]:
    """``out``'s ``metrics.json``, training the run first unless it is complete: a killed run
    resumes from its checkpoint. A folder holding a run of another configuration (compared by
    :meth:`Config.key`) is refused (:class:`~pgsl.experiments.cache.StaleResult`).
    ``before_training`` is called just before any training (e.g. to drop results computed from
    the run's earlier state)."""
    if (out / CONFIG).is_file():
        check(load_config(out / CONFIG).key(), cfg.key(), f"{out} holds a run that",
              "use another folder, or move that run away")
    if not (out / METRICS).is_file():
        if before_training is not None:
            before_training()
        resume = (out / CHECKPOINT).is_file()
        log.info("training %s%s", out.name, " (resuming)" if resume else "")
        train_run(cfg, out, resume=resume, device=device, reporter=reporter)
    return dict(json.loads((out / METRICS).read_text()))


def runs_key(runs: Sequence[Path]) -> dict[str, Any]:
    """Each trained run's configuration key, by folder (part of the key of a result computed from
    the runs); a folder without a configuration is left for the loader to refuse."""
    return {str(p): load_config(p / CONFIG).key() for p in runs if (p / CONFIG).is_file()}


def file_key(paths: Sequence[Path]) -> dict[str, str]:
    """The files' contents by path, as SHA-256 digests (inputs such as saved reconstructions)."""
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in paths if p.is_file()}


def cached(path: Path, key: Mapping[str, Any], cls: type[R]) -> list[R] | None:
    """The rows of ``path`` (:func:`~pgsl.experiments.results.write_rows`) when it was written,
    whole, under ``key``; None when it is missing, partial (a killed run writes no key) or was
    computed under another key -- the caller then computes it again, as cheap results are."""
    if not path.is_file():
        return None
    saved = json.loads(path.read_text()).get("key")
    if saved == as_key(key):
        log.info("%s: cached", path)
        return read_rows(path, cls)
    if saved is not None:
        log.info("%s: computed under other settings (%s), computing again", path,
                 "; ".join(differences(saved, as_key(key))[:3]))
    return None
