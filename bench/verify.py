"""How long proof takes: ``verify`` per cell (goal <= 100 ms) and the ``probe`` battery.

Cells of both examples are started on every runtime the engine offers (a tenant of their
own, removed afterwards). In the same run, each measurement has a raw baseline:

* verify against ``docker inspect`` through the SDK, which is all a configuration checker
  (docker-bench, a policy engine) reads; verify is split into the engine part (inspect, and for
  gVisor the exec that reads the sandbox's view) and the kernel part (procfs, cgroupfs, netns);
* the probe battery against an exec of an empty program, the floor of any in-cell check.

Runs alternate between what is measured and its baseline, so drift on a shared machine hits
both alike. Medians are quoted. Usage: python bench/verify.py [--runs 20] [--probe-runs 3]

``--gvisor-pids`` instead measures what gVisor itself takes of a runsc cell's pids limit (the
numbers behind rule AC-037): host pids of an idle sandbox, after the first exec, and per
process in the cell, read from the cell's pids cgroup.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import secrets
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from agentcell.errors import AdmissionError, Error
from agentcell.policy import AdmittedSpec, admit, preset
from agentcell.policy.rules import GVISOR_MIN_PIDS
from agentcell.runtime.docker.backend import DockerBackend
from agentcell.runtime.docker.proof import DockerProof, ProofSubject
from agentcell.spec.load import SpecDocument, load_paths
from agentcell.spec.model import HostAccess
from agentcell.verify.compare import verify
from agentcell.verify.probe import run_probes
from stats import summary, timed_ms

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "verify.json"
GVISOR_PIDS_RESULTS = REPO / "bench" / "results" / "gvisor-pids.json"
RUNTIMES = ("runc", "crun", "runsc")
EXAMPLES = ("sandbox", "monitor-agent")


def for_runtime(doc: SpecDocument, runtime: str, tenant: str) -> SpecDocument:
    """As the integration tests run the examples (see tests/integration/verify/cells.py)."""
    spec = doc.document.spec
    update: dict[str, object] = {"security": spec.security.model_copy(update={"runtime": runtime})}
    if runtime == "runsc":
        update["resources"] = spec.resources.model_copy(
            update={"pids": max(spec.resources.pids, GVISOR_MIN_PIDS)}
        )
        if spec.host.mounts:
            update["host"] = HostAccess()
            update["env"] = {**spec.env, "MONITOR_HOST_PROC": "/proc"}
            update["exceptions"] = ()
    document = doc.document.model_copy(
        update={
            "metadata": doc.document.metadata.model_copy(update={"tenant": tenant}),
            "spec": spec.model_copy(update=update),
        }
    )
    return dataclasses.replace(doc, document=document)


def admitted(doc: SpecDocument) -> AdmittedSpec:
    try:
        return admit(doc, preset("restricted"))
    except AdmissionError:
        return admit(doc, preset("monitoring-agent"))


@contextlib.contextmanager
def bench_cells(backend: DockerBackend, runtimes: list[str]) -> Iterator[dict[str, str]]:
    """Start every example on every runtime; yield runtime -> tenant; remove them after."""
    examples = {doc.name: doc for doc in load_paths([REPO / "examples"])}
    tenants = {runtime: f"bv{runtime}{secrets.token_hex(2)}" for runtime in runtimes}
    started: list[tuple[str, str]] = []
    try:
        for runtime in runtimes:
            for name in EXAMPLES:
                backend.up(admitted(for_runtime(examples[name], runtime, tenants[runtime])))
                started.append((tenants[runtime], name))
        time.sleep(2)  # let the cells' own start-up finish before timing
        yield tenants
    finally:
        for tenant, name in started:
            with contextlib.suppress(Error):
                backend.down(tenant, name)


def measure_verify(proof: DockerProof, found: ProofSubject, runs: int) -> dict[str, Any]:
    samples: dict[str, list[float]] = {"inspect": [], "engine": [], "kernel": [], "verify": []}
    client = proof.client
    name = found.container.name or ""
    for _ in range(runs):
        samples["inspect"].append(timed_ms(lambda: client.containers.get(name).attrs))
        start = time.perf_counter()
        target = proof.target(found)
        engine_ms = (time.perf_counter() - start) * 1000
        report = verify(found.document, target, spec_source=found.spec_source)
        samples["engine"].append(engine_ms)
        samples["kernel"].append(report.elapsed_ms)
        samples["verify"].append(engine_ms + report.elapsed_ms)
    return {key: summary(values) for key, values in samples.items()}


def measure_probe(proof: DockerProof, found: ProofSubject, runs: int) -> dict[str, Any]:
    host = proof.probe_host(found)
    battery: list[float] = []
    floor: list[float] = []
    statuses: dict[str, int] = {}
    for _ in range(runs):
        floor.append(timed_ms(lambda: host.run_program(b"pass\n", ["-"], timeout_s=60)))
        start = time.perf_counter()
        report = run_probes(
            host, found.document, cell=found.name, container=found.container.name or ""
        )
        battery.append((time.perf_counter() - start) * 1000)
        statuses = {}
        for result in report.results:
            statuses[result.status] = statuses.get(result.status, 0) + 1
    return {"battery": summary(battery), "empty_exec": summary(floor), "statuses": statuses}


def _pids_current(container_id: str) -> int:
    for path in (
        Path(f"/sys/fs/cgroup/pids/docker/{container_id}/pids.current"),
        Path(f"/sys/fs/cgroup/system.slice/docker-{container_id}.scope/pids.current"),
    ):
        if path.exists():
            return int(path.read_text())
    raise Error(f"no pids cgroup found for container {container_id[:12]}")


def measure_gvisor_pids(backend: DockerBackend, settle_s: float = 4.0) -> dict[str, Any]:
    """Host pids a runsc cell uses: idle, after the first exec, and per cell process."""
    client = backend.client
    name = f"agentcell-bench-pids-{secrets.token_hex(3)}"
    container = client.containers.run(
        "agentcell/sandbox:0.1.0",
        ["sleep", "600"],
        name=name,
        detach=True,
        runtime="runsc",
        network_mode="none",
        user="65534:65534",
        cap_drop=["ALL"],
        security_opt=["no-new-privileges:true"],
        pids_limit=2048,
    )
    try:
        cid = container.id or ""
        time.sleep(settle_s)
        idle = _pids_current(cid)
        container.exec_run(["sh", "-c", "sleep 600"], detach=True)
        time.sleep(settle_s)
        first_exec = _pids_current(cid)
        steps = []
        for count in (5, 10, 20):
            before = _pids_current(cid)
            script = f"for i in $(seq {count}); do sleep 600 & done; wait"
            container.exec_run(["sh", "-c", script], detach=True)
            time.sleep(settle_s)
            after = _pids_current(cid)
            # The batch is `count` sleeps plus the shell that started them.
            steps.append({"processes": count + 1, "pids": after - before})
    finally:
        container.remove(force=True)
    per_process = [step["pids"] / step["processes"] for step in steps]
    return {
        "idle": idle,
        "after_first_exec": first_exec,
        "batches": steps,
        "per_process": max(per_process),
    }


def gvisor_pids_main(backend: DockerBackend) -> int:
    if backend.facts.runtime("runsc") is None:
        print("runsc is not registered with this engine", file=sys.stderr)
        return 1
    row = measure_gvisor_pids(backend)
    print(f"{'gVisor (runsc, ptrace) host pids':36} {'pids':>6}")
    print(f"{'idle sandbox':36} {row['idle']:6d}")
    print(f"{'after the first exec (sh + sleep)':36} {row['after_first_exec']:6d}")
    for step in row["batches"]:
        print(f"{'+' + str(step['processes']) + ' processes':36} {step['pids']:+6d}")
    print(f"{'per cell process (max)':36} {row['per_process']:6.1f}")
    print(f"AC-037 requires pids >= {GVISOR_MIN_PIDS} under runsc")
    GVISOR_PIDS_RESULTS.parent.mkdir(parents=True, exist_ok=True)
    GVISOR_PIDS_RESULTS.write_text(json.dumps(row, indent=2))
    print(f"wrote {GVISOR_PIDS_RESULTS}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="verify runs per cell")
    parser.add_argument("--probe-runs", type=int, default=3, help="battery runs per runtime")
    parser.add_argument(
        "--gvisor-pids", action="store_true", help="measure gVisor's share of the pids limit"
    )
    options = parser.parse_args()
    if options.gvisor_pids:
        engine = DockerBackend.connect()
        try:
            return gvisor_pids_main(engine)
        finally:
            engine.close()

    backend = DockerBackend.connect()
    proof = DockerProof(backend)
    runtimes = [name for name in RUNTIMES if backend.facts.runtime(name) is not None]
    verify_rows: dict[str, Any] = {}
    probe_rows: dict[str, Any] = {}
    try:
        with bench_cells(backend, runtimes) as tenants:
            for runtime in runtimes:
                for example in EXAMPLES:
                    (found,) = proof.subjects([f"{tenants[runtime]}/{example}"])
                    verify_rows[f"{example}/{runtime}"] = measure_verify(proof, found, options.runs)
            for runtime in runtimes:
                (found,) = proof.subjects([f"{tenants[runtime]}/sandbox"])
                probe_rows[runtime] = measure_probe(proof, found, options.probe_runs)
    finally:
        backend.close()

    print(f"{'verify, per cell':28} {'verify':>9} {'engine':>9} {'kernel':>9} {'inspect':>9}")
    for key, row in verify_rows.items():
        print(
            f"{key:28} {row['verify']['median_ms']:9.1f} {row['engine']['median_ms']:9.1f} "
            f"{row['kernel']['median_ms']:9.1f} {row['inspect']['median_ms']:9.1f}"
        )
    print("(median ms; verify = engine + kernel; inspect = the raw `docker inspect` baseline)")
    print(f"\n{'probe battery, sandbox':28} {'battery':>9} {'empty exec':>11}  statuses")
    for runtime, row in probe_rows.items():
        print(
            f"{runtime:28} {row['battery']['median_ms']:9.0f} "
            f"{row['empty_exec']['median_ms']:11.0f}  {row['statuses']}"
        )
    goal = {key: row["verify"]["median_ms"] <= 100 for key, row in verify_rows.items()}
    print(f"\nverify <= 100 ms: {goal}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "runs": options.runs,
                "probe_runs": options.probe_runs,
                "verify": verify_rows,
                "probe": probe_rows,
                "verify_goal_100ms": goal,
            },
            indent=2,
        )
    )
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
