#!/usr/bin/env bash
# Set up, then run the whole test suite on the CPU. Extra arguments go to pytest
# (e.g. `--device cuda` on a GPU machine).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
