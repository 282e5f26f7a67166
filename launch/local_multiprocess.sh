#!/usr/bin/env bash
# N processes on one machine talking through jax.distributed on localhost (--platform=cpu:
# simulated CPU devices; --platform=gpu: one GPU each): the multi-host code path without a cluster. Each process's output goes to
# WORKDIR/process_<i>.log; the script waits for all and fails if any fails.
#
#   launch/local_multiprocess.sh [--dry_run] [--num_processes=2] [--devices_per_process=1]
#                                [--platform=cpu|gpu] [--port=12355] [--binary=main.py] [--config=...]
#                                [--workdir=DIR] [-- extra flags]
set -euo pipefail
source "$(dirname "$0")/common.sh"
cd "$(dirname "$0")/.."

NUM_PROCESSES=2
PLATFORM=cpu
DEVICES_PER_PROCESS=1
PORT="${PORT:-12355}"
BINARY=main.py
CONFIG="${CONFIG:-configs/simclr_augself.py:shapes}"
WORKDIR="${WORKDIR:-runs/local_multiprocess}"
PYTHON="${PYTHON:-python}"
EXTRA=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry_run) DRY_RUN=1 ;;
    --num_processes=*) NUM_PROCESSES="${1#*=}" ;;
    --devices_per_process=*) DEVICES_PER_PROCESS="${1#*=}" ;;
    --platform=*) PLATFORM="${1#*=}" ;;
    --port=*) PORT="${1#*=}" ;;
    --binary=*) BINARY="${1#*=}" ;;
    --config=*) CONFIG="${1#*=}" ;;
    --workdir=*) WORKDIR="${1#*=}" ;;
    --) shift; EXTRA=("$@"); break ;;
    *) die "unknown argument $1" ;;
  esac
  shift
done
[[ "${PLATFORM}" == "cpu" || "${PLATFORM}" == "gpu" ]] || die "--platform=${PLATFORM}; allowed: cpu, gpu"
run mkdir -p "${WORKDIR}"
for ((i = 0; i < NUM_PROCESSES; i++)); do
  if [[ "${PLATFORM}" == "gpu" ]]; then
    ENV=(env JAX_PLATFORMS=cuda CUDA_VISIBLE_DEVICES="${i}")
  else
    ENV=(env JAX_PLATFORMS=cpu "XLA_FLAGS=--xla_force_host_platform_device_count=${DEVICES_PER_PROCESS}")
  fi
  CMD=("${ENV[@]}" "${PYTHON}" "${BINARY}" --config="${CONFIG}" --workdir="${WORKDIR}" --distributed
       --coordinator_address="localhost:${PORT}" --num_processes="${NUM_PROCESSES}"
       --process_id="${i}" "${EXTRA[@]+"${EXTRA[@]}"}")
  if [[ "${DRY_RUN}" == "1" ]]; then
    run "${CMD[@]}"
  else
    "${CMD[@]}" > "${WORKDIR}/process_${i}.log" 2>&1 &
    PIDS+=("$!")
  fi
done
status=0
for pid in "${PIDS[@]+"${PIDS[@]}"}"; do wait "${pid}" || status=1; done
[[ "${status}" == "0" ]] || { tail -n 20 "${WORKDIR}"/process_*.log >&2; exit 1; }
