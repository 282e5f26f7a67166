#!/usr/bin/env bash
# Cloud TPU VM, one host or a pod slice: create it, install this checkout on every worker,
# pretrain and evaluate on all workers at once (jax.distributed finds the coordinator by itself
# on TPU), copy the logs, delete it. Runs from anywhere; paths are relative to the checkout.
#
#   launch/tpu_vm.sh [--dry_run] [--name=N] [--accelerator=v4-32] [--zone=Z] [--version=V]
#                    [--project=P] [--bucket=gs://B] [--workdir=gs://B/runs/N]
#                    [--data_dir=gs://B/tensorflow_datasets] [--config=configs/x.py:preset]
#                    [--spot | --queued] [--max_restarts=3] [--repo=URL]
#                    [--override=--config.x=y ...] STEP...
# STEP: create | install | train | evaluate | copy_logs | delete | all (= each in that order).
#
# --accelerator picks the runtime (--version) and a zone that has it (--zone) unless given.
# --spot asks for spot capacity through a queued resource, --queued for on-demand capacity
# through one (waits in the queue instead of failing when the zone is full); delete and
# every later call need the same flag. train and evaluate run detached on the workers (the
# ssh session only waits: after a dropped connection it reattaches, and so does rerunning the
# step); each worker copies its log to WORKDIR/logs/. When the TPU is preempted during train
# or evaluate, it is recreated and reinstalled and the step rerun (main.py resumes from its
# last checkpoint in WORKDIR), up to --max_restarts times. When the steps include delete and
# this call created the TPU, a failure deletes it too.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
source "${HERE}/common.sh"
cd "${HERE}/.."

NAME="${TPU_NAME:-augself}"
ACCELERATOR="${TPU_ACCELERATOR:-v4-8}"
ZONE="${TPU_ZONE:-}"
VERSION="${TPU_VERSION:-}"
PROJECT="${GCP_PROJECT:-}"
BUCKET="${BUCKET:-}"
WORKDIR=""
DATA_DIR=""
CONFIG="${CONFIG:-configs/simclr_augself.py:imagenet100}"
CAPACITY=on_demand  # or spot, queued (both through a queued resource)
MAX_RESTARTS=3
# Empty: ship this checkout (git archive of HEAD) to every worker; else clone that URL.
REPO="${REPO:-}"
OVERRIDES=()
STEPS=()
for arg in "$@"; do
  case "${arg}" in
    --dry_run) DRY_RUN=1 ;;
    --name=*) NAME="${arg#*=}" ;;
    --accelerator=*) ACCELERATOR="${arg#*=}" ;;
    --zone=*) ZONE="${arg#*=}" ;;
    --version=*) VERSION="${arg#*=}" ;;
    --project=*) PROJECT="${arg#*=}" ;;
    --bucket=*) BUCKET="${arg#*=}" ;;
    --workdir=*) WORKDIR="${arg#*=}" ;;
    --data_dir=*) DATA_DIR="${arg#*=}" ;;
    --config=*) CONFIG="${arg#*=}" ;;
    --spot) CAPACITY=spot ;;
    --queued) CAPACITY=queued ;;
    --max_restarts=*) MAX_RESTARTS="${arg#*=}" ;;
    --repo=*) REPO="${arg#*=}" ;;
    --override=*) OVERRIDES+=("${arg#*=}") ;;
    create|install|train|evaluate|copy_logs|delete) STEPS+=("${arg}") ;;
    all) STEPS+=(create install train evaluate copy_logs delete) ;;
    *) die "unknown argument ${arg}" ;;
  esac
