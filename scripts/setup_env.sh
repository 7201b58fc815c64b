#!/usr/bin/env bash
# Find (or make) a Python with every package of requirements.txt, and print its path on stdout; messages go
# to stderr. Used by the quickstart, the test runner and CI:   PY=$(bash scripts/setup_env.sh)
# Order: $PYTHON when set and complete (a conda env, a cluster module, a container with torch preinstalled);
# an earlier .venv; python3 when complete; else build .venv from requirements.txt (downloads torch once).
#   bash scripts/setup_env.sh [--tests] [--check]
# --tests: the test suite's packages too (requirements-test.txt); --check: only say what would be used.
# REQUIREMENTS=FILE checks another requirements file (tests use this).
set -euo pipefail
cd "$(dirname "$0")/.."
REQ=requirements.txt
CHECK_ONLY=0
for a in "$@"; do
  case $a in
    --tests) REQ=requirements-test.txt ;;
    --check) CHECK_ONLY=1 ;;
    *) echo "error: setup_env.sh: unknown option '$a' (allowed: --tests, --check)" >&2; exit 2 ;;
  esac
done
REQ=${REQUIREMENTS:-$REQ}
complete() { [ -n "$1" ] && command -v "$1" >/dev/null 2>&1 && "$1" scripts/check_env.py "$REQ" >/dev/null 2>&1; }
use() {  # print the absolute path of the interpreter to use, and stop
  local p; p=$(command -v "$1"); case $p in /*) ;; *) p=$PWD/$p ;; esac
  echo "using $p ($2)" >&2; echo "$p"; exit 0
}

[ -n "${PYTHON:-}" ] && complete "$PYTHON" && use "$PYTHON" "\$PYTHON has every package of $REQ"
complete .venv/bin/python && use .venv/bin/python "built earlier from $REQ"
[ -z "${PYTHON:-}" ] && complete python3 && use python3 "it has every package of $REQ"

PY=${PYTHON:-python3}
if [ "$CHECK_ONLY" = 1 ]; then
  echo "would build .venv from $REQ with $PY; missing: $("$PY" scripts/check_env.py "$REQ" | tr '\n' ';')" >&2
  exit 1
fi
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
  echo "error: Python >= 3.10 is needed ($PY is $("$PY" --version 2>&1))" >&2; exit 1
fi
echo "setting up .venv from $REQ (torch is large: this takes a few minutes once)" >&2
"$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
if ! .venv/bin/python -m pip install -q -r "$REQ" > .venv/install.log 2>&1; then
  echo "error: installing $REQ failed: $(grep -iE 'error|no matching' .venv/install.log | head -n 1)" >&2
  echo "       (full log: .venv/install.log)" >&2
  exit 1
fi
.venv/bin/python scripts/check_env.py "$REQ" >&2 || { echo "error: installed, but see above" >&2; exit 1; }
use .venv/bin/python "$(.venv/bin/python -c 'import torch; print("torch", torch.__version__)')"
