#!/usr/bin/env bash
# The GPU suite as one device-machine command: assemble data/cifar10.npz from staged parts when they are there
# and it is not, then run `python -m bench.gpu_suite` (extra flags pass through), writing the report and a log
# into $OUT when set (the device tool's folder; what is under it comes back), else into docs/results.
#   bash bench/gpu_suite.sh [--budget_s 480] [--parts ...]     GPU_DATA=folder of part0..2 (default .gpu_data)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
PARTS=${GPU_DATA:-.gpu_data}
if [ ! -f data/cifar10.npz ] && [ -f "$PARTS/part0/build_npz.py" ]; then
  "$PY" "$PARTS/part0/build_npz.py" data --src "$PARTS/part0" --src "$PARTS/part1" --src "$PARTS/part2"
fi
if [ -n "${OUT:-}" ]; then
  PYTHONUNBUFFERED=1 "$PY" -m bench.gpu_suite --out "$OUT" "$@" 2>&1 | tee "$OUT/gpu_suite.log"
else
  "$PY" -m bench.gpu_suite "$@"
fi
