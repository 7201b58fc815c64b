#!/usr/bin/env bash
# The condenser comparison (peers.md section 9, C1-C3): which small retain proxy makes unlearning cheapest
# without making it worse? One forget set, one original model, the same metrics for every row:
#   C1  FT, GA(+FT) (NG), SalUn, retrain on the real retain set, on the WDD distilled sets (weighted and
#       unweighted), on DM and Blend, and on random / herding / k-center subsets of the WDD set's size; GA on real
#       data only (it never reads the retain set). The forget side is always the real forget set.
#   C2  A-AMU (1 epoch) on the real retain set, on Blend and on the weighted WDD set
#   C3  the cost of every row in three parts: offline (making a reusable set), per request (making or
#       selecting the set for this forget set, loading it) and unlearning (RTE), and their sum
# Output under $ROOT: table.md / table.csv (UA, RA, TA, MIA, Avg.Gap vs real-data retrain, the three costs and
# their total; mean ± std over seeds) and scatter.png (Avg.Gap against end-to-end time).
#
#   bash scripts/compare_condensers.sh            # GPU box: give MODEL, WEIGHTED, UNWEIGHTED (see below)
#   bash scripts/compare_condensers.sh --digits   # digits on a CPU: builds everything itself, a few minutes
#   bash scripts/compare_condensers.sh --tiny     # digits, a handful of rows (what the test runs)
# Settings (environment):
#   MODEL        original model.pt, trained with --split regun: A-AMU draws unseen images from its held-out
#                part (digits modes: trained here when unset)
#   FORGET       forget flags (default --class_to_replace 0; random: --class_to_replace -1 --num_indexes_to_replace 4500)
#   WEIGHTED, UNWEIGHTED  distill.py sets (lr_weights > 0 and 0) of the model's split; for random forgetting made
#                from a retain-only buffer of this forget set: the same FORGET flags and --seed (the first of
#                SEEDS). distilled.pt or best.pt. Digits modes: built here when unset; GPU: rows skipped when unset
#   IPC          images per class of DM and the coresets (default: WEIGHTED's, else 10)
#   BLEND_IPC    Blend's clusters per class (default 1000; digits 10)   DM_ITERS  DM iterations (default 20000)
#   SEEDS (1, or a range 1-3), GPUS (0,1,...), PARALLEL (CPU slots; 2 in the digits modes), ROOT, PYTHON
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/compare_lib.sh
MODE=${1:-gpu}
case $MODE in gpu|--digits|--tiny) ;; *) echo "error: unknown mode '$MODE' (use --digits, --tiny or nothing)" >&2; exit 2 ;; esac
PY=${PYTHON:-python}; SEEDS=${SEEDS:-1}; GPUS=${GPUS:-}; PARALLEL=${PARALLEL:-$([ "$MODE" = gpu ] && echo 1 || echo 2)}
FORGET=${FORGET:---class_to_replace 0}
ROOT=${ROOT:-runs/compare_condensers/${MODE#--}}; mkdir -p "$ROOT"
MODEL=${MODEL:-}; WEIGHTED=${WEIGHTED:-}; UNWEIGHTED=${UNWEIGHTED:-}

# Methods and their settings: the Unlearn-Sparse / SalUn ones on CIFAR-10 (NG: its defaults); batch 32 and a
# larger GA step on digits (a few hundred images per class); A-AMU always at its published setting. GA reads
# only the forget set, so on a retain proxy it would repeat its real-data row: there GA(+FT) means NG.
REAL_METHODS="FT GA NG SalUn"; SET_METHODS="FT NG SalUn retrain"; AAMU_DATA="real blend weighted"
SETS="weighted unweighted dm blend random herding kcenter"
declare -A FLAGS=([FT]="--unlearn_lr 0.01 --unlearn_epochs 10" [GA]="--unlearn_lr 1e-4 --unlearn_epochs 5"
                  [NG]="" [SalUn]="" [retrain]="" [A_AMU]="")
BLEND_IPC=${BLEND_IPC:-$([ "$MODE" = gpu ] && echo 1000 || echo 10)}
DM_ITERS=${DM_ITERS:-$([ "$MODE" = gpu ] && echo 20000 || echo 200)}
if [ "$MODE" != gpu ]; then
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}   # small tensors: one thread per process is fastest
  FLAGS=([FT]="--unlearn_lr 0.01 --unlearn_epochs 10 --batch_size 32" [GA]="--unlearn_lr 1e-3 --unlearn_epochs 5 --batch_size 32"
         [NG]="--batch_size 32" [SalUn]="--batch_size 32" [retrain]="" [A_AMU]="")
  EXPERTS="--num_experts 4 --train_epochs 6 --save_interval 2"
  DISTILL="--ipc 2 --syn_steps 10 --expert_epochs 2 --max_start_epoch 3 --Iteration 20 --eval_it 20 --epoch_eval_train 50"
fi
if [ "$MODE" = --tiny ]; then
  REAL_METHODS=""; SET_METHODS="FT"; SETS="weighted random"; AAMU_DATA="weighted"
  FLAGS[FT]="--unlearn_lr 0.01 --unlearn_epochs 2 --batch_size 32"
  EXPERTS="--num_experts 1 --train_epochs 2 --save_interval 1"
  DISTILL="--ipc 2 --syn_steps 4 --expert_epochs 1 --max_start_epoch 1 --Iteration 2 --eval_it 100 --epoch_eval_train 5"
fi

# 1. the original model (digits: ConvNet on the regun split) and the forget set, fixed once for every row
if [ -z "$MODEL" ]; then
  [ "$MODE" = gpu ] && { echo "error: MODEL: give the original model.pt (trained with --split regun)" >&2; exit 2; }
  MODEL=$ROOT/original/model.pt
  [ -f "$MODEL" ] || $PY main_train.py --dataset digits --arch convnet --epochs 10 --batch_size 32 --lr 0.05 \
      --scheduler cosine --split regun --seed 1 --quiet --save_dir "$ROOT/original" | tail -n 1
fi
[ -f "$MODEL" ] || { echo "error: MODEL '$MODEL' does not exist" >&2; exit 2; }
SPLIT=$(split_of "$MODEL")
[ "$SPLIT" = regun ] || echo "warning: $MODEL was trained on the $SPLIT split: no held-out images, so the A-AMU rows fail" >&2
FIRST=$(expand "$SEEDS" | head -n 1)
REF=$ROOT/seed$FIRST/real-retrain   # the first real-data retrain; it also writes the forget set every row reuses
[ -f "$REF/results.json" ] || $PY main_forget.py --mask "$MODEL" --unlearn retrain $FORGET --seed "$FIRST" --quiet \
    --save_dir "$REF" | tail -n 1
FSET=$REF/forget_indices.npy
CLASSWISE=$($PY -c "import json, sys; print(int(json.load(open(sys.argv[1]))['forget']['classwise']))" "$REF/results.json")
# Class-wise: coresets and WDD sets come from the whole train split, made once (offline). Random forgetting:
# they must never see the forget set, so they are made from the retain part for this request.
RETAIN_ONLY=$([ "$CLASSWISE" = 1 ] && echo "" || echo "--forget_indices $FSET")

# 2. the WDD sets (digits modes build them: a small expert buffer, then weighted and unweighted distillation)
if [ "$MODE" != gpu ] && [ -z "$WEIGHTED" ]; then
  $PY buffer.py --dataset digits --model ConvNetD3 $EXPERTS --batch_train 64 --split "$SPLIT" $RETAIN_ONLY \
      --buffer_path "$ROOT/buffers" --seed 1 --quiet | tail -n 1
  for W in 0.01 0; do
    [ "$MODE" = --tiny ] && [ $W = 0 ] && continue
    [ -f "$ROOT/distill-w$W/distilled.pt" ] || $PY distill.py --dataset digits --model ConvNetD3 $DISTILL --lr_img 1 \
        --lr_lr 1e-7 --lr_teacher 0.01 --lr_weights $W --num_eval 1 --split "$SPLIT" --buffer_path "$ROOT/buffers" \
        --seed 1 --save_dir "$ROOT/distill-w$W" --quiet | tail -n 1
  done
  WEIGHTED=$ROOT/distill-w0.01/distilled.pt; [ "$MODE" = --tiny ] || UNWEIGHTED=$ROOT/distill-w0/distilled.pt
fi
IPC=${IPC:-$([ -n "$WEIGHTED" ] && ipc_of "$WEIGHTED" || echo 10)}

# 3. the condensed sets (condense.py), DM and the coresets at the WDD set's size, Blend at its own
declare -A SET=([weighted]=$WEIGHTED [unweighted]=$UNWEIGHTED)
for KIND in dm blend random herding kcenter; do
  case " $SETS " in *" $KIND "*) ;; *) continue ;; esac
  case $KIND in
    dm) EXTRA="--ipc $IPC --iterations $DM_ITERS $RETAIN_ONLY" ;;
    blend) EXTRA="--ipc $BLEND_IPC --forget_indices $FSET --offline_dir $ROOT/blend-offline" ;;  # selects per request
    *) EXTRA="--ipc $IPC $RETAIN_ONLY" ;;
  esac
  [ -f "$ROOT/$KIND/distilled.pt" ] || $PY condense.py --method $KIND --mask "$MODEL" $EXTRA --seed 1 --quiet \
      --save_dir "$ROOT/$KIND" | tail -n 1
  SET[$KIND]=$ROOT/$KIND/distilled.pt
