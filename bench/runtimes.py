"""runc, crun and gVisor (runsc) side by side: the isolation-versus-cost trade-off, measured here.

For each runtime the engine offers, with the raw host as the baseline in the same run:

1. start latency: ``containers.run`` of ``true`` until it has exited (create, start, run, exit),
   and the create+start call alone;
2. syscall-heavy: 200,000 ``getppid()`` calls in one Python process inside a running cell;
3. file-heavy: create, write (4 KiB), read back and delete 2,000 files, on the cell's tmpfs and
   on its (writable) image filesystem;
4. memory per idle cell: proportional set size (PSS) of everything the cell costs on the host
   (its containerd shim and every process under it: the container's init for runc/crun; the
   sentry, gofer and stubs for gVisor), and the cell's memory cgroup usage.

Workload times are measured inside the process that does the work (so exec start-up is not
counted). Runtimes alternate within each round, so drift on a shared machine hits all alike.
Medians are quoted. Usage: python bench/runtimes.py [--runs 10] [--idle 3]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors
from docker.models.containers import Container

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "runtimes.json"
RUNTIMES = ("runc", "crun", "runsc")
IMAGE = "agentcell/sandbox:0.1.0"
LABEL = "org.agentcell.bench"

SYSCALLS = """
import os, time
start = time.perf_counter()
for _ in range(200_000):
    os.getppid()
print((time.perf_counter() - start) * 1000)
"""
FILES = """
import os, sys, time
base = sys.argv[1]
os.makedirs(base, exist_ok=True)
block = b"x" * 4096
start = time.perf_counter()
for i in range(2000):
    with open(f"{base}/f{i}", "wb") as handle:
        handle.write(block)
for i in range(2000):
    with open(f"{base}/f{i}", "rb") as handle:
        handle.read()
for i in range(2000):
    os.unlink(f"{base}/f{i}")
print((time.perf_counter() - start) * 1000)
"""
IDLE = "import signal; signal.pause()"
# The host baseline uses the same Debian python3 as the images, not whatever PATH finds first.
HOST_PYTHON = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else "python3"


def median(samples: list[float]) -> float:
    return statistics.median(samples) if samples else float("nan")


def run_options(runtime: str, name: str, **extra: Any) -> dict[str, Any]:
    """Settings of a bench cell: agentcell's defaults, but a writable image filesystem."""
    return {
        "image": IMAGE,
        "name": name,
        "runtime": runtime,
        "user": "1001:1001",
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges:true"],
        "network_mode": "none",
        "mem_limit": "512m",
        # gVisor's ptrace platform counts its sentry's threads against the pids limit.
        "pids_limit": 512,
        "tmpfs": {"/tmp": "size=64m"},
        "labels": {LABEL: "runtimes"},
        "detach": True,
        **extra,
    }


def remove(client: docker.DockerClient, name: str) -> None:
    with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
        client.containers.get(name).remove(force=True)


def start_latency(
    client: docker.DockerClient, runtimes: list[str], runs: int
) -> dict[str, dict[str, float]]:
    to_exit: dict[str, list[float]] = {rt: [] for rt in runtimes}
    create_start: dict[str, list[float]] = {rt: [] for rt in runtimes}
    host: list[float] = []
    for _ in range(runs):
        begin = time.perf_counter()
        subprocess.run(["true"], check=True)
        host.append((time.perf_counter() - begin) * 1000)
        for runtime in runtimes:
            name = f"bench-rt-{secrets.token_hex(4)}"
            try:
                begin = time.perf_counter()
                container = client.containers.run(**run_options(runtime, name, command=["true"]))
                started = time.perf_counter()
                container.wait(timeout=60)
                ended = time.perf_counter()
            finally:
                remove(client, name)
            create_start[runtime].append((started - begin) * 1000)
            to_exit[runtime].append((ended - begin) * 1000)
    rows = {
        runtime: {
            "run_to_exit_ms": median(to_exit[runtime]),
            "create_start_ms": median(create_start[runtime]),
        }
        for runtime in runtimes
    }
    rows["host"] = {"run_to_exit_ms": median(host), "create_start_ms": float("nan")}
    return rows


def exec_ms(container: Container, script: str, *args: str, user: str = "") -> float:
    result = container.exec_run(["python3", "-c", script, *args], user=user)
    output = result.output if isinstance(result.output, bytes) else b"".join(result.output)
    if result.exit_code != 0:
        raise RuntimeError(f"{container.name}: {output.decode(errors='replace')}")
    return float(output.decode().strip().splitlines()[-1])


def host_ms(script: str, *args: str) -> float:
    done = subprocess.run(
        [HOST_PYTHON, "-c", script, *args], check=True, capture_output=True, text=True
    )
    return float(done.stdout.strip().splitlines()[-1])


@contextlib.contextmanager
def cells(
    client: docker.DockerClient, runtimes: list[str], count: int
) -> Iterator[dict[str, list[Container]]]:
    made: dict[str, list[Container]] = {rt: [] for rt in runtimes}
    try:
        for _ in range(count):
            for runtime in runtimes:
                name = f"bench-rt-{secrets.token_hex(4)}"
                options = run_options(runtime, name, command=["python3", "-c", IDLE])
                made[runtime].append(client.containers.run(**options))
        time.sleep(3)  # past start-up, into the idle state being measured
        yield made
    finally:
        for containers in made.values():
            for container in containers:
                remove(client, container.name or "")


