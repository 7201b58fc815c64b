#!/usr/bin/env bash
# Run job K (1-based, counting non-empty, non-# lines) of a job file, unless it is already done.
#   bash scripts/run_line.sh JOBS K [LOGDIR]
# Done = the job's --save_dir holds results.json, or LOGDIR/jobK.done exists (jobs without --save_dir).
# Output goes to LOGDIR/jobK.log (default: JOBS.logs/ beside the job file). Exit status is the job's.
set -uo pipefail
jobs=${1:?usage: run_line.sh JOBS K [LOGDIR]}
k=${2:?usage: run_line.sh JOBS K [LOGDIR]}
logdir=${3:-${jobs%.txt}.logs}
line=$(grep -v -e '^[[:space:]]*$' -e '^[[:space:]]*#' "$jobs" | sed -n "${k}p")
if [ -z "$line" ]; then echo "error: $jobs has no job $k" >&2; exit 2; fi
mkdir -p "$logdir"
save_dir=$(printf '%s\n' "$line" | sed -nE 's/.*--save_dir[= ]+([^ ]+).*/\1/p')
# a job with --save_dir is done by its results.json alone: a marker by number would point at another job once the
# job file is edited
if { [ -n "$save_dir" ] && [ -f "$save_dir/results.json" ]; } || { [ -z "$save_dir" ] && [ -f "$logdir/job$k.done" ]; }; then
  echo "job $k: already done, skipped"; exit 0
fi
echo "job $k: $line" > "$logdir/job$k.log"
bash -c "$line" >> "$logdir/job$k.log" 2>&1
status=$?
if [ $status -eq 0 ]; then touch "$logdir/job$k.done"; fi
exit $status
