#!/usr/bin/env bash
# The main job: set up, then reproduce the paper on MNIST with the quick preset and plan (PGSL and
# the baselines trained, Tables I-II, the FSHA/SplitGuard table, Figs. 3-5, the frontier,
# report.html; measured 14-16 min on a clean clone on 2 CPU cores, setup included: Table I 6.5-7 min).
# Re-running resumes from the cached stages. Extra arguments go to `pgsl reproduce`.
set -euo pipefail
cd "$(dirname "$0")/.."
PGSL_EXTRAS="" bash scripts/setup.sh  # the package alone: the tests' tools and FLARE are not needed here
out=${PGSL_OUT:-runs/reproduce-quick}
exec .venv/bin/pgsl reproduce --dataset mnist --preset quick --out "$out" "$@"
