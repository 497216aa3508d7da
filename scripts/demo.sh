#!/usr/bin/env bash
# A tour of agentcell on this host: a monitoring agent and an AI-code sandbox come up as cells,
# their hardening is read back from inside, and both are torn down again, even on failure.
#
# Usage: bash scripts/demo.sh [--keep]
#   --keep  leave the cells and the demo's control plane running to explore, and print how to
#           remove them.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
AGENTCELL_STEP=demo

AGENTCELL=.venv/bin/agentcell
SPECS=(examples/monitor-agent.yaml examples/sandbox.yaml examples/reference-agent.yaml)
# The demo's control plane keeps its CA, database and sockets in a directory of its own.
AGENTCELL_HOME=$(mktemp -d /tmp/agentcell-demo.XXXXXX)
export AGENTCELL_HOME
SERVER_PID=
DAEMON_PID=
KEEP=0
for arg in "$@"; do
  case $arg in
    --keep) KEEP=1 ;;
    *) die "unknown argument: $arg (usage: bash scripts/demo.sh [--keep])" ;;
  esac
done
# Cells the demo's specs name that were there before it ran; teardown leaves them alone.
BEFORE=()

# Echo a command like a terminal session would, then run it.
show() {
  printf '\n$ %s\n' "$*"
  "$@"
}

# The cell (TENANT/AGENT) a spec file names.
cell_of() {
  "$AGENTCELL" lint -f "$1" -o json --fail-on never |
    .venv/bin/python -c 'import json, sys; (d,) = json.load(sys.stdin)["items"]; print(d["tenant"] + "/" + d["name"])'
}

# shellcheck disable=SC2317  # run by the EXIT trap
keep() {
  local status=$? spec
  say "kept the demo's cells and control plane running (AGENTCELL_HOME=$AGENTCELL_HOME)."
  say "explore them with, for example:"
  printf '  export AGENTCELL_HOME=%s\n' "$AGENTCELL_HOME"
  printf '  %s ps -o wide\n  %s verify sandbox\n  %s metrics load.1m\n' \
    "$AGENTCELL" "$AGENTCELL" "$AGENTCELL"
  say "remove them with:"
  for spec in "${SPECS[@]}"; do
    made "$spec" && printf '  %s down -f %s\n' "$AGENTCELL" "$spec"
  done
  [[ -n $DAEMON_PID ]] && printf '  kill %s   # the host service; then down its demo/sbx-* cells\n' "$DAEMON_PID"
  [[ -n $SERVER_PID ]] && printf '  kill %s\n' "$SERVER_PID"
  printf '  rm -rf %s\n' "$AGENTCELL_HOME"
  exit "$status"
}

# Whether the demo made the cell of this spec (it was not there before).
made() {
  local cell
  cell=$(cell_of "$1") || return 0
  [[ " ${BEFORE[*]} " != *" $cell "* ]]
}

# The sandbox cells of tenant demo (the host service leaves its pool running when it stops).
sandbox_cells() {
  "$AGENTCELL" ps --tenant demo -o json 2>/dev/null |
    .venv/bin/python -c 'import json, sys; print("\n".join("demo/" + c["agent"] for c in json.load(sys.stdin)["items"] if c["agent"].startswith("sbx-")))'
}

# shellcheck disable=SC2317  # run by the EXIT trap
teardown() {
  local status=$? spec cell
  if [[ -n $DAEMON_PID ]]; then
    kill "$DAEMON_PID" 2>/dev/null || true
    wait "$DAEMON_PID" 2>/dev/null || true
  fi
  for cell in $(sandbox_cells); do
    "$AGENTCELL" down "$cell" >/dev/null || warn "could not remove $cell"
  done
  for spec in "${SPECS[@]}"; do
    if made "$spec"; then
      show "$AGENTCELL" down -f "$spec" || warn "could not take down $spec"
    else
      say "leaving $(cell_of "$spec"): it was there before the demo"
    fi
  done
  # The tenant network goes once no cell is on it (a cell that was there before keeps it).
  "$AGENTCELL" net remove demo >/dev/null 2>&1 || true
  if [[ -n $SERVER_PID ]]; then
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  rm -rf "$AGENTCELL_HOME"
  exit "$status"
}

bash scripts/setup.sh
show "$AGENTCELL" image bootstrap
for spec in "${SPECS[@]}"; do
  cell=$(cell_of "$spec")
  if "$AGENTCELL" inspect "$cell" -o json >/dev/null 2>&1; then
    BEFORE+=("$cell")
  fi
done
if ((KEEP)); then
  trap keep EXIT
else
  trap teardown EXIT
