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
