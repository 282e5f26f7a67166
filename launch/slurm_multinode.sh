#!/usr/bin/env bash
# Several GPU nodes under SLURM: one task per node, driving every GPU of its node (app.py
# hands each task its node's GPUs, augself_jax/slurm.py); jax.distributed.initialize reads the
# coordinator, process count and index from SLURM. Outside an allocation this submits itself
# with sbatch (whole nodes, the checkout as working directory); inside, it runs srun. The
# checkout, its Python environment and a local workdir must be on storage every node sees.
#
#   launch/slurm_multinode.sh [--dry_run] [--nodes=2] [--gpus_per_node=8] [--partition=P]
#                             [--account=A] [--time=24:00:00] [--config=configs/x.py:preset]
#                             [--workdir=DIR] [--no_eval] [--checkout=DIR]
#                             [-- extra flags for both binaries]
# Relative paths (--config, --workdir) are relative to the checkout.
set -euo pipefail

# SLURM runs a copy of the batch script from its spool directory, so the script's own location
# says nothing about the checkout inside the job: the submission passes it as --checkout; a
# hand-made `sbatch launch/slurm_multinode.sh` from the checkout falls back on the submit dir.
CHECKOUT=""
for arg in "$@"; do
  [[ "${arg}" == "--" ]] && break
  [[ "${arg}" == --checkout=* ]] && CHECKOUT="${arg#*=}"
done
if [[ -z "${CHECKOUT}" ]]; then
  candidates=("$(dirname "$0")/..")
  [[ -n "${SLURM_SUBMIT_DIR:-}" ]] && candidates+=("${SLURM_SUBMIT_DIR}" "${SLURM_SUBMIT_DIR}/..")
  for candidate in "${candidates[@]}"; do
    if [[ -f "${candidate}/launch/common.sh" ]]; then CHECKOUT="${candidate}"; break; fi
  done
fi
if [[ -z "${CHECKOUT}" || ! -f "${CHECKOUT}/launch/common.sh" ]]; then
  echo "error: cannot find the checkout (launch/common.sh); pass --checkout=DIR" >&2
  exit 2
fi
CHECKOUT="$(cd "${CHECKOUT}" && pwd)"
source "${CHECKOUT}/launch/common.sh"
cd "${CHECKOUT}"

NODES="${NODES:-2}"
GPUS_PER_NODE="${GPUS_PER_NODE:-8}"
PARTITION="${PARTITION:-}"
ACCOUNT="${ACCOUNT:-}"
TIME="${TIME:-24:00:00}"
CONFIG="${CONFIG:-configs/simclr_augself.py:imagenet100}"
WORKDIR="${WORKDIR:-runs/$(basename "${CONFIG%%:*}" .py)}"
PYTHON="${PYTHON:-python}"
EVAL=1
ARGS=()
EXTRA=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry_run) DRY_RUN=1; shift; continue ;;  # not passed on: the printed sbatch line is real
    --nodes=*) NODES="${1#*=}" ;;
    --gpus_per_node=*) GPUS_PER_NODE="${1#*=}" ;;
    --partition=*) PARTITION="${1#*=}" ;;
    --account=*) ACCOUNT="${1#*=}" ;;
    --time=*) TIME="${1#*=}" ;;
    --config=*) CONFIG="${1#*=}" ;;
    --workdir=*) WORKDIR="${1#*=}" ;;
    --no_eval) EVAL=0 ;;
    --checkout=*) shift; continue ;;  # read above; passed on once, below
    --) ARGS+=("$@"); shift; EXTRA=("$@"); break ;;
    *) die "unknown argument $1" ;;
  esac
  ARGS+=("$1")
  shift
done
[[ "${NODES}" =~ ^[1-9][0-9]*$ ]] || die "--nodes=${NODES}; expected a positive count"
[[ "${GPUS_PER_NODE}" =~ ^[1-9][0-9]*$ ]] \
  || die "--gpus_per_node=${GPUS_PER_NODE}; expected a positive count"

# --kill-on-bad-exit: one crashed process ends the step instead of leaving the others
# waiting forever in a collective.
SRUN=(srun --nodes="${NODES}" --ntasks-per-node=1 --gpus-per-node="${GPUS_PER_NODE}"
      --kill-on-bad-exit=1 env AUGSELF_DISTRIBUTED=1)
if [[ -z "${SLURM_JOB_ID:-}" ]]; then
  # --exclusive --mem=0: the whole node, so that its one task gets every CPU for tf.data.
  SBATCH=(sbatch --nodes="${NODES}" --ntasks-per-node=1 --gpus-per-node="${GPUS_PER_NODE}"
          --exclusive --mem=0 --time="${TIME}" --job-name=augself --chdir="${CHECKOUT}"
          --output="slurm-%j.out")
  [[ -n "${PARTITION}" ]] && SBATCH+=(--partition="${PARTITION}")
  [[ -n "${ACCOUNT}" ]] && SBATCH+=(--account="${ACCOUNT}")
  run "${SBATCH[@]}" "${CHECKOUT}/launch/slurm_multinode.sh" --checkout="${CHECKOUT}" \
    "${ARGS[@]+"${ARGS[@]}"}"
  if [[ "${DRY_RUN}" == "1" ]]; then  # a dry run shows what the job itself will run too
    echo "# then, inside the job (working directory ${CHECKOUT}):"
    pretrain_then_evaluate "${SRUN[@]}"
  fi
  exit 0
fi
pretrain_then_evaluate "${SRUN[@]}"
