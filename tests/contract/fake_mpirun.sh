#!/bin/bash
# Stand-in for mpirun in the contract test: no MPI, each rank is a plain child process of this
# script, so the many jobs a generated test submits stay cheap. It accepts the arguments the
# coordinator's LocalLauncher passes (options, -np N, -x VAR, then the worker command), records the
# job's secret (env RX_JOB_SECRET) in $RX_CONTRACT_SECRETS/<job-id> for the test to read, and runs
# the worker once per rank with OMPI_COMM_WORLD_RANK set. SIGTERM is forwarded to the ranks, as
# mpirun does; the exit status is rank 0's.
set -u
np=1
while [ $# -gt 0 ]; do
  case "$1" in
    -np) np=$2; shift 2 ;;
    -x|--bind-to) shift 2 ;;
    -*) shift ;;
    *) break ;;
  esac
done
job=""
for ((i = 1; i <= $#; i++)); do
  [ "${!i}" = --job-id ] && { j=$((i + 1)); job=${!j}; }
done
if [ -n "${RX_CONTRACT_SECRETS:-}" ] && [ -n "$job" ]; then
  printf '%s' "${RX_JOB_SECRET:-}" > "$RX_CONTRACT_SECRETS/$job.tmp" && mv "$RX_CONTRACT_SECRETS/$job.tmp" "$RX_CONTRACT_SECRETS/$job"
fi
pids=()
trap 'kill -TERM "${pids[@]}" 2>/dev/null' TERM
for ((r = 0; r < np; r++)); do
  OMPI_COMM_WORLD_RANK=$r "$@" &
  pids+=($!)
done
status=0
for ((r = 0; r < np; r++)); do
  while true; do
    wait "${pids[$r]}"; s=$?
    # wait returns >128 when interrupted by the trapped SIGTERM; the child is still running then.
    kill -0 "${pids[$r]}" 2>/dev/null || break
  done
  [ "$r" = 0 ] && status=$s
done
exit "$status"