done
[[ ${#STEPS[@]} -gt 0 ]] \
  || die "no step given; allowed: create install train evaluate copy_logs delete all"
[[ "${MAX_RESTARTS}" =~ ^[0-9]+$ ]] || die "--max_restarts=${MAX_RESTARTS}; expected a count"

# Runtime and a zone offering it, per TPU generation (Cloud TPU docs: runtime versions,
# regions and zones).
case "${ACCELERATOR}" in
  v4-*) default_version=tpu-ubuntu2204-base; default_zone=us-central2-b ;;
  v5litepod-*) default_version=v2-alpha-tpuv5-lite; default_zone=us-west4-a ;;
  v5p-*) default_version=v2-alpha-tpuv5; default_zone=us-east5-a ;;
  v6e-*) default_version=v2-alpha-tpuv6e; default_zone=us-east5-b ;;
  *) die "--accelerator=${ACCELERATOR}; allowed: v4-N, v5litepod-N, v5p-N, v6e-N" ;;
esac
VERSION="${VERSION:-${default_version}}"
ZONE="${ZONE:-${default_zone}}"

# Every worker writes the workdir and it must outlive the VM: a bucket, not a VM's disk.
if [[ -z "${WORKDIR}" ]]; then
  [[ -n "${BUCKET}" ]] || die "--bucket (or --workdir) is required: workers share the workdir"
  WORKDIR="${BUCKET%/}/runs/${NAME}"
fi
[[ "${WORKDIR}" == gs://* ]] \
  || die "--workdir=${WORKDIR}; expected gs://...: every worker writes it and it must outlive the VM"
BUCKET="${BUCKET:-gs://$(cut -d/ -f3 <<< "${WORKDIR}")}"
# TFDS reads the datasets from here on every worker (nothing is prepared on a fresh VM).
DATA_DIR="${DATA_DIR:-${BUCKET%/}/tensorflow_datasets}"
LOG_DIR="${WORKDIR%/}/logs"

GCLOUD=(gcloud compute tpus tpu-vm)
QUEUED=(gcloud compute tpus queued-resources)
WHERE=(--zone="${ZONE}")
[[ -n "${PROJECT}" ]] && WHERE+=(--project="${PROJECT}")

on_all_workers() {  # the command string runs on every worker of the slice at once
  run "${GCLOUD[@]}" ssh "${NAME}" "${WHERE[@]}" --worker=all \
    --command="set -euo pipefail; $1"
}

create_tpu() {
  if [[ "${CAPACITY}" == "on_demand" ]]; then
    run "${GCLOUD[@]}" create "${NAME}" "${WHERE[@]}" --accelerator-type="${ACCELERATOR}" \
      --version="${VERSION}"
  else
    local tier=()
    [[ "${CAPACITY}" == "spot" ]] && tier=(--spot)
    run "${QUEUED[@]}" create "${NAME}" "${WHERE[@]}" --node-id="${NAME}" \
      --accelerator-type="${ACCELERATOR}" --runtime-version="${VERSION}" "${tier[@]+"${tier[@]}"}"
    CREATED=1  # a request that then fails is ours to delete too (its name stays taken)
    wait_until_active
  fi
  CREATED=1
}

queued_state() {
  run "${QUEUED[@]}" describe "${NAME}" "${WHERE[@]}" --format="value(state.state)"
}

wait_until_active() {
  local state
  while true; do
    state="$(queued_state)" || state=""  # a failed describe: ask again
    [[ "${DRY_RUN}" == "1" ]] && { echo "${state}"; return 0; }
    case "${state}" in
      ACTIVE) return 0 ;;
      FAILED|SUSPENDED) die "queued resource ${NAME} is ${state}" ;;
      *) echo "queued resource ${NAME}: ${state:-unknown}; waiting" >&2
         sleep "${AUGSELF_POLL_S:-60}" ;;
    esac
  done
}

delete_tpu() {
  if [[ "${CAPACITY}" == "on_demand" ]]; then
    run "${GCLOUD[@]}" delete "${NAME}" "${WHERE[@]}" --quiet
  else
    run "${QUEUED[@]}" delete "${NAME}" "${WHERE[@]}" --force --quiet  # the node with it
  fi
  CREATED=0
}

