#!/usr/bin/env bash
# Unlearn-Sparse main table, CIFAR-10 ResNet-18 (GPU box, real data): class-wise (class 0) and random 10%
# forgetting with Retrain, FT, GA, FF, IU at the published settings, the published means beside ours.
# Where our method differs from the released code on purpose, both run, and the summary puts them side by side
# ("released behaviour" = what produced the paper's numbers, "corrected" = ours):
#   IU  --variant legacy: the released rank-1 "WoodFisher" recursion   | ours: a damped inverse-Hessian product (CG)
#   FF  --variant legacy: the released output-row rule (row --class_to_replace zeroed whenever 4,500 / 450 samples
#       are forgotten: row -1 = class 9 in random 10%)                   | ours: rows zeroed in class-wise forgetting only
#       (class-wise the two agree, so only the random setting runs both)
# Retrain is the README's command (160 epochs, lr 0.1, the original's MultiStep decays). For the 95%-sparse
# columns pass the OMP state-1 model of main_prune.py and SPARSE=1 (pruned weights get zero gradient, as there).
#   bash scripts/reproduce_sparse.sh [MODEL_PT] [SEEDS] [GPUS]      e.g. runs/orig/model.pt 1-3 0,1
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-runs/orig/model.pt}; SEEDS=${2:-1}; GPUS=${3:-0}
KIND=$([ "${SPARSE:-0}" = 1 ] && echo omp95 || echo dense)
ROOT=runs/reproduce_sparse_$KIND; PY=${PYTHON:-python}
[ -f "$MODEL" ] || { echo "error: no original model at '$MODEL' (train one with main_train.py)" >&2; exit 2; }
mkdir -p "$ROOT"
for SETTING in "--classes 0" "--random 4500"; do
  gen() { $PY -m scripts.make_jobs --model "$MODEL" $SETTING --seeds "$SEEDS" --root "$ROOT" "$@"; }
  gen --methods retrain -- --unlearn_epochs 160 --unlearn_lr 0.1
  gen --no_retrain --methods FT -- --unlearn_lr 0.01 --unlearn_epochs 10
  gen --no_retrain --methods GA -- --unlearn_lr 1e-4 --unlearn_epochs 5
  gen --no_retrain --methods IU --grid variant=legacy,default -- --no_aug
  if [ "$SETTING" = "--classes 0" ]; then
    gen --no_retrain --methods FF -- --no_aug
  else
    gen --no_retrain --methods FF --grid variant=legacy,default -- --no_aug
  fi
done > "$ROOT/jobs.txt"
bash scripts/run_jobs.sh "$ROOT/jobs.txt" --gpus "$GPUS"
for S in class0 random4500; do
  KEY=$([ $S = class0 ] && echo sparse_class_$KIND || echo sparse_random10_$KIND)
  $PY -m evaluation.summarize "$ROOT/$S" --published "$KEY" --out "$ROOT/$S.md" --csv "$ROOT/$S.csv" --plot "$ROOT/$S.png"
done
