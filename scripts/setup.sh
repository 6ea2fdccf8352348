#!/usr/bin/env bash
# Set up everything on a fresh machine: a virtual environment in .venv, PyTorch (the CPU build
# where no torch is installed), and pgsl itself with its test dependencies. Idempotent and quick
# when already done. Variables: PYTHON (default python3), PGSL_EXTRAS (pgsl's extras to install,
# default test,flare; empty: the package alone, all `pgsl reproduce` needs), PGSL_TORCH (the torch
# requirement to install when none is present, default torch==2.13.0), PGSL_TORCH_INDEX (an extra
# index URL for it, e.g. https://download.pytorch.org/whl/cpu on a machine whose pip would pick a
# CUDA build).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${PGSL_VENV:-.venv}

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
"$PY" -c 'import sys; assert sys.version_info >= (3, 10), "pgsl needs Python 3.10+"'

if ! "$PY" -c 'import torch' 2>/dev/null; then
    spec=${PGSL_TORCH:-torch==2.13.0}
    echo "installing $spec (CPU build) ..."
    if [ -n "${PGSL_TORCH_INDEX:-}" ]; then
        "$PY" -m pip install -q --disable-pip-version-check "$spec" --extra-index-url "$PGSL_TORCH_INDEX"
    else
        "$PY" -m pip install -q --disable-pip-version-check "$spec"
    fi
fi
# torch is already satisfied, so this installs the package, its dependencies and by default the
# test tools and NVIDIA FLARE (pgsl flare; its tests run in CI)
extras=${PGSL_EXTRAS-test,flare}
"$PY" -m pip install -q --disable-pip-version-check -e ".${extras:+[$extras]}"
# torchattacks (FGSM, BIM, C&W for Table II): its requirement is pyproject.toml's `robustness`
# extra, read from there. It is installed with --no-deps: its metadata asks for torchvision, which
# pulls a different (CUDA) torch build that replaces ours, and torchattacks never imports
# torchvision (scipy, the one dependency it imports, is pgsl's own).
if ! "$PY" -c 'import torchattacks' 2>/dev/null; then
    specs=$("$PY" -c 'import sys; t = __import__("tomllib" if sys.version_info >= (3, 11) else "tomli")
print("\n".join(t.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["robustness"]))')
    mapfile -t specs <<< "$specs"
    "$PY" -m pip install -q --disable-pip-version-check --no-deps "${specs[@]}"
fi
