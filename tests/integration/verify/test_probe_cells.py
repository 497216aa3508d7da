"""``probe`` against the real engine: every attempt on a default cell is stopped, on runc,
crun and runsc, and the same attempts on a deliberately weak container are reported as NOT
BLOCKED, so the probes can fail."""

from __future__ import annotations

import secrets

import docker
import pytest

from agentcell.runtime.docker.backend import DockerBackend
from agentcell.runtime.docker.proof import DockerProof
from agentcell.spec.load import load_paths
from agentcell.verify.probe import BATTERY, ProbeReport, run_probes
from tests.conftest import EXAMPLES, TEST_LABEL, Created
from tests.integration.verify.cells import (
    RUNTIMES,
    Cells,
    admitted,
    for_runtime,
    require,
    subject,
)

pytestmark = pytest.mark.integration

# Absent from this kernel (CONFIG_MAGIC_SYSRQ, CONFIG_PROC_KCORE off): nothing to attack.
KERNEL_LACKS = {"sysrq-trigger", "kcore"}


def probe(proof: DockerProof, cells: Cells, runtime: str, example: str) -> ProbeReport:
    found = subject(proof, cells, runtime, example)
    return run_probes(
        proof.probe_host(found),
        found.document,
        cell=found.name,
        container=found.container.name or found.name,
    )


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_every_attempt_on_a_default_cell_is_stopped(
    proof: DockerProof, cells: Cells, backend: DockerBackend, runtime: str
) -> None:
    report = probe(proof, cells, runtime, "sandbox")
    results = report.by_id()
    assert report.ok, [(r.id, r.mechanism, r.detail) for r in report.failures]
    assert set(BATTERY) <= set(results)
    skipped = {r.id for r in report.results if r.status == "skipped"}
    # The only probes that may be skipped: the ones this kernel or runtime cannot host, and
    # write-host-mounts, since the sandbox mounts nothing from the host.
    allowed_skips = KERNEL_LACKS | {"write-host-mounts"}
    if runtime == "runsc":
        allowed_skips |= {"fork-bomb", "memory-bomb", "proc-sys"}
    assert skipped <= allowed_skips, {r.id: r.mechanism for r in report.results if r.id in skipped}
    if runtime == "runsc":
        assert {r.status for r in report.results} <= {"blocked", "contained", "skipped"}
    else:
        assert "contained" not in {r.status for r in report.results}
        for probe_id in ("io_uring", "ptrace", "keyctl", "bpf", "unshare-userns", "mount"):
            assert "seccomp" in results[probe_id].mechanism, results[probe_id]
        assert results["memory-bomb"].status == "blocked"
        assert "survived" in results["memory-bomb"].mechanism
        assert "pids limit" in results["fork-bomb"].mechanism
    assert results["tmpfs-fill"].status == "blocked"
    assert results["canary"].status == "blocked"
    assert any("reachable from the host" in note for note in report.notes)
    # The cell is still there, running, after the whole battery.
    assert backend.find(cells.ref(runtime, "sandbox")).state == "running"


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_the_monitor_agent_cannot_write_the_host(
    proof: DockerProof, cells: Cells, runtime: str
) -> None:
    report = probe(proof, cells, runtime, "monitor-agent")
    assert report.ok, [(r.id, r.mechanism, r.detail) for r in report.failures]


def test_on_runsc_the_limits_end_the_sandbox_not_the_host(
    backend: DockerBackend, proof: DockerProof, cells: Cells
) -> None:
    require(cells, "runsc")
    (doc,) = load_paths([EXAMPLES / "sandbox.yaml"])
    tenant = "pb" + secrets.token_hex(3)
    backend.up(admitted(for_runtime(doc, "runsc", tenant)))
    try:
        (found,) = proof.subjects([f"{tenant}/sandbox"])
        report = run_probes(
            proof.probe_host(found),
            found.document,
            cell=found.name,
            container=found.container.name or "?",
            only=["fork-bomb", "memory-bomb"],
        )
    finally:
        backend.down(tenant, "sandbox")
    results = report.by_id()
    assert results["fork-bomb"].status == "blocked", results["fork-bomb"]
    assert results["memory-bomb"].status == "blocked", results["memory-bomb"]
    assert "whole cell" in results["memory-bomb"].mechanism
    # The limits held, but by ending the cell: the run is a failure and says so.
    assert not report.ok
    assert report.cell_died is not None


@pytest.mark.parametrize("runtime", ["runc", "crun"])
def test_a_weak_container_is_reported_not_blocked(
    backend: DockerBackend,
    proof: DockerProof,
    docker_client: docker.DockerClient,
    created: Created,
    runtime: str,
) -> None:
    if backend.facts.runtime(runtime) is None:
        pytest.skip(f"runtime {runtime} is not registered")
    # --privileged cannot start here (the engine lacks CAP_SYS_RESOURCE in this VM), so the
    # weak container is the classic near-equivalent: root, CAP_SYS_ADMIN, seccomp off.
    name = created.container(f"agentcell-weak-{secrets.token_hex(3)}")
    docker_client.containers.run(
        "agentcell/sandbox:0.1.0",
        name=name,
        detach=True,
        user="0",
        cap_add=["SYS_ADMIN"],
        security_opt=["seccomp=unconfined"],
        network_mode="none",
        runtime=runtime,
        labels={TEST_LABEL: "probe"},
    )
    (found,) = proof.subjects([name], spec_file=EXAMPLES / "sandbox.yaml")
    report = run_probes(proof.probe_host(found), found.document, cell=name, container=name)
    failed = {result.id for result in report.failures}
    assert not report.ok
    assert {
        "caps-raise",
        "setuid-root",
        "no-new-privs",
        "mount",
        "unshare-userns",
        "ptrace",
        "bpf",
        "keyctl",
        "io_uring",
        "userfaultfd",
        "cgroup-release-agent",
        "write-rootfs",
        "fork-bomb",
        "tmpfs-fill",
        "memory-bomb",
    } <= failed, {r.id: (r.status, r.mechanism) for r in report.results}
