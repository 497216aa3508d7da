#!/usr/bin/env bash
# Install and start everything agentcell's commands and tests need on a Debian 12 host:
# Docker Engine with the crun and runsc runtimes, mmdebstrap for offline images, a loopback-only
# OCI registry, and the project's virtualenv. Safe to run again: each step checks before acting.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
AGENTCELL_STEP=setup

# nftables and iproute2 hold and read tenant networks' host rules and routes; nsenter (util-linux)
# reaches a cell's network namespace.
# golang-github-docker-docker-dev ships the engine's default seccomp profile, from which
# scripts/gen-seccomp-strict.py derives the strict one; a unit test checks they still agree.
PACKAGES=(docker.io crun runsc mmdebstrap docker-registry curl golang-github-docker-docker-dev nftables iproute2 util-linux)
DAEMON_JSON=/etc/docker/daemon.json
# runsc's own network stack fails on these hosts and its KVM platform hangs: ptrace, no network.
RUNTIMES_JSON='{
  "crun": {"path": "/usr/bin/crun"},
  "runsc": {"path": "/usr/bin/runsc", "runtimeArgs": ["--platform=ptrace", "--network=none", "--oci-seccomp"]}
}'
DOCKERD_LOG=/var/log/agentcell-dockerd.log
REGISTRY_ADDR=127.0.0.1:5000
REGISTRY_ROOT=/var/lib/agentcell/registry
REGISTRY_CONFIG=/etc/agentcell/registry.yml
REGISTRY_LOG=/var/log/agentcell-registry.log
APT_LOG=/var/log/agentcell-apt.log
STAMP=.venv/.agentcell-stamp
PIP_LOG=.venv/.agentcell-pip.log

need_root() {
  ((EUID == 0)) || die "$1 needs root; run scripts/setup.sh as root"
}

