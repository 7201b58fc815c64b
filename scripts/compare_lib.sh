# Shared by the comparison scripts (sourced, not run): ranges, facts read from .pt files, and job files.
# Expects $PY (the python to use).

expand() {  # "0-9" -> 0 1 ... 9 (one a line); "3" -> 3
  seq "${1%%-*}" "${1##*-}"
}

ipc_of() {  # images per class of a distilled.pt
  $PY -c "import sys, torch; d = torch.load(sys.argv[1], weights_only=True); print(len(d['labels']) // d['num_classes'])" "$1"
}

split_of() {  # the split a model.pt was trained on (val10 when it does not say)
  $PY -c "import sys, torch; d = torch.load(sys.argv[1], weights_only=True); print((d.get('split') or {}).get('name', 'val10'))" "$1"
}

run_jobfile() {  # JOBS [GPUS] [PARALLEL]: one job per GPU at a time, else PARALLEL CPU slots; 1 if a job failed
  if [ -n "${2:-}" ]; then bash scripts/run_jobs.sh "$1" --gpus "$2"; else bash scripts/run_jobs.sh "$1" --parallel "${3:-1}"; fi
}
