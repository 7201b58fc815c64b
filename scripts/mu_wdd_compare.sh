#!/usr/bin/env bash
# The MU-WDD comparison: for each forgotten class and seed, the original model, real-data retrain/FT/GA,
# FT/GA on the distilled set (weighted and unweighted), and FT/GA on random and herding subsets of the same
# size; then one table (mean ± std over classes and seeds) and a bar chart.
#   bash scripts/mu_wdd_compare.sh MODEL_PT WEIGHTED_PT UNWEIGHTED_PT [CLASSES] [SEEDS] [GPUS]
# e.g. on the GPU box: runs/orig/model.pt runs/distill/ipc10-w0.01/distilled.pt runs/distill/ipc10-w0/distilled.pt 0-9 1-3 0,1
# CPU / digits: DIGITS=1 bash scripts/mu_wdd_compare.sh ... (smaller batches, larger GA step; minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/compare_lib.sh
MODEL=${1:?usage: mu_wdd_compare.sh MODEL_PT WEIGHTED_PT UNWEIGHTED_PT [CLASSES] [SEEDS] [GPUS]}
WEIGHTED=${2:?weighted distilled.pt}; UNWEIGHTED=${3:?unweighted distilled.pt}
CLASSES=${4:-0-9}; SEEDS=${5:-1}; GPUS=${6:-}
PY=${PYTHON:-python}; ROOT=${ROOT:-runs/mu_wdd_compare}; mkdir -p "$ROOT"
for f in "$MODEL" "$WEIGHTED" "$UNWEIGHTED"; do [ -f "$f" ] || { echo "error: '$f' does not exist" >&2; exit 2; }; done
IPC=$(ipc_of "$WEIGHTED")
FT="--unlearn_lr 0.01 --unlearn_epochs 10"; GA="--unlearn_lr 1e-4 --unlearn_epochs 5"
if [ "${DIGITS:-0}" = 1 ]; then FT="$FT --batch_size 32"; GA="--unlearn_lr 1e-3 --unlearn_epochs 5 --batch_size 32"; fi
for KIND in random herding; do   # the controls: real subsets of the same size
  [ -f "$ROOT/$KIND/distilled.pt" ] || $PY condense.py --method $KIND --ipc "$IPC" --mask "$MODEL" --save_dir "$ROOT/$KIND"
done
CLS=$(expand "$CLASSES"); SDS=$(expand "$SEEDS")
JOBS=$ROOT/jobs.txt; : > "$JOBS"
for C in $CLS; do for S in $SDS; do
  OUT=$ROOT/class$C/seed$S; COMMON="--mask $MODEL --class_to_replace $C --seed $S --quiet"
  for M in none retrain; do echo "$PY main_forget.py $COMMON --unlearn $M --save_dir $OUT/real-$M" >> "$JOBS"; done
  echo "$PY main_forget.py $COMMON --unlearn FT $FT --save_dir $OUT/real-FT" >> "$JOBS"
  echo "$PY main_forget.py $COMMON --unlearn GA $GA --save_dir $OUT/real-GA" >> "$JOBS"
  for D in "weighted:$WEIGHTED" "unweighted:$UNWEIGHTED" "random:$ROOT/random/distilled.pt" "herding:$ROOT/herding/distilled.pt"; do
    TAG=${D%%:*}; FILE=${D#*:}
    echo "$PY main_forget_distill.py $COMMON --distilled $FILE --data_tag $TAG --unlearn FT $FT --save_dir $OUT/$TAG-FT" >> "$JOBS"
    echo "$PY main_forget_distill.py $COMMON --distilled $FILE --data_tag $TAG --unlearn GA $GA --save_dir $OUT/$TAG-GA" >> "$JOBS"
  done
done; done
run_jobfile "$JOBS" "$GPUS"
# one row per method and data over all classes and seeds
$PY -m evaluation.summarize "$ROOT"/class* --label_keys dataset --out "$ROOT/table.md" --csv "$ROOT/table.csv" \
    --plot "$ROOT/bars.png"
