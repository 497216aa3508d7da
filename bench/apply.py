"""How long `agentcell apply` takes to converge a directory, against a loop of `agentcell up`.

In one run, against a control plane this benchmark starts on loopback (its own
AGENTCELL_HOME): apply a directory of TENANTS tenants and AGENTS agents from empty; apply it
again (an empty plan); then remove the cells and make the same cells with one `agentcell up -f
FILE` per agent, as a script would. Each measurement is repeated --runs times (alternating),
and every cell, tenant cgroup and file it made is removed afterwards.

Usage: python bench/apply.py [--tenants 10] [--agents 50] [--runs 1]
"""

from __future__ import annotations

import argparse
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from agentcell.runtime.docker.backend import DockerBackend
from stats import summary, timed_ms

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "apply.json"
AGENTCELL = str(Path(sys.executable).with_name("agentcell"))
PREFIX = "bap"
TENANT = (
    "apiVersion: agentcell/v1\nkind: Tenant\nmetadata: {{name: {name}}}\n"
    "spec:\n  quota: {{cpus: 16, memory: 8g, pids: 4096, cells: 20}}\n"
)
AGENT = (
    "apiVersion: agentcell/v1\nkind: Agent\nmetadata: {{name: a{index}, tenant: {tenant}}}\n"
    "spec:\n  image: agentcell/sandbox:0.1.0\n  healthcheck: {{command: [python3, -V]}}\n"
    "  resources: {{cpus: 0.1, memory: 64m, pids: 32}}\n"
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def run(env: dict[str, str], *argv: str) -> None:
    subprocess.run([AGENTCELL, *argv], check=True, capture_output=True, env=env, timeout=900)


def write_directory(root: Path, tenants: int, agents: int) -> list[Path]:
    """The Tenant files and one file per agent (the up loop takes them one by one)."""
    root.mkdir()
    agent_files = []
    for index in range(tenants):
        (root / f"t{index}.yaml").write_text(TENANT.format(name=f"{PREFIX}{index}"))
    for index in range(agents):
        path = root / f"a{index}.yaml"
        path.write_text(AGENT.format(index=index, tenant=f"{PREFIX}{index % tenants}"))
        agent_files.append(path)
    return agent_files


def remove_cells(backend: DockerBackend, tenants: int) -> None:
    for cell in backend.cells():
        if cell.tenant.startswith(PREFIX):
            backend.down(cell.tenant, cell.agent, timeout_s=1)
    for index in range(tenants):
        backend.tenant_cgroup(f"{PREFIX}{index}").remove()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", type=int, default=10)
    parser.add_argument("--agents", type=int, default=50)
    parser.add_argument("--runs", type=int, default=1)
    options = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="ac-bench-", dir="/tmp"))
    env = {**os.environ, "AGENTCELL_HOME": str(home)}
    env.pop("AGENTCELL_CONTROLPLANE_URL", None)
    backend = DockerBackend.connect()
    server: subprocess.Popen[bytes] | None = None
    samples: dict[str, list[float]] = {"apply": [], "apply_again": [], "up_loop": []}
    try:
        run(env, "ca", "init")
        server = subprocess.Popen(
            [AGENTCELL, "server", "--listen", f"127.0.0.1:{free_port()}"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
        )
        assert server.stdout is not None
        select.select([server.stdout], [], [], 30)
        assert server.stdout.readline().startswith(b"ready")
        root = home / "specs"
        agent_files = write_directory(root, options.tenants, options.agents)
        remove_cells(backend, options.tenants)
        for _ in range(options.runs):
            samples["apply"].append(timed_ms(lambda: run(env, "apply", "-f", str(root))))
            samples["apply_again"].append(timed_ms(lambda: run(env, "apply", "-f", str(root))))
            remove_cells(backend, options.tenants)

            def up_loop() -> None:
                for path in agent_files:
                    run(env, "up", "-f", str(path))

            samples["up_loop"].append(timed_ms(up_loop))
            remove_cells(backend, options.tenants)
    finally:
        remove_cells(backend, options.tenants)
        backend.close()
        if server is not None:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)
        shutil.rmtree(home, ignore_errors=True)

    rows = {key: summary(values) for key, values in samples.items()}
    ratio = rows["apply"]["median_ms"] / rows["up_loop"]["median_ms"]
    label = f"{options.tenants} tenants, {options.agents} agents"
    print(f"{'what (' + label + ')':58} {'median ms':>10} {'p10':>9} {'p90':>9}")
    names = {
        "apply": "agentcell apply -f DIR, from empty",
        "apply_again": "agentcell apply -f DIR again (empty plan)",
        "up_loop": f"{options.agents} x agentcell up -f FILE (the same cells)",
    }
    for key, name in names.items():
        row = rows[key]
        print(f"{name:58} {row['median_ms']:10.0f} {row['p10_ms']:9.0f} {row['p90_ms']:9.0f}")
    print(f"ratio apply / up loop: {ratio:.3f}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "tenants": options.tenants,
                "agents": options.agents,
                "results": rows,
                "ratio_apply_to_up_loop": ratio,
                "raw_ms": samples,
            },
            indent=2,
        )
    )
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
