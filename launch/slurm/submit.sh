#!/bin/bash
# [submit.sh] sbatch with the output file inside the run folder (#SBATCH lines cannot expand variables).
# usage: RX_CONFIG=cfg.json RX_RUN_DIR=/shared/runs/a [RX_SETS="k=v ..."] [RX_LAUNCHER=srun|mpirun] \
#          launch/slurm/submit.sh [train.sbatch|train_multinode.sbatch] [extra sbatch flags...]
# Prints the Slurm job id (sbatch --parsable).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
script=${1:-train.sbatch}
[ $# -gt 0 ] && shift
[ -f "$script" ] || script=$here/$script
: "${RX_CONFIG:?set RX_CONFIG}"
: "${RX_RUN_DIR:?set RX_RUN_DIR}"
RX_RUN_DIR=$(mkdir -p "$RX_RUN_DIR" && cd "$RX_RUN_DIR" && pwd)
RX_CONFIG=$(cd "$(dirname "$RX_CONFIG")" && pwd)/$(basename "$RX_CONFIG")
export RX_CONFIG RX_RUN_DIR
exec sbatch --parsable --output="$RX_RUN_DIR/slurm-%j.out" --chdir="$RX_RUN_DIR" "$@" "$script"
