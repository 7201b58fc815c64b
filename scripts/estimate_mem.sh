#!/usr/bin/env bash
# Memorisation scores by subsampling (estimate_mem.py) with RUM's CIFAR-10 estimator recipe, written out here
# so the command says what it runs: NUM_MODELS models, each trained from scratch on a random 70% of the train
# split. Resumable: rerun the same command after an interruption (or with a larger NUM_MODELS) and it goes on.
# Extra flags pass through (e.g. --arch resnet50 --device cuda:1, or --train_on full for all 50k images).
#   bash scripts/estimate_mem.sh [DATASET] [NUM_MODELS] [SAVE_DIR] [estimate_mem.py flags...]
set -euo pipefail
cd "$(dirname "$0")/.."
DATASET=${1:-cifar10}; NUM=${2:-400}; OUT=${3:-runs/mem/$DATASET}
shift $(( $# < 3 ? $# : 3 ))
PY=${PYTHON:-python}
$PY estimate_mem.py --dataset "$DATASET" --arch resnet18 --num_models "$NUM" --subset_ratio 0.7 \
    --epochs 30 --lr 0.01 --momentum 0.9 --weight_decay 5e-4 --scheduler multistep --decreasing_lr 15,20,25 \
    --batch_size 512 --no_aug --save_dir "$OUT" --quiet "$@"
echo "use: --forget_group high|mid|low|mix --num_indexes_to_replace N --mem_scores $OUT/mem_scores.npz"
