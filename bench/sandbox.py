"""Sandboxes from the host service, side by side with the engine and (when installed)
llm-sandbox, in one run.

Against a host service this benchmark starts itself (``agentcell daemon serve`` on loopback,
its own AGENTCELL_HOME), for a tenant of its own:

- warm acquire: ``Sandbox.create`` of a template whose pool holds ready cells (each one
  never used; the pool refills between samples), client-side time and the service's own
  ``acquire_ms``; p50 and p99 (goal p50 <= 20 ms, p99 <= 60 ms);
- cold create: a template without a pool;
- exec round trip: ``commands.run(["true"])`` against the docker SDK's ``exec_run`` in the
  same cell (goal <= 1.15x);
- close: ``Sandbox.kill`` (goal <= 200 ms), beside the engine's own removal of a running
  cell (``docker rm -f``, timed in the launch comparison below);
- pool refill: cells per second the pool makes ready again after it was drained;
- llm-sandbox (``pip install -e '.[bench]'``), when importable: the same operations through
  its container pool, on the same image (never pulled);
- ``agentcell up -f SPEC`` through the thin path (the service running) against
  ``docker run -d`` with the same flags, and the full command line without the service.

Samples alternate between the things compared, so drift on a shared machine hits both;
medians are what to read. Everything it makes is removed afterwards.

Usage: python bench/sandbox.py [--runs 30] [--launch-runs 10]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import docker
import docker.errors

from agentcell.sdk import Sandbox
from agentcell.sdk._discovery import daemon_dir
from agentcell.sdk._transport import Transport
from stats import summary, timed_ms

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "sandbox.json"
AGENTCELL = str(Path(sys.executable).with_name("agentcell"))
IMAGE = "agentcell/sandbox:0.1.0"
TENANT = "bsbx"
POOL_MIN = 4
TEMPLATE = f"""\
apiVersion: agentcell/v1
kind: SandboxTemplate
metadata: {{{{name: {{name}}, tenant: {TENANT}}}}}
spec:
  cell:
    image: {IMAGE}
    resources:
      cpus: 0.5
      memory: 256m
      pids: 128
      tmpfs: [{{{{path: /tmp, size: 64m}}}}, {{{{path: /workspace, size: 64m}}}}]
    network: none
  pool: {{{{min: {{pool_min}}, max: 16}}}}
  ttl: {{{{default: 300s, max: 600s}}}}
"""


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def row(samples: list[float]) -> dict[str, float]:
    result = summary(samples)
    result["p99_ms"] = percentile(samples, 0.99)
    return result


# -- the service -------------------------------------------------------------------------


class Service:
    """``agentcell daemon serve`` as a child process with a home of its own."""

    def __init__(self, home: Path, templates: Path) -> None:
        self.home = home
        self.env = {**os.environ, "AGENTCELL_HOME": str(home)}
        self.env.pop("AGENTCELL_DAEMON_URL", None)
        self.env.pop("AGENTCELL_TOKEN", None)
        self.log = home / "daemon.log"
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    AGENTCELL,
                    "daemon",
                    "serve",
                    "--listen",
                    f"127.0.0.1:{port}",
                    "--templates",
                    str(templates),
                    "--no-network-services",
                ],
                env=self.env,
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
            )
        record = daemon_dir(self.env) / "daemon.json"
        deadline = time.monotonic() + 60
        while not record.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the service did not start:\n{self.log.read_text()}")
            time.sleep(0.1)
        self.record = json.loads(record.read_text())
        self.token = self._tenant_token()

    def _tenant_token(self) -> str:
        made = subprocess.run(
            [AGENTCELL, "daemon", "token", "create", TENANT],
            env=self.env,
            capture_output=True,
            text=True,
            check=True,
        )
        return made.stdout.strip().splitlines()[-1]

    def sdk(self) -> dict[str, Any]:
        return {"url": self.record["url"], "ca": self.record["ca"], "token": self.token}

    def ready(self, template: str) -> int:
        """Warm cells waiting in ``template``'s pool now."""
        from agentcell.sdk import discover

        transport = Transport(discover(**self.sdk()))
        try:
            document = transport.request("GET", "/v1/templates").json()
        finally:
            transport.close()
        assert isinstance(document, dict)
        for item in document["items"]:
            if item["name"] == template:
                return int(item["ready"])
        raise RuntimeError(f"the service has no template {template}")

    def wait_ready(self, template: str, count: int, timeout_s: float = 120) -> float:
        """Seconds until ``count`` cells are ready."""
        started = time.monotonic()
        while self.ready(template) < count:
            if time.monotonic() - started > timeout_s:
                raise RuntimeError(f"the pool of {template} did not refill to {count}")
            time.sleep(0.02)
        return time.monotonic() - started

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def remove_tenant_cells(client: docker.DockerClient, tenant: str) -> None:
    for container in client.containers.list(
        all=True, filters={"label": f"org.agentcell.tenant={tenant}"}
    ):
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True)


