#!/usr/bin/env bash
# Set up, lint (ruff), type-check (mypy), then run the whole test suite on the CPU. Extra
# arguments go to pytest: `--device cuda` on a GPU machine, `-m "not slow"` for the fast subset
# (leaves out the tests that train on real data or start servers).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check src tests bench examples
.venv/bin/mypy src
exec .venv/bin/python -m pytest "$@"
