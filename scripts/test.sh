#!/usr/bin/env bash
# Set up, lint (ruff), type-check (mypy), then run the whole test suite on the CPU. Extra
# arguments go to pytest: `--device cuda` on a GPU machine, `-m "not slow"` for the fast subset
# (leaves out every test of 4 s or more: training, attacks, servers, processes). The tests run in
# PGSL_TEST_WORKERS pytest workers (default 2, one per core of the CI machine; 0: in this process),
# each test file in one worker, so a module's fixtures are built once.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check src tests bench examples
.venv/bin/mypy src
workers="${PGSL_TEST_WORKERS:-2}"
if [ "$workers" = 0 ]; then
    exec .venv/bin/python -m pytest "$@"
fi
exec .venv/bin/python -m pytest -n "$workers" --dist loadfile "$@"