# -- measurements ------------------------------------------------------------------------


def warm_and_close(service: Service, runs: int, made: list[str]) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {"warm": [], "warm_server": [], "close": [], "not_warm": []}
    for _ in range(runs):
        service.wait_ready("warm", 1)
        started = time.perf_counter()
        sandbox = Sandbox.create("warm", **service.sdk())
        elapsed = (time.perf_counter() - started) * 1000
        made.append(sandbox.id)
        info = sandbox.info
        if info.warm:
            samples["warm"].append(elapsed)
            samples["warm_server"].append(info.acquire_ms)
        else:
            samples["not_warm"].append(elapsed)
        samples["close"].append(timed_ms(sandbox.kill))
    return samples


def cold(service: Service, runs: int, made: list[str]) -> list[float]:
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        sandbox = Sandbox.create("cold", **service.sdk())
        samples.append((time.perf_counter() - started) * 1000)
        made.append(sandbox.id)
        sandbox.kill()
    return samples


def exec_round_trip(
    service: Service, client: docker.DockerClient, runs: int, made: list[str]
) -> dict[str, list[float]]:
    """``true`` through the SDK over TLS and over the Unix socket, and through the docker
    SDK in the same cell; and a plain ``GET`` of the sandbox (the HTTP round trip alone)."""
    samples: dict[str, list[float]] = {
        key: [] for key in ("tls", "unix", "docker", "get_tls", "get_unix")
    }
    with Sandbox.create("warm", **service.sdk()) as over_tls:
        made.append(over_tls.id)
        local = Sandbox.connect(
            over_tls.id, url=f"unix://{service.record['socket']}", token=service.token
        )
        container = client.containers.get(over_tls.info.cell)
        over_tls.commands.run(["true"])  # the first exec of a cell pays for more than one
        container.exec_run(["true"])
        try:
            for _ in range(runs):
                samples["tls"].append(timed_ms(partial(over_tls.commands.run, ["true"])))
                samples["unix"].append(timed_ms(partial(local.commands.run, ["true"])))
                samples["docker"].append(timed_ms(partial(container.exec_run, ["true"])))
                samples["get_tls"].append(timed_ms(lambda: over_tls.info))
                samples["get_unix"].append(timed_ms(lambda: local.info))
        finally:
            local.close()
    return samples


def refill(service: Service, made: list[str]) -> dict[str, float]:
    service.wait_ready("warm", POOL_MIN)
    taken = [Sandbox.create("warm", **service.sdk()) for _ in range(POOL_MIN)]
    started = time.monotonic()
    for sandbox in taken:
        made.append(sandbox.id)
        sandbox.kill()
    service.wait_ready("warm", POOL_MIN)
    seconds = time.monotonic() - started
    return {"cells": POOL_MIN, "seconds": seconds, "cells_per_s": POOL_MIN / seconds}


def llm_sandbox_ops(runs: int) -> dict[str, Any] | None:
    """The same operations through llm-sandbox's container pool (its sessions acquire a
    pooled container, run a command, and give the container back to the pool, where the next
    session reuses it), or None when llm-sandbox is not installed."""
    try:
        from llm_sandbox.const import SandboxBackend
        from llm_sandbox.pool import (
            PoolConfig,
            PooledSandboxSession,
            create_pool_manager,
        )
    except ImportError:
        return None
    pool = create_pool_manager(
        backend=SandboxBackend.DOCKER,
        config=PoolConfig(min_pool_size=POOL_MIN, max_pool_size=POOL_MIN * 2),
        lang="python",
        image=IMAGE,  # present locally: llm-sandbox pulls only a missing image
        skip_environment_setup=True,
    )
    samples: dict[str, list[float]] = {"acquire": [], "exec": [], "release": []}
    try:
        deadline = time.monotonic() + 120
        while pool.get_stats().get("idle", 0) < POOL_MIN and time.monotonic() < deadline:
            time.sleep(0.05)
        for _ in range(runs):
            session = PooledSandboxSession(pool_manager=pool)
            samples["acquire"].append(timed_ms(session.open))
            samples["exec"].append(timed_ms(partial(session.execute_command, "true")))
            samples["release"].append(timed_ms(session.close))
    finally:
        pool.close()
    return {key: row(values) for key, values in samples.items()} | {
        "release_note": "release returns the used container to the pool (not destroyed)"
    }


