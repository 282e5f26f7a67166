# shellcheck shell=bash
# Sourced by the launch scripts: `run CMD...` executes CMD, or with DRY_RUN=1 only prints it
# (shell-quoted, one command per line, prefixed with "+ ").
DRY_RUN="${DRY_RUN:-0}"

run() {
  if [[ "${DRY_RUN}" == "1" ]]; then
    printf '+'
    printf ' %q' "$@"
    printf '\n'
  else
    "$@"
  fi
}

# `run_bg CMD...`: like run, in the background (its pid appended to PIDS).
PIDS=()
run_bg() {
  if [[ "${DRY_RUN}" == "1" ]]; then
    run "$@"
  else
    "$@" &
    PIDS+=("$!")
  fi
}

die() { echo "error: $*" >&2; exit 2; }

# `pretrain_then_evaluate LAUNCHER...`: main.py, then evaluate.py unless EVAL=0, each under
# the LAUNCHER prefix (env, srun, ...) with CONFIG, WORKDIR and the EXTRA config overrides.
pretrain_then_evaluate() {
  local binary
  for binary in main.py evaluate.py; do
    if [[ "${binary}" == "evaluate.py" && "${EVAL:-1}" != "1" ]]; then continue; fi
    run "$@" "${PYTHON}" "${binary}" --config="${CONFIG}" --workdir="${WORKDIR}" \
      "${EXTRA[@]+"${EXTRA[@]}"}"
  done
}
