#!/usr/bin/env bash
# Set up everything on a fresh machine: a virtual environment in .venv, PyTorch (the CPU build
# where no torch is installed), and pgsl itself with its test dependencies. Idempotent and quick
# when already done. Variables: PYTHON (default python3), PGSL_TORCH (the torch requirement to
# install when none is present, default torch==2.13.0), PGSL_TORCH_INDEX (an extra index URL for
# it, e.g. https://download.pytorch.org/whl/cpu on a machine whose pip would pick a CUDA build).
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
# torch is already satisfied, so this installs only the package and its small dependencies
"$PY" -m pip install -q --disable-pip-version-check -e '.[test]'
# torchattacks (FGSM, BIM, C&W for Table II) declares torchvision as a requirement, which pulls a
# different (CUDA) torch build that replaces ours; torchattacks never imports torchvision, so it is
# installed without dependencies (its real ones, scipy and tqdm, are pgsl's).
if ! "$PY" -c 'import torchattacks' 2>/dev/null; then
    "$PY" -m pip install -q --disable-pip-version-check --no-deps 'torchattacks>=3.5,<4'
fi
