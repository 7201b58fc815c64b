#!/usr/bin/env bash
# Issue 19, part 2: trajectory matching on real CIFAR-10 at a scale two CPU cores manage (docs/results/
# distill_cifar10_cpu.md). Reduced protocol: the first 250 official train images per class (2,500; the val10
# split keeps 250 of them for validation), ZCA, 4 ConvNetD3 experts x 6 epochs (SGD 0.01, batch 64, DSA),
# ipc 1, syn_steps 10, expert_epochs 2, max_start_epoch 3, evaluation by 2 fresh nets x 300 epochs on the first
# 200 JPEG test images per class (TA (JPEG test)). Resumable: finished steps are skipped on a rerun.
#   bash scripts/reproduce_distill_cpu.sh [OUT] [SEEDS]     (defaults: runs/distill_cpu, "1 2 3")
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
PY=.venv/bin/python
OUT=${1:-runs/distill_cpu}
SEEDS=${2:-1 2 3}
SUB=$OUT/data
mkdir -p "$SUB"
if [ ! -f "$SUB/cifar10.npz" ]; then
  [ -f data/cifar10.npz ] || { echo "error: data/cifar10.npz is missing (python ../shared/data/build_npz.py ./data)" >&2; exit 2; }
  $PY - "$SUB" <<'PYEOF'
import sys, numpy as np
d = np.load("data/cifar10.npz")
train = np.sort(np.concatenate([np.flatnonzero(d["y_train"] == c)[:250] for c in range(10)]))
test = np.sort(np.concatenate([np.flatnonzero(d["y_test"] == c)[:200] for c in range(10)]))
np.save(f"{sys.argv[1]}/official_train_indices.npy", train)  # indices in this cache are positions in it
np.savez(f"{sys.argv[1]}/cifar10.npz", x_train=d["x_train"][train], y_train=d["y_train"][train],
         x_test=d["x_test"][test], y_test=d["y_test"][test])
PYEOF
fi
$PY buffer.py --dataset cifar10 --data_path "$SUB" --model ConvNetD3 --num_experts 4 --train_epochs 6 \
    --batch_train 64 --zca --buffer_path "$OUT/buffers" --save_interval 1 --seed 1 --quiet | tail -n 1
for S in $SEEDS; do
  for MODE in exact; do
    D=$OUT/ipc1-$MODE-s$S
    [ -f "$D/results.json" ] && continue
    $PY distill.py --dataset cifar10 --data_path "$SUB" --zca --model ConvNetD3 --buffer_path "$OUT/buffers" \
        --ipc 1 --syn_steps 10 --expert_epochs 2 --max_start_epoch 3 --lr_img 100 --lr_lr 1e-5 --lr_teacher 0.01 \
        --lr_weights 0 --grad_mode $MODE --Iteration 40 --eval_it 40 --num_eval 2 --epoch_eval_train 300 \
        --seed "$S" --save_dir "$D" --quiet | tail -n 1
  done
done
