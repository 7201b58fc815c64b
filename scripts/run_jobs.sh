#!/usr/bin/env bash
# Run a job file (one shell command per line; blank and # lines ignored) on one box, one job per GPU at a
# time, skipping jobs already done, so rerunning after a kill resumes the sweep.
#   bash scripts/run_jobs.sh JOBS [--gpus 0,1,2,3] [--parallel N] [--logdir DIR]
#   bash scripts/run_jobs.sh --count JOBS          # number of jobs (for sbatch --array=1-N)
# Without --gpus, --parallel N CPU slots (default 1). Each job logs to LOGDIR/jobK.log (default: JOBS.logs/).
set -uo pipefail
cd "$(dirname "$0")/.."
count() { grep -c -v -e '^[[:space:]]*$' -e '^[[:space:]]*#' "$1"; }
if [ "${1:-}" = "--count" ]; then count "${2:?usage: run_jobs.sh --count JOBS}"; exit; fi
jobs=${1:?usage: run_jobs.sh JOBS [--gpus 0,1,...] [--parallel N] [--logdir DIR]}; shift
[ -f "$jobs" ] || { echo "error: JOBS file '$jobs' does not exist" >&2; exit 2; }
gpus=""; parallel=1; logdir="${jobs%.txt}.logs"
while [ $# -gt 0 ]; do
  case "$1" in
    --gpus) gpus=$2; shift 2 ;;
    --parallel) parallel=$2; shift 2 ;;
    --logdir) logdir=$2; shift 2 ;;
    *) echo "error: unknown option '$1' (use --gpus, --parallel, --logdir)" >&2; exit 2 ;;
  esac
done
if [ -n "$gpus" ]; then IFS=, read -r -a slots <<< "$gpus"; else
  slots=(); for ((i = 0; i < parallel; i++)); do slots+=("cpu$i"); done; fi
n=$(count "$jobs"); done_n=0; failed=()
declare -A running=()  # pid -> "slot job" (=() so an empty job file leaves it set under set -u)
finish() {  # reap the finished jobs, freeing their slots
  local pid status slot job
  wait -n 2>/dev/null
  for pid in "${!running[@]}"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      wait "$pid"; status=$?
      read -r slot job <<< "${running[$pid]}"; unset "running[$pid]"; free+=("$slot")
      done_n=$((done_n + 1))
      [ $status -ne 0 ] && failed+=("$job")
      echo "[$done_n/$n] job $job $([ $status -eq 0 ] && echo ok || echo "FAILED (exit $status, see $logdir/job$job.log)")"
    fi
  done
}
free=("${slots[@]}")
for ((k = 1; k <= n; k++)); do
  while [ ${#free[@]} -eq 0 ]; do finish; done
  slot=${free[0]}; free=("${free[@]:1}")
  if [[ $slot == cpu* ]]; then
    bash scripts/run_line.sh "$jobs" "$k" "$logdir" > /dev/null &
  else
    CUDA_VISIBLE_DEVICES=$slot bash scripts/run_line.sh "$jobs" "$k" "$logdir" > /dev/null &
  fi
  running[$!]="$slot $k"
done
while [ ${#running[@]} -gt 0 ]; do finish; done
echo "$n jobs: $((n - ${#failed[@]})) ok${failed:+, failed: ${failed[*]}}"
[ ${#failed[@]} -eq 0 ]
