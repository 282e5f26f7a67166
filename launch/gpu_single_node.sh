#!/usr/bin/env bash
# One machine with several GPUs: one process drives all of them (the mesh spans every local
# GPU), then the evaluation binary on the same config and workdir.
#
#   launch/gpu_single_node.sh [--dry_run] [--gpus=0,1,2,3] [--config=configs/x.py:preset]
#                             [--workdir=DIR] [--no_eval] [-- extra flags for both binaries]
set -euo pipefail
source "$(dirname "$0")/common.sh"
cd "$(dirname "$0")/.."

CONFIG="${CONFIG:-configs/simclr_augself.py:stl10}"
WORKDIR="${WORKDIR:-runs/$(basename "${CONFIG%%:*}" .py)}"
GPUS="${CUDA_VISIBLE_DEVICES:-}"
PYTHON="${PYTHON:-python}"
EVAL=1
EXTRA=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry_run) DRY_RUN=1 ;;
    --gpus=*) GPUS="${1#*=}" ;;
    --config=*) CONFIG="${1#*=}" ;;
    --workdir=*) WORKDIR="${1#*=}" ;;
    --no_eval) EVAL=0 ;;
    --) shift; EXTRA=("$@"); break ;;
    *) die "unknown argument $1" ;;
  esac
  shift
done
ENV=(env XLA_PYTHON_CLIENT_MEM_FRACTION=0.9)
[[ -n "${GPUS}" ]] && ENV+=(CUDA_VISIBLE_DEVICES="${GPUS}")
pretrain_then_evaluate "${ENV[@]}"
