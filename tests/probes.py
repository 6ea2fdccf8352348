"""Process boundaries as facts: what a process imports, read from ``sys.modules`` in a fresh
interpreter, so indirect imports count too."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterable


def loaded(code: str, also: Iterable[str] = ()) -> list[str]:
    """The ``pgsl`` modules, and those of ``also`` (``torch``, ``opacus``), loaded after running
    ``code`` in a fresh interpreter."""
    probe = (code + f"\nimport json, sys\nalso = {sorted(also)!r}\n"
             "print(json.dumps(sorted(m for m in sys.modules if m.startswith('pgsl') or m in also)))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return list(json.loads(out.stdout.strip().splitlines()[-1]))
