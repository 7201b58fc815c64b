#!/usr/bin/env bash
# The README's test command: set up .venv if needed, then run the CPU test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=$(bash scripts/setup_env.sh --tests)
# One worker per core (TEST_WORKERS to change; 0 = in this process); files stay whole on one worker so their
# module fixtures are built once.
WORKERS=${TEST_WORKERS:-$(nproc 2>/dev/null || echo 2)}
XDIST=$([ "$WORKERS" -gt 1 ] && echo "-n $WORKERS --dist loadfile" || echo "")
echo "running: $PY -m pytest -q tests $XDIST $*"
exec "$PY" -m pytest -q tests $XDIST "$@"
