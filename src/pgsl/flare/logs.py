"""Where a FLARE party's pgsl log goes: a file in its own folder (``server.log``, ``site.log``),
besides FLARE's logs, so a hospital reads its throughput without FLARE's log configuration."""

from __future__ import annotations

import logging
from pathlib import Path

__all__ = ["log_to"]


def log_to(path: Path) -> logging.Handler:
    """Send the ``pgsl`` loggers' INFO lines and above to ``path`` too; -> the handler (remove it
    from ``logging.getLogger("pgsl")`` and close it to stop)."""
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("pgsl")
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    return handler
