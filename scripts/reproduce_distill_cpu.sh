#!/usr/bin/env bash
# Issue 19: trajectory matching on real CIFAR-10 at a scale two CPU cores manage (docs/results/
# distill_cifar10_cpu.md). Reduced protocol: the first 250 official train images per class (2,500; the val10
# split keeps 250 of them for validation), ZCA, 4 ConvNetD3 experts x 6 epochs (SGD 0.01, batch 64, DSA),
# ipc 1, syn_steps 10, expert_epochs 2, max_start_epoch 3, 40 iterations, evaluation by 2 fresh nets x 300
# epochs on the first 200 JPEG test images per class (TA (JPEG test)) and, afterwards, on the 1,000 lossless
# official test images. Resumable: every finished step is skipped on a rerun, so it can be stopped anywhere.
#   bash scripts/reproduce_distill_cpu.sh [OUT] [SEEDS]     (defaults: runs/distill_cpu, "1 2 3")
# Steps, breadth first: for the first seed, unweighted / weighted / MU-WDD-heuristic sets, unroll and tesla
# (each also re-evaluated with its real start on the lossless split: lossless.json); the MU-WDD rows (a
# ConvNetD3 original on the same subset, retrain, FT and GA forgetting class 3 with each set, the real data and
# a same-size herding subset); then the other seeds; ipc 10 (first seed, 20 iterations) last.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=$(bash scripts/setup_env.sh)
OUT=${1:-runs/distill_cpu}
SEEDS=${2:-1 2 3}
FIRST=${SEEDS%% *}
SUB=$OUT/data
mkdir -p "$SUB" "$OUT/data_lossless"
if [ ! -f "$SUB/cifar10.npz" ] || [ ! -f "$OUT/data_lossless/cifar10.npz" ]; then
  [ -f data/cifar10.npz ] || { echo "error: data/cifar10.npz is missing (python ../shared/data/build_npz.py ./data)" >&2; exit 2; }
  $PY - "$OUT" <<'PYEOF'
import sys, numpy as np
d = np.load("data/cifar10.npz")
train = np.sort(np.concatenate([np.flatnonzero(d["y_train"] == c)[:250] for c in range(10)]))
test = np.sort(np.concatenate([np.flatnonzero(d["y_test"] == c)[:200] for c in range(10)]))
np.save(f"{sys.argv[1]}/data/official_train_indices.npy", train)  # indices in this cache are positions in it
np.savez(f"{sys.argv[1]}/data/cifar10.npz", x_train=d["x_train"][train], y_train=d["y_train"][train],
         x_test=d["x_test"][test], y_test=d["y_test"][test])
# the same train images; the test split is the first 1,000 official test images, lossless
np.savez(f"{sys.argv[1]}/data_lossless/cifar10.npz", x_train=d["x_train"][train], y_train=d["y_train"][train],
         x_test=d["x_test_lossless1000"], y_test=d["y_test_lossless1000"])
PYEOF
fi
$PY buffer.py --dataset cifar10 --data_path "$SUB" --model ConvNetD3 --num_experts 4 --train_epochs 6 \
    --batch_train 64 --zca --buffer_path "$OUT/buffers" --save_interval 1 --seed 1 --quiet | tail -n 1

COMMON=(--dataset cifar10 --data_path "$SUB" --zca --model ConvNetD3 --buffer_path "$OUT/buffers" --ipc 1
        --syn_steps 10 --expert_epochs 2 --max_start_epoch 3 --lr_img 100 --lr_lr 1e-5 --lr_teacher 0.01
        --Iteration 40 --eval_it 40 --num_eval 2 --epoch_eval_train 300 --quiet)
