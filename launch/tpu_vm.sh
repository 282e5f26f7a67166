#!/usr/bin/env bash
# Cloud TPU VM (single host or pod slice): create, install on every worker, pretrain and
# evaluate on all workers (jax.distributed finds the coordinator by itself on TPU), copy the
# logs, delete.
#
#   launch/tpu_vm.sh [--dry_run] [--name=N] [--zone=Z] [--accelerator=v4-32] [--version=V]
#                    [--project=P] [--bucket=gs://B] [--config=configs/x.py:preset]
#                    [--workdir=gs://B/runs/N] [--repo=URL] STEP...
# STEP: create | install | train | evaluate | copy_logs | delete | all (= every step in order).
# Extra config overrides: --override=--config.optimizer.name=lars (repeatable).
set -euo pipefail
source "$(dirname "$0")/common.sh"

NAME="${TPU_NAME:-augself}"
ZONE="${TPU_ZONE:-us-central2-b}"
ACCELERATOR="${TPU_ACCELERATOR:-v4-8}"
VERSION="${TPU_VERSION:-tpu-ubuntu2204-base}"
PROJECT="${GCP_PROJECT:-}"
BUCKET="${BUCKET:-}"
CONFIG="${CONFIG:-configs/simclr_augself.py:imagenet100}"
# Empty: ship this checkout (git archive of HEAD) to every worker; else clone that URL.
REPO="${REPO:-}"
WORKDIR=""
OVERRIDES=()
STEPS=()
for arg in "$@"; do
  case "${arg}" in
    --dry_run) DRY_RUN=1 ;;
    --name=*) NAME="${arg#*=}" ;;
    --zone=*) ZONE="${arg#*=}" ;;
    --accelerator=*) ACCELERATOR="${arg#*=}" ;;
    --version=*) VERSION="${arg#*=}" ;;
    --project=*) PROJECT="${arg#*=}" ;;
    --bucket=*) BUCKET="${arg#*=}" ;;
    --config=*) CONFIG="${arg#*=}" ;;
    --workdir=*) WORKDIR="${arg#*=}" ;;
    --repo=*) REPO="${arg#*=}" ;;
    --override=*) OVERRIDES+=("${arg#*=}") ;;
    create|install|train|evaluate|copy_logs|delete) STEPS+=("${arg}") ;;
    all) STEPS+=(create install train evaluate copy_logs delete) ;;
    *) die "unknown argument ${arg}" ;;
  esac
done
[[ ${#STEPS[@]} -gt 0 ]] || die "no step given; allowed: create install train evaluate copy_logs delete all"
if [[ -z "${WORKDIR}" ]]; then
  [[ -n "${BUCKET}" ]] || die "--bucket (or --workdir) is required: workers share the workdir"
  WORKDIR="${BUCKET%/}/runs/${NAME}"
fi
GCLOUD=(gcloud compute tpus tpu-vm)
WHERE=(--zone="${ZONE}")
[[ -n "${PROJECT}" ]] && WHERE+=(--project="${PROJECT}")

on_all_workers() {  # the command string runs on every worker of the slice at once
  run "${GCLOUD[@]}" ssh "${NAME}" "${WHERE[@]}" --worker=all --command="$1"
}

extra=""
for o in "${OVERRIDES[@]+"${OVERRIDES[@]}"}"; do extra+=" $(printf '%q' "${o}")"; done
for step in "${STEPS[@]}"; do
  case "${step}" in
    create)
      run "${GCLOUD[@]}" create "${NAME}" "${WHERE[@]}" --accelerator-type="${ACCELERATOR}" \
        --version="${VERSION}" ;;
    install)
      if [[ -n "${REPO}" ]]; then
        on_all_workers "git clone ${REPO} augself_jax || git -C augself_jax pull"
      else
        run git archive --format=tar.gz -o augself_jax.tar.gz HEAD
        run "${GCLOUD[@]}" scp augself_jax.tar.gz "${NAME}:~/" "${WHERE[@]}" --worker=all
        on_all_workers "mkdir -p augself_jax && tar -xzf augself_jax.tar.gz -C augself_jax"
      fi
      on_all_workers "cd augself_jax && python3 -m venv ~/venv && ~/venv/bin/pip install -q -r requirements.txt 'jax[tpu]'" ;;
    train)
      on_all_workers "cd augself_jax && AUGSELF_DISTRIBUTED=1 ~/venv/bin/python main.py --config=${CONFIG} --workdir=${WORKDIR}${extra} 2>&1 | tee -a ~/train.log" ;;
    evaluate)
      on_all_workers "cd augself_jax && AUGSELF_DISTRIBUTED=1 ~/venv/bin/python evaluate.py --config=${CONFIG} --workdir=${WORKDIR}${extra} 2>&1 | tee -a ~/evaluate.log" ;;
    copy_logs)
      run mkdir -p "logs/${NAME}"
      run "${GCLOUD[@]}" scp "${NAME}:~/train.log" "${NAME}:~/evaluate.log" "logs/${NAME}/" \
        "${WHERE[@]}" --worker=0 ;;
    delete)
      run "${GCLOUD[@]}" delete "${NAME}" "${WHERE[@]}" --quiet ;;
  esac
done