def workloads(made: dict[str, list[Container]], runs: int) -> dict[str, dict[str, float]]:
    samples: dict[str, dict[str, list[float]]] = {}
    keys = ("syscalls_ms", "files_tmpfs_ms", "files_image_fs_ms")
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(runs):
            host = samples.setdefault("host", {key: [] for key in keys})
            host["syscalls_ms"].append(host_ms(SYSCALLS))
            host["files_tmpfs_ms"].append(host_ms(FILES, "/dev/shm/agentcell-bench-files"))
            host["files_image_fs_ms"].append(host_ms(FILES, f"{tmp}/files"))
            for runtime, containers in made.items():
                cell = containers[0]
                row = samples.setdefault(runtime, {key: [] for key in keys})
                row["syscalls_ms"].append(exec_ms(cell, SYSCALLS))
                row["files_tmpfs_ms"].append(exec_ms(cell, FILES, "/tmp/files"))
                # uid 0 (still without capabilities) owns the image's directories.
                row["files_image_fs_ms"].append(exec_ms(cell, FILES, "/var/bench-files", user="0"))
    with contextlib.suppress(OSError):
        Path("/dev/shm/agentcell-bench-files").rmdir()
    return {
        who: {key: median(values) for key, values in row.items()} for who, row in samples.items()
    }


def pss_kib(pid: int) -> int:
    """Proportional set size of one process, in KiB (0 if it is gone)."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return 0


def children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return found
    for task in tasks:
        with contextlib.suppress(OSError):
            found += [int(child) for child in (task / "children").read_text().split()]
    return found


def tree(pid: int) -> list[int]:
    pending, seen = [pid], []
    while pending:
        current = pending.pop()
        seen.append(current)
        pending += children(current)
    return seen


def parent(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("PPid:"):
            return int(line.split()[1])
    return 0


def idle_memory(made: dict[str, list[Container]]) -> dict[str, dict[str, float]]:
    rows: dict[str, dict[str, float]] = {}
    for runtime, containers in made.items():
        pss, cgroup, processes = [], [], []
        for container in containers:
            container.reload()
            init = int(container.attrs["State"]["Pid"])
            shim = parent(init)
            pids = tree(shim)
            pss.append(sum(pss_kib(pid) for pid in pids) / 1024)
            processes.append(len(pids))
            usage = Path(f"/sys/fs/cgroup/memory/docker/{container.id}/memory.usage_in_bytes")
            with contextlib.suppress(OSError, ValueError):
                cgroup.append(int(usage.read_text()) / 2**20)
        rows[runtime] = {
            "pss_mib": median(pss),
            "cgroup_usage_mib": median(cgroup),
            "host_processes": median([float(count) for count in processes]),
        }
    host = subprocess.Popen([HOST_PYTHON, "-c", IDLE])
    try:
        time.sleep(1)
        rows["host"] = {
            "pss_mib": pss_kib(host.pid) / 1024,
            "cgroup_usage_mib": float("nan"),
            "host_processes": 1.0,
        }
    finally:
        host.kill()
        host.wait()
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="start-latency runs per runtime")
    parser.add_argument("--work-runs", type=int, default=3, help="workload runs per runtime")
    parser.add_argument("--idle", type=int, default=3, help="idle cells per runtime")
    options = parser.parse_args()

    client = docker.DockerClient.from_env(version="1.41")
    try:
        registered = set(client.info().get("Runtimes") or {})
        runtimes = [name for name in RUNTIMES if name in registered]
        latency = start_latency(client, runtimes, options.runs)
        with cells(client, runtimes, options.idle) as made:
            memory = idle_memory(made)
            work = workloads(made, options.work_runs)
    finally:
        client.close()

    columns = [*runtimes, "host"]
    print(f"{'median':34}" + "".join(f"{name:>12}" for name in columns))
    table = [
        ("start: run `true` to exit (ms)", latency, "run_to_exit_ms"),
        ("start: create+start call (ms)", latency, "create_start_ms"),
        ("200k getppid() (ms)", work, "syscalls_ms"),
        ("2000 files on tmpfs (ms)", work, "files_tmpfs_ms"),
        ("2000 files on image fs (ms)", work, "files_image_fs_ms"),
        ("idle cell PSS on host (MiB)", memory, "pss_mib"),
        ("idle cell cgroup usage (MiB)", memory, "cgroup_usage_mib"),
        ("host processes per idle cell", memory, "host_processes"),
    ]
    for label, source, key in table:
        cells_text = "".join(
            f"{source.get(name, {}).get(key, float('nan')):12.1f}" for name in columns
        )
        print(f"{label:34}{cells_text}")
    print("(host: the same work as a plain process on this host, no container)")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "runs": options.runs,
                "work_runs": options.work_runs,
                "idle_cells": options.idle,
                "start": latency,
                "workloads": work,
                "idle_memory": memory,
            },
            indent=2,
        )
    )
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