fi
show "$AGENTCELL" runtimes
# Policy first: the monitoring agent's read-only /proc and /sys mounts pass the restricted
# policy only through the exception written (with its reason) in its spec.
show "$AGENTCELL" lint -f examples/

# The control plane: a CA, then the HTTPS API with agents over mTLS on a Unix socket.
show "$AGENTCELL" ca init
"$AGENTCELL" server >"$AGENTCELL_HOME/server.log" 2>&1 &
SERVER_PID=$!
wait_until 30 grep -q '^ready' "$AGENTCELL_HOME/server.log" ||
  die "the control plane did not start; see $AGENTCELL_HOME/server.log"
say "control plane: $(grep '^ready' "$AGENTCELL_HOME/server.log")"

# The tenant and its agents, declared: the plan first, then the cells, held to the quota.
show "$AGENTCELL" apply -f examples/
# The same directory again plans nothing; `up` of one spec leaves its cell alone too.
show "$AGENTCELL" apply -f examples/
show "$AGENTCELL" up -f examples/sandbox.yaml
show "$AGENTCELL" tenant show demo
show "$AGENTCELL" ps
# The audit judges every container on the host with the same rules, agentcell's or not.
show "$AGENTCELL" audit --cis
show "$AGENTCELL" inspect monitor-agent
show "$AGENTCELL" inspect sandbox
# Proof, not configuration: what the kernel enforces on each running cell, read from
# /proc, cgroupfs and the cell's network namespace, compared with its spec.
failed=0
show "$AGENTCELL" verify --all || failed=1
# Escape attempts from inside the sandbox cell: every one must be blocked.
show "$AGENTCELL" probe sandbox || failed=1
# The monitor prints its first sample at start; give it a second one to show.
sleep 6
show "$AGENTCELL" logs monitor-agent

# The reference agent enrolled with its one-time token and reports over mTLS.
wait_until 60 bash -c "'$AGENTCELL' metrics load.1m 2>/dev/null | grep -q demo/reporter" ||
  warn "no report from demo/reporter yet"
show "$AGENTCELL" metrics load.1m
show "$AGENTCELL" cert list
show "$AGENTCELL" events
show "$AGENTCELL" logs reporter

# Sandboxes for AI-agent code: the host service keeps a started, verified, never-used cell of
# each template ready; a sandbox is handed out once and destroyed when released. Its cells sit
# on the tenant's network, whose resolver and egress gateway the service runs; no upstream
# resolver is configured, so no outside name resolves and no query leaves this host.
"$AGENTCELL" daemon serve --templates examples/templates >"$AGENTCELL_HOME/daemon.log" 2>&1 &
DAEMON_PID=$!
wait_until 60 grep -q '^ready' "$AGENTCELL_HOME/daemon.log" ||
  die "the host service did not start; see $AGENTCELL_HOME/daemon.log"
say "host service: $(grep '^ready' "$AGENTCELL_HOME/daemon.log")"
# A tenant token sees only its tenant's sandboxes; the service keeps only its SHA-256.
AGENTCELL_TOKEN=$("$AGENTCELL" daemon token create demo 2>/dev/null)
export AGENTCELL_TOKEN
show "$AGENTCELL" run python -- python3 -c 'import os; print(6 * 7, "as uid", os.getuid())'
SANDBOX=$("$AGENTCELL" sandbox create python --timeout 120)
say "sandbox: $SANDBOX"
show "$AGENTCELL" sandbox ls
printf 'rows,total\n3,42\n' >"$AGENTCELL_HOME/data.csv"
show "$AGENTCELL" sandbox cp "$AGENTCELL_HOME/data.csv" "$SANDBOX:/tmp/data.csv"
show "$AGENTCELL" sandbox exec "$SANDBOX" -- sh -c 'cat /tmp/data.csv; touch /etc/x || echo "rootfs is read-only"'
# A denied name is answered NXDOMAIN by the tenant's resolver and logged; the gateway refuses it.
show "$AGENTCELL" sandbox exec "$SANDBOX" -- python3 -c '
import socket, urllib.request
try:
    socket.getaddrinfo("exfil.example.com", 443)
except OSError as exc:
    print("resolve exfil.example.com:", exc)
try:
    urllib.request.urlopen("https://exfil.example.com/", timeout=5)
except OSError as exc:
    print("https through the gateway:", exc)
'
show "$AGENTCELL" net log demo --denied
show "$AGENTCELL" net check demo
show "$AGENTCELL" verify "demo/$SANDBOX" || failed=1
show "$AGENTCELL" sandbox kill "$SANDBOX"
exit "$failed"
