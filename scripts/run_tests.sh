#!/usr/bin/env bash
# The README's test command: set up .venv if needed, then run the CPU test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=$(bash scripts/setup_env.sh --tests)
# One worker per core (TEST_WORKERS to change; 0 = in this process); files stay whole on one worker so their
# module fixtures are built once.
# With several workers, one torch thread each (and in the scripts they start): workers with a thread per core
# each oversubscribe the cores (measured on 2 cores: 709 s with two threads per worker, 534 s with one).
# nproc --all: plain nproc would honour an OMP_NUM_THREADS already set.
WORKERS=${TEST_WORKERS:-$(nproc --all 2>/dev/null || echo 2)}
XDIST=$([ "$WORKERS" -gt 1 ] && echo "-n $WORKERS --dist loadfile" || echo "")
[ "$WORKERS" -gt 1 ] && export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
echo "running: $PY -m pytest -q tests $XDIST $*"
exec "$PY" -m pytest -q tests $XDIST "$@"