def launch(home: Path, runs: int, client: docker.DockerClient) -> dict[str, list[float]]:
    """``agentcell up`` through the service vs ``docker run -d`` vs the full command line."""
    from agentcell.policy import admit, preset
    from agentcell.runtime.docker.translate import settings_for
    from agentcell.spec.load import load_paths

    text = (
        (REPO / "examples" / "sandbox.yaml")
        .read_text()
        .replace("tenant: demo", f"tenant: {TENANT}")
    )
    spec = home / "launch.yaml"
    spec.write_text(text)
    (doc,) = load_paths([spec])
    settings = settings_for(admit(doc, preset("restricted")))
    argv = settings.docker_run_argv()
    argv[0] = shutil.which("docker") or "docker"
    env = {**os.environ, "AGENTCELL_HOME": str(home)}
    env.pop("AGENTCELL_DAEMON_URL", None)
    full_env = {**env, "AGENTCELL_NO_DAEMON": "1"}

    def remove() -> None:
        with contextlib.suppress(docker.errors.NotFound):
            client.containers.get(settings.name).remove(force=True)

    def up(environment: dict[str, str]) -> Callable[[], object]:
        return lambda: subprocess.run(
            [AGENTCELL, "up", "-f", str(spec)], env=environment, check=True, capture_output=True
        )

    samples: dict[str, list[float]] = {"thin": [], "docker": [], "full": [], "docker_rm": []}
    remove()
    try:
        for _ in range(runs):
            samples["thin"].append(timed_ms(up(env)))
            remove()
            samples["docker"].append(
                timed_ms(lambda: subprocess.run(argv, check=True, capture_output=True))
            )
            # The engine's own removal of a running cell: the floor under Sandbox.kill.
            samples["docker_rm"].append(timed_ms(remove))
            samples["full"].append(timed_ms(up(full_env)))
            remove()
    finally:
        remove()
    return samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--launch-runs", type=int, default=10)
    options = parser.parse_args()
    client = docker.DockerClient.from_env()
    client.images.get(IMAGE)  # present, or fail now: nothing is pulled
    home = Path(tempfile.mkdtemp(prefix="ac-bs-", dir="/tmp"))
    templates = home / "templates"
    templates.mkdir()
    (templates / "warm.yaml").write_text(TEMPLATE.format(name="warm", pool_min=POOL_MIN))
    (templates / "cold.yaml").write_text(TEMPLATE.format(name="cold", pool_min=0))
    made: list[str] = []
    service: Service | None = None
    results: dict[str, Any] = {}
    try:
        service = Service(home, templates)
        service.wait_ready("warm", POOL_MIN, timeout_s=300)
        acquire = warm_and_close(service, options.runs, made)
        results["warm_acquire"] = row(acquire["warm"])
        results["warm_acquire_server"] = row(acquire["warm_server"])
        results["close"] = row(acquire["close"])
        results["not_warm_samples"] = len(acquire["not_warm"])
        results["cold_create"] = row(cold(service, max(3, options.runs // 5), made))
        round_trips = exec_round_trip(service, client, options.runs, made)
        results["exec_sdk"] = row(round_trips["tls"])
        results["exec_sdk_unix"] = row(round_trips["unix"])
        results["exec_docker_exec_run"] = row(round_trips["docker"])
        results["http_get_tls"] = row(round_trips["get_tls"])
        results["http_get_unix"] = row(round_trips["get_unix"])
        results["pool_refill"] = refill(service, made)
        launches = launch(home, options.launch_runs, client)
        results["up_thin_path"] = row(launches["thin"])
        results["docker_run_d"] = row(launches["docker"])
        results["up_full_cli"] = row(launches["full"])
        results["docker_rm_f"] = row(launches["docker_rm"])
        results["llm_sandbox"] = llm_sandbox_ops(options.runs)
    finally:
        if service is not None:
            for sandbox_id in made:
                with contextlib.suppress(Exception):
                    Sandbox.connect(sandbox_id, **service.sdk()).kill()
            service.stop()
        remove_tenant_cells(client, TENANT)
        with contextlib.suppress(Exception):
            from agentcell.runtime.docker.backend import DockerBackend

            backend = DockerBackend.connect()
            backend.tenant_cgroup(TENANT).remove()
            backend.close()
        shutil.rmtree(home, ignore_errors=True)
        client.close()
    report(results, options)
    return 0


def report(results: dict[str, Any], options: argparse.Namespace) -> None:
    def ratio(a: str, b: str) -> float:
        return float(results[a]["median_ms"] / results[b]["median_ms"])

    ratios = {
        "exec_vs_exec_run": ratio("exec_sdk", "exec_docker_exec_run"),
        "exec_unix_vs_exec_run": ratio("exec_sdk_unix", "exec_docker_exec_run"),
        "up_thin_vs_docker_run": ratio("up_thin_path", "docker_run_d"),
        "up_full_vs_docker_run": ratio("up_full_cli", "docker_run_d"),
        "close_vs_docker_rm_f": ratio("close", "docker_rm_f"),
    }
    labels = {
        "warm_acquire": "Sandbox.create, warm (client)",
        "warm_acquire_server": "  the service's acquire_ms",
        "cold_create": "Sandbox.create, cold (no pool)",
        "close": "Sandbox.kill",
        "docker_rm_f": "  docker rm -f of a running cell (same flags)",
        "exec_sdk": "commands.run(['true']), TLS",
        "exec_sdk_unix": "commands.run(['true']), Unix socket",
        "exec_docker_exec_run": "docker SDK exec_run(['true']), same cell",
        "http_get_tls": "GET /v1/sandboxes/ID (HTTP alone), TLS",
        "http_get_unix": "GET /v1/sandboxes/ID (HTTP alone), socket",
        "up_thin_path": "agentcell up -f SPEC (thin path)",
        "docker_run_d": "docker run -d (same flags)",
        "up_full_cli": "agentcell up -f SPEC (no service)",
    }
    rows = {label: results[key] for key, label in labels.items()}
    if results["llm_sandbox"] is not None:
        for key in ("acquire", "exec", "release"):
            rows[f"llm-sandbox pool: {key}"] = results["llm_sandbox"][key]
    print(f"{'what':46} {'median ms':>10} {'p10':>8} {'p90':>8} {'p99':>8}")
    for label, r in rows.items():
        print(
            f"{label:46} {r['median_ms']:10.1f} {r['p10_ms']:8.1f} {r['p90_ms']:8.1f} "
            f"{r['p99_ms']:8.1f}"
        )
    refill_row = results["pool_refill"]
    print(
        f"pool refill: {refill_row['cells']} cells ready again in {refill_row['seconds']:.2f} s "
        f"= {refill_row['cells_per_s']:.2f} cells/s"
    )
    if results["not_warm_samples"]:
        print(f"note: {results['not_warm_samples']} acquires found the pool empty (not counted)")
    warm = results["warm_acquire"]
    print(
        f"warm acquire p50 {warm['median_ms']:.1f} ms (goal <= 20), "
        f"p99 {warm['p99_ms']:.1f} ms (goal <= 60)"
    )
    print(
        f"close p50 {results['close']['median_ms']:.1f} ms (goal <= 200); "
        f"{ratios['close_vs_docker_rm_f']:.2f}x the engine's own docker rm -f"
    )
    print(f"ratio exec vs exec_run, TLS  (goal <= 1.15): {ratios['exec_vs_exec_run']:.3f}")
    print(f"ratio exec vs exec_run, unix (goal <= 1.15): {ratios['exec_unix_vs_exec_run']:.3f}")
    print(f"ratio up thin vs docker run  (goal <= 1.50): {ratios['up_thin_vs_docker_run']:.3f}")
    print(f"ratio up without the service vs docker run:  {ratios['up_full_vs_docker_run']:.3f}")
    if results["llm_sandbox"] is None:
        print("llm-sandbox: not installed (pip install -e '.[bench]'), not measured")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "runs": options.runs,
                "launch_runs": options.launch_runs,
                "bytecode_cache": not sys.flags.dont_write_bytecode,
                "results": results,
                "ratios": ratios,
            },
            indent=2,
        )
    )
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    sys.exit(main())
