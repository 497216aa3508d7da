"""The reference agent's footprint in its cell at 1 report/s: RSS and CPU.

A control plane runs as a subprocess; the agent runs in a default hardened cell launched the way
`agentcell up` does (identity: true, /proc and /sys read-only under /host, network none), and
reports once a second over mTLS through the mounted socket. After a warm-up, the agent process
(the cell's PID 1, seen from the host) is sampled from /proc/<pid>/stat and /proc/<pid>/status;
the cell's cgroup memory (which also counts its tmpfs and page cache) is read too.

Baseline, in the same run and the same image: an idle ``python3`` that sleeps in a loop, i.e.
what the interpreter alone costs in such a cell.
Usage: python bench/agent.py [--seconds 60] [--warmup 10]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import docker
import docker.errors

from agentcell.controlplane.client import AdminClient
from agentcell.controlplane.server import init_state
from agentcell.controlplane.settings import ClientSettings, ControlPlanePaths
from agentcell.launch import prepare_cell
from agentcell.policy import admit, preset
from agentcell.runtime.docker.agent_image import IMAGE_NAME
from agentcell.runtime.docker.backend import DockerBackend
from agentcell.runtime.docker.images import image_reference
from agentcell.spec.load import load_paths

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "agent.json"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
SPEC = """\
apiVersion: agentcell/v1
kind: Agent
metadata:
  name: bench-agent
  tenant: bench
spec:
  image: {image}
  identity: true
  env:
    AGENTCELL_INTERVAL: "1"
  resources:
    cpus: 0.25
    memory: 64m
    pids: 32
    tmpfs:
      - path: /tmp
        size: 16m
  host:
    mounts:
      - source: /proc
        target: /host/proc
      - source: /sys
        target: /host/sys
"""


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS, RssAnon (private heap) and RssFile (mapped files such as libcrypto, shared with
    other processes) from status; Pss (shared pages divided among their users) from smaps."""
    values: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "RssAnon", "RssFile"):
            values[name] = int(rest.split()[0])
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            values["Pss"] = int(line.split()[1])
    return values


def cgroup_memory(container_id: str) -> int | None:
    for path in (
        Path(f"/sys/fs/cgroup/memory/docker/{container_id}/memory.usage_in_bytes"),
        Path(f"/sys/fs/cgroup/system.slice/docker-{container_id}.scope/memory.current"),
    ):
        if path.exists():
            return int(path.read_text())
    return None


def measure(client: docker.DockerClient, name: str, seconds: float) -> dict[str, Any]:
    container = client.containers.get(name)
    pid = int(container.attrs["State"]["Pid"])
    start_cpu, start = cpu_seconds(pid), time.monotonic()
    samples: list[dict[str, int]] = []
    while time.monotonic() - start < seconds:
        samples.append(memory_kib(pid))
        time.sleep(1)
    used = cpu_seconds(pid) - start_cpu
    elapsed = time.monotonic() - start

    def median(key: str) -> float:
        ordered = sorted(sample.get(key, 0) for sample in samples)
        return ordered[len(ordered) // 2] / 1024

    return {
        "cpu_percent_of_core": 100 * used / elapsed,
        "rss_median_mib": median("VmRSS"),
        "rss_max_mib": max(sample.get("VmRSS", 0) for sample in samples) / 1024,
        "rss_anon_median_mib": median("RssAnon"),
        "rss_file_median_mib": median("RssFile"),
        "pss_median_mib": median("Pss"),
        "cgroup_memory_mib": (cgroup_memory(str(container.id)) or 0) / 2**20,
        "seconds": round(elapsed, 1),
    }


def build_image(client: docker.DockerClient) -> str:
    """The reference agent's image, built (or found up to date) as the bootstrap builds it."""
    from agentcell.runtime.docker.images import bootstrap

    bootstrap(client)
    return image_reference(IMAGE_NAME)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--warmup", type=float, default=10)
    options = parser.parse_args()

    backend = DockerBackend.connect()
    client = backend.client
    image = build_image(client)
    home = Path(tempfile.mkdtemp(prefix="ac-bench-agent-", dir="/tmp"))
    server: subprocess.Popen[bytes] | None = None
    baseline_name = "agentcell-bench-idle-python"
    try:
        paths = ControlPlanePaths.from_environ({"AGENTCELL_HOME": str(home)})
        init_state(paths, trust_domain="bench.local")
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        server = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("agentcell")),
                "server",
                "--listen",
                f"127.0.0.1:{port}",
            ],
            env={**os.environ, "AGENTCELL_HOME": str(home)},
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert server.stdout is not None
        select.select([server.stdout], [], [], 30)
        assert server.stdout.readline().startswith(b"ready")
        admin = AdminClient(
            ClientSettings.from_environ(
                {"AGENTCELL_HOME": str(home)}, url=f"https://127.0.0.1:{port}"
            )
        )
        spec = home / "agent.yaml"
        spec.write_text(SPEC.format(image=image))
        (doc,) = load_paths([spec])
        admitted = admit(doc, preset("monitoring-agent"))
        with backend.uid_allocation([admitted]) as uids:
            uid = uids[admitted.doc.document.key]
            identity = prepare_cell(admitted, admin, uid=(uid, uid))
            cell = backend.up(
                admitted, extra_mounts=identity.mounts, extra_env=identity.env, uid=uid
            ).cell
        client.containers.run(
            image,
            ["python3", "-c", "import time\nwhile True: time.sleep(1)"],
            name=baseline_name,
            detach=True,
            user="1001:1001",
            read_only=True,
            network_mode="none",
            cap_drop=["ALL"],
            security_opt=["no-new-privileges:true"],
            mem_limit="64m",
            nano_cpus=250_000_000,
        )
        time.sleep(options.warmup)
        agent = measure(client, cell.container, options.seconds)
        baseline = measure(client, baseline_name, min(options.seconds, 20))
        reports = admin.cells(tenant="bench").cells[0].last_sequence
    finally:
        with contextlib.suppress(docker.errors.NotFound):
            client.containers.get(baseline_name).remove(force=True)
        backend.down("bench", "bench-agent")
        if server is not None:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)
        shutil.rmtree(home, ignore_errors=True)

    print(
        f"{'process':<28} {'CPU % core':>10} {'RSS MiB':>8} {'anon':>6} {'file':>6} "
        f"{'PSS':>6} {'cgroup':>7}"
    )
    for label, row in (
        ("reference agent (1 report/s)", agent),
        ("idle python3 (baseline)", baseline),
    ):
        print(
            f"{label:<28} {row['cpu_percent_of_core']:>10.3f} {row['rss_median_mib']:>8.1f} "
            f"{row['rss_anon_median_mib']:>6.1f} {row['rss_file_median_mib']:>6.1f} "
            f"{row['pss_median_mib']:>6.1f} {row['cgroup_memory_mib']:>7.1f}"
        )
    print(f"reports stored during the run: {reports}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "benchmark": "agent",
                "interval_seconds": 1,
                "goal": {"rss_mb": 20, "rss_mib": 20e6 / 2**20, "cpu_percent_of_core": 0.5},
                "agent": agent,
                "baseline_idle_python": baseline,
                "reports_stored": reports,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {RESULTS.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