package_installed() {
  [[ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" == installed ]]
}

venv_needed() {
  [[ ! -x .venv/bin/python ]] || ! .venv/bin/python -c '' 2>/dev/null
}

install_packages() {
  local missing=() package
  for package in "${PACKAGES[@]}"; do
    package_installed "$package" || missing+=("$package")
  done
  if ! command -v python3 >/dev/null; then
    missing+=(python3 python3-venv)
  elif venv_needed && ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
    # Debian splits ensurepip out of python3, so `python3 -m venv` fails without python3-venv.
    missing+=(python3-venv)
  fi
  if ((${#missing[@]} == 0)); then
    say "packages: all present"
    return
  fi
  need_root "installing ${missing[*]}"
  say "packages: installing ${missing[*]} (log: $APT_LOG)"
  export DEBIAN_FRONTEND=noninteractive
  if ! { apt-get update -q && apt-get install -y -q "${missing[@]}"; } >>"$APT_LOG" 2>&1; then
    tail -n 20 "$APT_LOG" >&2
    die "apt-get failed; see $APT_LOG"
  fi
}

# crun refuses to run on a hybrid cgroup host when a controller is still attached to the v2
# hierarchy (hugetlb on this kernel). Mounting each such controller as v1 moves it over.
fix_cgroup_hybrid() {
  local unified=/sys/fs/cgroup/unified/cgroup.controllers controllers=() controller target
  if [[ ! -f $unified ]] || ! awk '$3 == "cgroup" { found = 1 } END { exit !found }' /proc/mounts; then
    say "cgroups: not a hybrid v1/v2 host, nothing to fix"
    return
  fi
  read -r -a controllers <"$unified" || true
  if ((${#controllers[@]} == 0)); then
    say "cgroups: hybrid host, every controller is on v1"
    return
  fi
  need_root "mounting cgroup controllers"
  for controller in "${controllers[@]}"; do
    target=/sys/fs/cgroup/$controller
    if mountpoint -q "$target"; then
      continue
    fi
    if mkdir -p "$target" && mount -t cgroup -o "$controller" cgroup "$target"; then
      say "cgroups: mounted the $controller controller as v1 at $target"
    else
      warn "cannot mount the $controller controller as v1; crun may refuse to start containers"
    fi
  done
}

# Merge the runtimes into daemon.json, keeping every other key. Prints "changed" or "unchanged".
merge_daemon_json() {
  python3 - "$DAEMON_JSON" "$RUNTIMES_JSON" <<'PY'
import json
import os
import sys

path, wanted = sys.argv[1], json.loads(sys.argv[2])
try:
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
except FileNotFoundError:
    text = ""
try:
    config = json.loads(text) if text.strip() else {}
except json.JSONDecodeError as exc:
    sys.exit(f"{path} is not valid JSON ({exc}); fix it by hand, then rerun scripts/setup.sh")
if not isinstance(config, dict) or not isinstance(config.get("runtimes", {}), dict):
    sys.exit(f"{path}: expected a JSON object with an object under 'runtimes'")
runtimes = config.setdefault("runtimes", {})
changed = False
for name, spec in wanted.items():
    if runtimes.get(name) != spec:
        runtimes[name] = spec
        changed = True
if changed:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    partial = path + ".agentcell-partial"
    with open(partial, "w", encoding="utf-8") as handle:
        json.dump(config, handle, indent=2)
        handle.write("\n")
    os.replace(partial, path)
print("changed" if changed else "unchanged")
PY
}

engine_up() {
  [[ -S /var/run/docker.sock ]] && docker info --format '{{.ServerVersion}}' >/dev/null 2>&1
}

# Whether the running engine has every runtime of RUNTIMES_JSON, with the same path and args.
engine_has_runtimes() {
  local runtimes
  runtimes="$(docker info --format '{{json .Runtimes}}' 2>/dev/null)" || return 1
  python3 - "$RUNTIMES_JSON" "$runtimes" <<'PY'
import json
import sys

wanted, have = json.loads(sys.argv[1]), json.loads(sys.argv[2])
for name, spec in wanted.items():
    got = have.get(name) or {}
    if got.get("path") != spec["path"] or got.get("runtimeArgs", []) != spec.get("runtimeArgs", []):
        sys.exit(1)
PY
}

with_systemd() {
  [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null
}

start_dockerd() {
  need_root "starting dockerd"
  if with_systemd; then
    say "engine: starting docker.service"
    systemctl start docker
  else
    say "engine: starting dockerd (log: $DOCKERD_LOG)"
    # setsid: the daemon must outlive this script and the terminal or CI step that ran it.
    setsid nohup /usr/sbin/dockerd >>"$DOCKERD_LOG" 2>&1 </dev/null &
  fi
  if ! wait_until 60 engine_up; then
    tail -n 20 "$DOCKERD_LOG" >&2 || true
    die "dockerd did not answer within 60 s; see $DOCKERD_LOG"
  fi
}

# Docker 20.10 does not reliably pick up new runtimes on SIGHUP, so a restart is the only sure way.
restart_dockerd() {
  need_root "restarting dockerd"
  if with_systemd; then
    say "engine: restarting docker.service to load the runtimes"
    systemctl restart docker
  else
    local pid
    pid="$(cat /var/run/docker.pid 2>/dev/null)" || die "dockerd runs without /var/run/docker.pid; restart it by hand"
    say "engine: restarting dockerd (pid $pid) to load the runtimes"
    kill "$pid"
    wait_until 60 bash -c "! kill -0 $pid 2>/dev/null" || die "dockerd (pid $pid) did not stop within 60 s"
  fi
  if ! engine_up; then
    start_dockerd
  fi
}

ensure_engine() {
  local daemon_json
  daemon_json="$(merge_daemon_json)" || die "cannot update $DAEMON_JSON"
  say "engine: $DAEMON_JSON $daemon_json"
  if ! engine_up; then
    start_dockerd
  fi
  if ! engine_has_runtimes; then
    restart_dockerd
    engine_has_runtimes || die "dockerd runs but lacks the runtimes of $DAEMON_JSON; see $DOCKERD_LOG"
  fi
  local runtimes
  runtimes="$(docker info --format '{{range $name, $_ := .Runtimes}}{{$name}} {{end}}')"
  say "engine: up, runtimes: ${runtimes% }"
}

registry_up() {
  curl -fsS --noproxy '*' --max-time 2 -o /dev/null "http://$REGISTRY_ADDR/v2/" 2>/dev/null
}

write_registry_config() {
  local config
  # Plain HTTP is acceptable only because the listener is loopback; Docker trusts 127.0.0.0/8.
  config="version: 0.1
log:
  fields:
    service: agentcell-registry
storage:
  filesystem:
    rootdirectory: $REGISTRY_ROOT
  delete:
    enabled: true
http:
  addr: $REGISTRY_ADDR
  headers:
    X-Content-Type-Options: [nosniff]
health:
  storagedriver:
    enabled: true
    interval: 10s
    threshold: 3"
  if [[ "$(cat "$REGISTRY_CONFIG" 2>/dev/null)" != "$config" ]]; then
    mkdir -p "$(dirname "$REGISTRY_CONFIG")"
    printf '%s\n' "$config" >"$REGISTRY_CONFIG"
  fi
}

ensure_registry() {
  if registry_up; then
    say "registry: answering on $REGISTRY_ADDR"
    return
  fi
  need_root "starting the registry"
  write_registry_config
  mkdir -p "$REGISTRY_ROOT"
  say "registry: starting on $REGISTRY_ADDR (log: $REGISTRY_LOG)"
  setsid nohup /usr/bin/docker-registry serve "$REGISTRY_CONFIG" >>"$REGISTRY_LOG" 2>&1 </dev/null &
  local pid=$!
  registry_starting() { registry_up || ! kill -0 "$pid" 2>/dev/null; }
  if ! wait_until 30 registry_starting || ! registry_up; then
    tail -n 20 "$REGISTRY_LOG" >&2 || true
    die "the registry did not answer on $REGISTRY_ADDR; see $REGISTRY_LOG"
  fi
}

ensure_venv() {
  if venv_needed; then
    say "python: creating .venv"
    python3 -m venv --clear .venv
  fi
  if [[ -f $STAMP && $STAMP -nt pyproject.toml ]]; then
    say "python: .venv up to date"
    return
  fi
  say "python: installing agentcell into .venv (log: $PIP_LOG)"
  if ! .venv/bin/pip install -q -e '.[dev]' >"$PIP_LOG" 2>&1; then
    tail -n 20 "$PIP_LOG" >&2
    die "pip install failed; see $PIP_LOG"
  fi
  touch "$STAMP"
}

install_packages
fix_cgroup_hybrid
ensure_engine
ensure_registry
ensure_venv
say "done"
