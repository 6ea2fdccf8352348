#!/usr/bin/env bash
# The main job: set up, then reproduce the paper on MNIST with the quick preset and plan (PGSL and
# the baselines trained, Tables I-II, Figs. 3-5, the frontier, report.html; 7-17 min on 2 CPU
# cores). Re-running resumes from the cached stages. Extra arguments go to `pgsl reproduce`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
out=${PGSL_OUT:-runs/reproduce-quick}
exec .venv/bin/pgsl reproduce --dataset mnist --preset quick --out "$out" "$@"
