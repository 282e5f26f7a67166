#!/usr/bin/env bash
# Several GPU nodes under SLURM: one process per node driving that node's GPUs;
# jax.distributed.initialize reads the coordinator, process count and index from SLURM.
# Outside an allocation this submits itself with sbatch; inside, it runs srun.
#
#   launch/slurm_multinode.sh [--dry_run] [--nodes=2] [--gpus_per_node=8] [--partition=P]
#                             [--time=24:00:00] [--config=configs/x.py:preset] [--workdir=DIR]
#                             [--no_eval] [-- extra flags for both binaries]
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
source "${HERE}/common.sh"
cd "${HERE}/.."

NODES="${NODES:-2}"
GPUS_PER_NODE="${GPUS_PER_NODE:-8}"
PARTITION="${PARTITION:-}"
TIME="${TIME:-24:00:00}"
CONFIG="${CONFIG:-configs/simclr_augself.py:imagenet100}"
WORKDIR="${WORKDIR:-runs/$(basename "${CONFIG%%:*}" .py)}"
PYTHON="${PYTHON:-python}"
EVAL=1
ARGS=("$@")
EXTRA=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry_run) DRY_RUN=1 ;;
    --nodes=*) NODES="${1#*=}" ;;
    --gpus_per_node=*) GPUS_PER_NODE="${1#*=}" ;;
    --partition=*) PARTITION="${1#*=}" ;;
    --time=*) TIME="${1#*=}" ;;
    --config=*) CONFIG="${1#*=}" ;;
    --workdir=*) WORKDIR="${1#*=}" ;;
    --no_eval) EVAL=0 ;;
    --) shift; EXTRA=("$@"); break ;;
    *) die "unknown argument $1" ;;
  esac
  shift
done

if [[ -z "${SLURM_JOB_ID:-}" ]]; then
  SBATCH=(sbatch --nodes="${NODES}" --ntasks-per-node=1 --gpus-per-node="${GPUS_PER_NODE}"
          --time="${TIME}" --job-name=augself --output="slurm-%j.out")
  [[ -n "${PARTITION}" ]] && SBATCH+=(--partition="${PARTITION}")
  run "${SBATCH[@]}" "${HERE}/slurm_multinode.sh" "${ARGS[@]+"${ARGS[@]}"}"
  exit 0
fi
SRUN=(srun --nodes="${NODES}" --ntasks-per-node=1 env AUGSELF_DISTRIBUTED=1)
pretrain_then_evaluate "${SRUN[@]}"