# True when the TPU is gone or preempted (rather than the job having failed on a live TPU).
preempted() {
  [[ "${DRY_RUN}" == "1" ]] && return 1
  local state
  if [[ "${CAPACITY}" != "on_demand" ]]; then
    state="$(queued_state 2>/dev/null || echo GONE)"
    [[ "${state}" == "ACTIVE" ]] || return 0
  fi
  state="$("${GCLOUD[@]}" describe "${NAME}" "${WHERE[@]}" --format="value(state)" 2>/dev/null \
    || echo GONE)"
  [[ "${state}" =~ ^(PREEMPTED|TERMINATED|GONE)$ ]]
}

install() {
  if [[ -n "${REPO}" ]]; then
    on_all_workers "git clone ${REPO} augself_jax || git -C augself_jax pull"
  else
    git diff --quiet HEAD 2>/dev/null \
      || echo "warning: uncommitted changes are not shipped (git archive of HEAD)" >&2
    run git archive --format=tar.gz -o augself_jax.tar.gz HEAD
    run "${GCLOUD[@]}" scp augself_jax.tar.gz "${NAME}:~/" "${WHERE[@]}" --worker=all
    run rm -f augself_jax.tar.gz
    on_all_workers "mkdir -p augself_jax && tar -xzf augself_jax.tar.gz -C augself_jax"
  fi
  on_all_workers "bash augself_jax/launch/tpu_worker.sh install"
}

FLAGS=(--config="${CONFIG}" --workdir="${WORKDIR}" --config.data.data_dir="${DATA_DIR}"
       "${OVERRIDES[@]+"${OVERRIDES[@]}"}")
quoted_flags="$(printf ' %q' "${FLAGS[@]}")"

# `remote_job JOB BINARY`: started detached on every worker, waited for. A failed ssh is either
# the job's failure, a dropped connection (reattach: the workers report the job's own status)
# or a preemption (recreate, reinstall and rerun, up to MAX_RESTARTS times).
remote_job() {
  local job="$1" binary="$2" restarts=0 attempt
  local worker="bash augself_jax/launch/tpu_worker.sh"
  until on_all_workers "${worker} run ${job} ${LOG_DIR} ${binary}${quoted_flags}"; do
    if ! preempted; then
      for attempt in 1 2 3; do
        echo "${job}: ssh failed on a live ${NAME}; reattaching (${attempt} of 3)" >&2
        on_all_workers "${worker} wait ${job}" && return 0
        preempted && break
      done
      preempted || { echo "error: ${job} failed on ${NAME} (logs: ${LOG_DIR})" >&2; return 1; }
    fi
    if (( restarts >= MAX_RESTARTS )); then
      echo "error: ${NAME} preempted ${restarts} times" >&2
      return 1
    fi
    restarts=$((restarts + 1))
    echo "${NAME} was preempted: recreating it (restart ${restarts} of ${MAX_RESTARTS})" >&2
    delete_tpu
    create_tpu
    install
  done
}

copy_logs() {  # from the bucket, so that it works after the VM is gone
  run mkdir -p "runs/${NAME}/logs"
  run gcloud storage cp "${LOG_DIR}/*" "runs/${NAME}/logs/"
}

# A failed `all` deletes the TPU it created rather than leave it billing.
CREATED=0
delete_on_failure() {
  local status=$?
  if [[ "${status}" != "0" && "${CREATED}" == "1" && " ${STEPS[*]} " == *" delete "* ]]; then
    echo "failed (status ${status}): deleting ${NAME}" >&2
    delete_tpu || true
  fi
}
trap delete_on_failure EXIT

for step in "${STEPS[@]}"; do
  case "${step}" in
    create) create_tpu ;;
    install) install ;;
    train) remote_job train main.py ;;
    evaluate) remote_job evaluate evaluate.py ;;
    copy_logs) copy_logs ;;
    delete) delete_tpu ;;
  esac
done
