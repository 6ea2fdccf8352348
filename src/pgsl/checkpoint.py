"""Atomic, pickle-free checkpoints and result files.

Writes go to a temporary file in the same folder, are fsync'ed and renamed over the target, so a
killed run leaves either the previous file or the new one, never half of one. Checkpoints are
loaded with ``torch.load(weights_only=True)``, which rebuilds only tensors and plain containers and
refuses arbitrary objects.
"""

from __future__ import annotations

import csv
import io
import json
import os
import threading
from pathlib import Path
from typing import Any

import torch


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: a temporary file in the same folder (so the rename
    stays on one file system), fsync'ed, then ``os.replace``'d over ``path``. The one atomic write
    of the package: checkpoints, result files, dataset caches and figures all go through it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # unique per process and thread; opened normally (not mkstemp), so the file gets the umask's mode
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with tmp.open("wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    buf = io.BytesIO()
    torch.save(state, buf)
    write_bytes_atomic(path, buf.getvalue())


def load_checkpoint(path: Path, map_location: torch.device | str = "cpu") -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises several types for corrupt or unsafe files
        raise ValueError(f"{path}: not a loadable pgsl checkpoint ({e})") from e


def write_json(path: Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def write_text(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode())


def write_csv(path: Path, rows: list[dict[str, Any]], columns: list[str]) -> None:
    """``rows`` as CSV with ``columns`` (keys not in ``columns`` are left out)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    write_text(path, buf.getvalue())