distill() {  # NAME SEED FLAGS...: distil, then re-evaluate best.pt (and its real start) on the lossless split
  local D=$OUT/$1; shift; local S=$1; shift
  [ -f "$D/results.json" ] || $PY distill.py "${COMMON[@]}" --seed "$S" --save_dir "$D" "$@" | tail -n 1
  [ -f "$D/lossless.json" ] || $PY -m scripts.eval_distilled "$D/best.pt" --dataset cifar10 \
      --data_path "$OUT/data_lossless" --real_start --seed "$S" --out "$D/lossless.json" | tail -n 1
}
# Breadth first: every variant once, then the other seeds (a run cut short still has one of each).
distill ipc1-exact-s$FIRST "$FIRST" --lr_weights 0
distill ipc1-wdd-s$FIRST "$FIRST" --lr_weights 0.01                                # matching meta-gradient on the weights
distill ipc1-heur-s$FIRST "$FIRST" --lr_weights 0.01 --weight_grad inner_loss     # MU-WDD's released heuristic
distill ipc1-unroll-s$FIRST "$FIRST" --lr_weights 0 --grad_mode unroll
distill ipc1-tesla-s$FIRST "$FIRST" --lr_weights 0 --grad_mode tesla

# MU-WDD rows: forget class 3 from a ConvNetD3 trained on the same 2,250 images, with each set in place of
# the real data (and a same-size herding subset, the control), against retraining on the real retain set.
O=$OUT/mu_wdd
[ -f "$O/original/model.pt" ] || $PY main_train.py --dataset cifar10 --data_path "$SUB" --arch convnetd3 --epochs 30 \
    --batch_size 64 --lr 0.01 --scheduler cosine --seed 1 --save_dir "$O/original" --quiet | tail -n 1
F=(--data_path "$SUB" --class_to_replace 3 --seed 1 --quiet --mia_jobs 2)
[ -f "$O/retrain/results.json" ] || $PY main_forget.py --mask "$O/original/model.pt" --unlearn retrain "${F[@]}" \
    --save_dir "$O/retrain" | tail -n 1
for M in FT GA; do  # the same methods on the real retain / forget images
  EXTRA=$([ $M = GA ] && echo "--unlearn_lr 0.001" || echo "")
  [ -f "$O/class3/real-$M/results.json" ] || $PY main_forget.py --mask "$O/original/model.pt" --unlearn $M $EXTRA \
      "${F[@]}" --batch_size 64 --retrain_result "$O/retrain/results.json" --save_dir "$O/class3/real-$M" | tail -n 1
done
[ -f "$O/herding/distilled.pt" ] || $PY condense.py --method herding --ipc 1 --mask "$O/original/model.pt" \
    --data_path "$SUB" --save_dir "$O/herding" | tail -n 1
for SET in unweighted:ipc1-exact-s$FIRST weighted:ipc1-wdd-s$FIRST heuristic:ipc1-heur-s$FIRST herding:mu_wdd/herding; do
  for M in FT GA; do
    R=$O/class3/${SET%%:*}-$M
    EXTRA=$([ $M = GA ] && echo "--unlearn_lr 0.001" || echo "")
    [ -f "$R/results.json" ] || $PY main_forget_distill.py --mask "$O/original/model.pt" --data_path "$SUB" \
        --distilled "$OUT/${SET#*:}/distilled.pt" --data_tag "${SET%%:*}" --unlearn $M $EXTRA "${F[@]:2}" \
        --batch_size 10 --retrain_result "$O/retrain/results.json" --save_dir "$R" | tail -n 1
  done
done
[ -f "$O/table.md" ] || $PY -m evaluation.summarize "$O/class3" "$O/retrain" --out "$O/table.md" | tail -n 3

for S in ${SEEDS#"$FIRST"}; do
  distill ipc1-exact-s$S "$S" --lr_weights 0
  distill ipc1-wdd-s$S "$S" --lr_weights 0.01
  distill ipc1-heur-s$S "$S" --lr_weights 0.01 --weight_grad inner_loss
done
distill ipc10-exact-s$FIRST "$FIRST" --lr_weights 0 --ipc 10 --Iteration 20 --eval_it 20
