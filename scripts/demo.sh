#!/usr/bin/env bash
# The main job: set up, then train PGSL on MNIST with the quick preset (a few minutes on 2 CPU
# cores) and print each stream's and the fused test accuracy. Extra arguments go to `pgsl train`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
out=${PGSL_OUT:-runs/quick-$(date +%Y%m%d-%H%M%S)}
exec .venv/bin/pgsl train --dataset mnist --preset quick --out "$out" "$@"