done

# 4. the runs: each seed's real-data retrain first (its other rows' Avg.Gap is measured against it), then the rest
JOBS=$ROOT/jobs.txt; RETRAIN=$ROOT/retrain.txt; : > "$JOBS"; : > "$RETRAIN"
for S in $(expand "$SEEDS"); do
  OUT=$ROOT/seed$S; COMMON="--mask $MODEL --forget_indices $FSET --seed $S --quiet"
  [ "$S" = "$FIRST" ] || echo "$PY main_forget.py $COMMON --unlearn retrain --save_dir $OUT/real-retrain" >> "$RETRAIN"
  COMMON="$COMMON --retrain_result $OUT/real-retrain/results.json"
  echo "$PY main_forget.py $COMMON --unlearn none --save_dir $OUT/real-none" >> "$JOBS"
  for M in $REAL_METHODS A_AMU; do
    [ "$M" = A_AMU ] && case " $AAMU_DATA " in *" real "*) ;; *) continue ;; esac
    echo "$PY main_forget.py $COMMON --unlearn $M ${FLAGS[$M]} --save_dir $OUT/real-$M" >> "$JOBS"
  done
  for TAG in $SETS; do
    FILE=${SET[$TAG]:-}
    [ -n "$FILE" ] || { echo "warning: no $TAG set (set ${TAG^^}); its rows are skipped" >&2; continue; }
    for M in $SET_METHODS A_AMU; do
      [ "$M" = A_AMU ] && case " $AAMU_DATA " in *" $TAG "*) ;; *) continue ;; esac
      # the request brings the real forget set; only the retain side is a proxy
      echo "$PY main_forget_distill.py $COMMON --distilled $FILE --data_tag $TAG --forget_source real" \
           "--unlearn $M ${FLAGS[$M]} --save_dir $OUT/$TAG-$M" >> "$JOBS"
    done
  done
done
FAILED=0
run_jobfile "$RETRAIN" "$GPUS" "$PARALLEL" || FAILED=1
run_jobfile "$JOBS" "$GPUS" "$PARALLEL" || FAILED=1

# 5. one table (rows: method [data], mean ± std over seeds) and the cost-quality scatter
$PY -m evaluation.summarize "$ROOT"/seed* --label_keys dataset --costs --out "$ROOT/table.md" \
    --csv "$ROOT/table.csv" --scatter "$ROOT/scatter.png"
[ $FAILED = 0 ] || { echo "error: some runs failed (logs: $ROOT/*.logs/)" >&2; exit 1; }
