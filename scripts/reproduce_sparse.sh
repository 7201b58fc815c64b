#!/usr/bin/env bash
# Unlearn-Sparse main table (dense rows), CIFAR-10 ResNet-18 (GPU box, real data): class-wise (class 0) and
# random 10% forgetting with Retrain, FT, GA, FF, IU at the published settings, with the published means
# beside ours. For the 95%-sparse rows, pass the OMP state-1 model of main_prune.py and SPARSE=1.
#   bash scripts/reproduce_sparse.sh [MODEL_PT] [SEEDS] [GPUS]
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-runs/orig/model.pt}; SEEDS=${2:-1}; GPUS=${3:-0}
KIND=$([ "${SPARSE:-0}" = 1 ] && echo omp95 || echo dense)
ROOT=runs/reproduce_sparse_$KIND; PY=${PYTHON:-python}
[ -f "$MODEL" ] || { echo "error: no original model at '$MODEL' (train one with main_train.py)" >&2; exit 2; }
mkdir -p "$ROOT"
for SETTING in "--classes 0" "--random 4500"; do
  gen() { $PY -m scripts.make_jobs --model "$MODEL" $SETTING --seeds "$SEEDS" --root "$ROOT" "$@"; }
  gen --methods FT -- --unlearn_lr 0.01 --unlearn_epochs 10
  gen --methods GA -- --unlearn_lr 1e-4 --unlearn_epochs 5 | grep -v -- "--unlearn retrain"
  gen --methods FF -- --no_aug | grep -v -- "--unlearn retrain"
  gen --methods IU -- --no_aug | grep -v -- "--unlearn retrain"
done > "$ROOT/jobs.txt"
bash scripts/run_jobs.sh "$ROOT/jobs.txt" --gpus "$GPUS"
for S in class0 random4500; do
  KEY=$([ $S = class0 ] && echo sparse_class_$KIND || echo sparse_random10_$KIND)
  $PY -m evaluation.summarize "$ROOT/$S" --published "$KEY" --out "$ROOT/$S.md" --csv "$ROOT/$S.csv" --plot "$ROOT/$S.png"
done
