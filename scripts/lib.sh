# shellcheck shell=bash
# Helpers shared by the scripts in this folder. Source it; it does nothing on its own.
# Each script sets AGENTCELL_STEP to the name its progress lines start with.

say() { printf '%s: %s\n' "${AGENTCELL_STEP:-agentcell}" "$*"; }
warn() { printf '%s: warning: %s\n' "${AGENTCELL_STEP:-agentcell}" "$*" >&2; }
die() {
  printf '%s: error: %s\n' "${AGENTCELL_STEP:-agentcell}" "$*" >&2
  exit 1
}

# wait_until SECONDS COMMAND [ARGS...]: poll COMMAND every half second; fail once SECONDS pass.
wait_until() {
  local deadline=$((SECONDS + $1))
  shift
  until "$@"; do
    ((SECONDS < deadline)) || return 1
    sleep 0.5
  done
}
