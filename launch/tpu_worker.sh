#!/usr/bin/env bash
# Runs on every worker of a Cloud TPU VM; tpu_vm.sh ships it with the checkout and calls it
# over ssh. Paths are relative to the checkout it sits in.
#
#   launch/tpu_worker.sh [--dry_run] install
#       A Python >= 3.11 venv in ~/venv (the runtimes' own Python 3.10 is too old for jax and
#       for this project), with requirements.txt and the matching jax[tpu].
#   launch/tpu_worker.sh [--dry_run] run JOB LOG_DIR BINARY FLAGS...
#       `python BINARY FLAGS` detached from the ssh session (a dropped connection does not
#       kill it; running the same JOB again waits for the one still going instead of
#       starting a second), output appended to ~/JOB.log, which is copied to
#       LOG_DIR/JOB_<hostname>.log when it ends; exits with the binary's status.
#   launch/tpu_worker.sh wait JOB
#       Waits for JOB if it is running (never starts it); exits with its status.
set -euo pipefail
cd "$(dirname "$0")/.."
source launch/common.sh

VENV="${AUGSELF_VENV:-${HOME}/venv}"
POLL_S="${AUGSELF_POLL_S:-30}"
MIN_PYTHON=(3 11)

if [[ "${1:-}" == "--dry_run" ]]; then DRY_RUN=1; shift; fi
[[ $# -ge 1 ]] || die "no command given; allowed: install, run, wait"

# python3 when it is new enough (a newer runtime), else the distribution's python3.11.
venv_python() {
  if python3 -c "import sys; sys.exit(sys.version_info < (${MIN_PYTHON[0]}, ${MIN_PYTHON[1]}))" \
      2>/dev/null; then
    echo python3
  else
    echo "python${MIN_PYTHON[0]}.${MIN_PYTHON[1]}"
  fi
}

install() {
  local python packages jax_version
  python="$(venv_python)"
  packages=("${python}-venv")
  [[ "${python}" == "python3" ]] || packages=("${python}" "${python}-venv")
  jax_version="$(sed -n 's/^jax==//p' requirements.txt)"
  [[ -n "${jax_version}" ]] || die "requirements.txt pins no jax version"
  # The lock timeout: at boot, unattended upgrades hold the package lock for minutes.
  run sudo apt-get -o DPkg::Lock::Timeout=600 update -q
  run sudo env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q \
    "${packages[@]}"
  run "${python}" -m venv "${VENV}"
  run "${VENV}/bin/pip" install -q -U pip
  run "${VENV}/bin/pip" install -q -r requirements.txt "jax[tpu]==${jax_version}"
}

# The detached body: the binary, then its log to LOG_DIR, then its status for `run` to read.
detached() {
  local job="$1" log_dir="$2"
  shift 2
  local status=0
  env AUGSELF_DISTRIBUTED=1 "${VENV}/bin/python" "$@" >> "${HOME}/${job}.log" 2>&1 || status=$?
  gcloud storage cp "${HOME}/${job}.log" "${log_dir%/}/${job}_$(hostname).log" > /dev/null 2>&1 \
    || echo "copying ${job}.log to ${log_dir} failed" >> "${HOME}/${job}.log"
  echo "${status}" > "${HOME}/${job}.exit"
}

run_detached() {
  [[ $# -ge 3 ]] || die "run needs JOB LOG_DIR BINARY [FLAGS...]"
  local job="$1" pid_file="${HOME}/$1.pid"
  if [[ "${DRY_RUN}" == "1" ]]; then
    run env AUGSELF_DISTRIBUTED=1 "${VENV}/bin/python" "${@:3}"
    return 0
  fi
  if [[ -f "${pid_file}" ]] && kill -0 "$(cat "${pid_file}")" 2>/dev/null; then
    echo "${job} is already running (pid $(cat "${pid_file}")): waiting for it"
  else
    rm -f "${HOME}/${job}.exit"
    # setsid: its own session, so the end of the ssh session (SIGHUP) does not reach it.
    setsid bash launch/tpu_worker.sh _detached "$@" < /dev/null > /dev/null 2>&1 &
    echo "$!" > "${pid_file}"
    echo "${job} started (pid $!, log ~/${job}.log)"
  fi
  wait_for "${job}"
}

wait_for() {
  [[ $# -eq 1 ]] || die "wait needs JOB"
  local job="$1" pid_file="${HOME}/$1.pid" status
  while [[ -f "${pid_file}" ]] && kill -0 "$(cat "${pid_file}")" 2>/dev/null; do
    sleep "${POLL_S}"
  done
  # No status file: never started here, or killed before it could write one (VM restart, OOM).
  status="$(cat "${HOME}/${job}.exit" 2>/dev/null || echo 1)"
  echo "${job} finished with status ${status}"
  return "${status}"
}

command="$1"
shift
case "${command}" in
  install) install ;;
  run) run_detached "$@" ;;
  wait) wait_for "$@" ;;
  _detached) detached "$@" ;;
  *) die "unknown command ${command}; allowed: install, run, wait" ;;
esac
