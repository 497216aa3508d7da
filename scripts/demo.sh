#!/usr/bin/env bash
# A tour of agentcell on this host: a monitoring agent and an AI-code sandbox come up as cells,
# their hardening is read back from inside, and both are torn down again, even on failure.
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
# agentcell names containers agentcell-<tenant>-<name>; both examples use tenant "demo".
CONTAINERS=(agentcell-demo-monitor-agent agentcell-demo-sandbox)

# Echo a command like a terminal session would, then run it.
show() {
  printf '\n$ %s\n' "$*"
  "$@"
}

# shellcheck disable=SC2317  # run by the EXIT trap
teardown() {
  local status=$? spec
  for spec in "${SPECS[@]}"; do
    show "$AGENTCELL" down -f "$spec" || warn "could not take down $spec"
  done
  if [[ -n $SERVER_PID ]]; then
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  rm -rf "$AGENTCELL_HOME"
  exit "$status"
}

# Read the effective isolation back from the kernel's view inside a running container.
# Fails only when the root filesystem turns out to be writable.
# TODO(verify): replace with `agentcell verify <cell>` once it lands.
read_back() {
  local container=$1 cgroup_files
  say "hardening of $container, read from inside"
  show docker exec "$container" grep -E '^(Uid|Gid|CapEff|CapBnd|NoNewPrivs|Seccomp)' /proc/1/status ||
    warn "could not read /proc/1/status in $container"
  if [[ "$(docker info --format '{{.CgroupVersion}}')" == 2 ]]; then
    cgroup_files=(/sys/fs/cgroup/memory.max /sys/fs/cgroup/pids.max /sys/fs/cgroup/cpu.max)
  else
    cgroup_files=(/sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/pids/pids.max
      /sys/fs/cgroup/cpu/cpu.cfs_quota_us)
  fi
  show docker exec "$container" grep -H . "${cgroup_files[@]}" ||
    warn "some cgroup files are not readable in $container (gVisor emulates cgroupfs)"
  if show docker exec "$container" touch /should-fail; then
    say "FAIL: the root filesystem of $container is writable"
    return 1
  fi
  say "ok: the root filesystem of $container is read-only"
}

bash scripts/setup.sh
show "$AGENTCELL" image bootstrap
trap teardown EXIT
show "$AGENTCELL" runtimes
# Policy first: the monitoring agent's read-only /proc and /sys mounts pass the restricted
# policy only through the exception written (with its reason) in its spec.
show "$AGENTCELL" lint examples/

# The control plane: a CA, then the HTTPS API with agents over mTLS on a Unix socket.
show "$AGENTCELL" ca init
"$AGENTCELL" server >"$AGENTCELL_HOME/server.log" 2>&1 &
SERVER_PID=$!
wait_until 30 grep -q '^ready' "$AGENTCELL_HOME/server.log" ||
  die "the control plane did not start; see $AGENTCELL_HOME/server.log"
say "control plane: $(grep '^ready' "$AGENTCELL_HOME/server.log")"

show "$AGENTCELL" up -f examples/
# The same spec again changes nothing.
show "$AGENTCELL" up -f examples/sandbox.yaml
show "$AGENTCELL" ps
# The audit judges every container on the host with the same rules, agentcell's or not.
show "$AGENTCELL" audit --cis
show "$AGENTCELL" inspect monitor-agent
show "$AGENTCELL" inspect sandbox
failed=0
for container in "${CONTAINERS[@]}"; do
  read_back "$container" || failed=1
done
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
exit "$failed"
