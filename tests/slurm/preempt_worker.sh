#!/bin/bash
# Stand-in for resnext_worker's checkpoint contract, for the requeue plumbing test (slurm_requeue_plumbing):
# `preempt_worker.sh train --config F --out DIR [--resume] ...` under mpirun. A fresh run loops until
# SIGUSR1/SIGTERM, then "writes a checkpoint" (rank 0) and exits 85; a run started with --resume and a
# checkpoint present writes result.json and exits 0.
set -u
OUT="" RESUME=0
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT=$2; shift 2 ;;
    --resume) RESUME=1; shift ;;
    *) shift ;;
  esac
done
RANK=${OMPI_COMM_WORLD_RANK:-${SLURM_PROCID:-0}}  # mpirun or srun
if [ "$RESUME" = 1 ] && [ -f "$OUT/checkpoints/step-3.json" ]; then
  echo "rank $RANK: resuming from checkpoint $OUT/checkpoints/step-3.json"
  [ "$RANK" = 0 ] && echo '{"final_test_accuracy": 0.5, "resumed": true}' > "$OUT/result.json"
  exit 0
fi
stop=""
trap 'stop=USR1' USR1
trap 'stop=TERM' TERM
echo "rank $RANK: training (pid $$)"
[ "$RANK" = 0 ] && touch "$OUT/started"
while [ -z "$stop" ]; do sleep 0.1 & wait $!; done
echo "rank $RANK: got SIG$stop, checkpoint written"
[ "$RANK" = 0 ] && mkdir -p "$OUT/checkpoints" && echo '{"step": 3}' > "$OUT/checkpoints/step-3.json"
exit 85
