"""gVisor told as it is, on the real engine: exec'd processes outside the OCI profile, an image
whose python3 lies, a container started without no-new-privileges, the pids headroom refusal,
and a cell that dies while it is probed."""

from __future__ import annotations

import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import docker
import pytest

from agentcell.policy.rules import GVISOR_MIN_PIDS
from agentcell.runtime.docker.backend import DockerBackend
from agentcell.runtime.docker.proof import DockerProof
from agentcell.spec.load import load_paths
from agentcell.verify.compare import VerifyReport, mismatch_ids, verify
from agentcell.verify.probe import run_probes
from tests.conftest import EXAMPLES, TEST_LABEL, Created
from tests.integration.verify.cells import for_runtime

pytestmark = pytest.mark.integration

AGENTCELL = Path(sys.executable).parent / "agentcell"
SNAPSHOT = Path(__file__).parents[2] / "unit" / "verify" / "data" / "runsc-snapshot.json"
# Ignores the program it is sent and prints a flawless snapshot of a hardened cell.
FAKE_PYTHON = "#!/bin/sh\ncat /opt/fake/snapshot.json\n"


def needs(backend: DockerBackend, runtime: str) -> None:
    if backend.facts.runtime(runtime) is None:
        pytest.skip(f"runtime {runtime} is not registered with this engine")


def verify_container(proof: DockerProof, name: str, runtime: str) -> VerifyReport:
    (doc,) = load_paths([EXAMPLES / "sandbox.yaml"])
    (found,) = proof.subjects([name], spec_file=EXAMPLES / "sandbox.yaml")
    document = for_runtime(doc, runtime, "truth").document
    return verify(document, proof.target(found), spec_source="sandbox.yaml")


def run_sandbox(
    client: docker.DockerClient, created: Created, runtime: str, **options: object
) -> str:
    name = created.container(f"agentcell-truth-{secrets.token_hex(3)}")
    settings: dict[str, Any] = {
        "name": name,
        "detach": True,
        "user": "1001:1001",
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges:true"],
        "read_only": True,
        "tmpfs": {"/tmp": "size=64m,noexec,nosuid,nodev", "/workspace": "size=128m,noexec"},
        "network_mode": "none",
        "pids_limit": GVISOR_MIN_PIDS,
        "runtime": runtime,
        "labels": {TEST_LABEL: "verify"},
        "command": ["sleep", "600"],
    }
    settings.update(options)
    client.containers.run("agentcell/sandbox:0.1.0", **settings)
    return name


@pytest.mark.parametrize("runtime", ["runc", "crun", "runsc"])
def test_a_process_started_by_exec_is_checked(
    backend: DockerBackend,
    proof: DockerProof,
    docker_client: docker.DockerClient,
    created: Created,
    runtime: str,
) -> None:
    needs(backend, runtime)
    name = run_sandbox(docker_client, created, runtime)
    check = {c.id: c for c in verify_container(proof, name, runtime).checks}["seccomp.exec"]
    if runtime == "runsc":
        # This runsc leaves exec'd processes unfiltered: said, never verified.
        assert check.status == "not-enforced", check
        assert "12693" in check.why
        assert "Seccomp 0" in check.observed
    else:
        # runc and crun give the exec'd process the container's filter; the host's /proc
        # of that process shows it.
        assert (check.status, check.basis) == ("verified", "kernel"), check
        assert check.observed.startswith("2 ")


def test_under_runsc_no_reading_of_the_image_is_verified(
    backend: DockerBackend, proof: DockerProof, docker_client: docker.DockerClient, created: Created
) -> None:
    needs(backend, "runsc")
    name = run_sandbox(docker_client, created, "runsc")
    report = verify_container(proof, name, "runsc")
    checks = {c.id: c for c in report.checks}
    assert not [c.id for c in report.checks if c.basis == "image" and c.status == "verified"]
    assert (checks["identity.uid"].status, checks["identity.uid"].basis) == (
        "verified",
        "sandbox",
    )
    assert checks["nnp"].status == "configured"
    assert checks["mounts.masks"].status == "reported"


def test_a_lying_python3_cannot_verify_a_container_started_without_nnp(
    backend: DockerBackend,
    proof: DockerProof,
    docker_client: docker.DockerClient,
    created: Created,
    tmp_path: Path,
) -> None:
    needs(backend, "runsc")
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "python3").write_text(FAKE_PYTHON)
    (fake / "python3").chmod(0o755)
    (fake / "snapshot.json").write_text(SNAPSHOT.read_text())
    fake.chmod(0o755)
    # No no-new-privileges, NET_RAW kept, a writable root, and a python3 that says otherwise:
    # /usr/local/bin comes before /usr/bin on the image's PATH.
    name = run_sandbox(
        docker_client,
        created,
        "runsc",
        security_opt=[],
        cap_add=["NET_RAW"],
        read_only=False,
        volumes={
            str(fake / "python3"): {"bind": "/usr/local/bin/python3", "mode": "ro"},
            str(fake / "snapshot.json"): {"bind": "/opt/fake/snapshot.json", "mode": "ro"},
        },
    )
    said = docker_client.containers.get(name).exec_run(["python3", "-c", "print(1)"])
    assert b"no_new_privs" in said.output  # the lie is in place
    report = verify_container(proof, name, "runsc")
    checks = {c.id: c for c in report.checks}
    assert {"nnp", "caps.bounding", "mounts.rootfs"} <= mismatch_ids(report.checks), [
        (c.id, c.status, c.observed) for c in report.checks
    ]
    assert "noNewPrivileges false" in checks["nnp"].observed
    assert "image reports: 1" in checks["nnp"].observed
    assert not [c.id for c in report.checks if c.basis == "image" and c.status == "verified"]


def test_runsc_pids_without_headroom_is_refused_before_anything_is_made(
    docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    tenant = "pid" + secrets.token_hex(3)
    text = (EXAMPLES / "sandbox.yaml").read_text().replace("tenant: demo", f"tenant: {tenant}")
    text = text.replace("  network: none\n", "  network: none\n  security:\n    runtime: runsc\n")
    assert "pids: 128" in text
    spec = tmp_path / "sandbox.yaml"
    spec.write_text(text)
    done = subprocess.run(
        [str(AGENTCELL), "up", "-f", str(spec)], capture_output=True, text=True, check=False
    )
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert "AC-037" in output
    assert "pids: 128 under runsc leaves ~7" in output
    assert f"set pids >= {GVISOR_MIN_PIDS}" in output
    leftovers = [
        c.name for c in docker_client.containers.list(all=True) if tenant in (c.name or "")
    ]
    assert leftovers == []


# Exits as soon as a second process (the probe's exec) shows up in the cell.
_DIES_WHEN_PROBED = (
    "import os, time\n"
    "while sum(name.isdigit() for name in os.listdir('/proc')) < 2:\n"
    "    time.sleep(0.05)\n"
)


def test_a_cell_that_dies_during_the_probe_fails_it(
    backend: DockerBackend, proof: DockerProof, docker_client: docker.DockerClient, created: Created
) -> None:
    needs(backend, "runc")
    name = run_sandbox(
        docker_client,
        created,
        "runc",
        command=["python3", "-c", _DIES_WHEN_PROBED],
        restart_policy={"Name": "no"},
    )
    (found,) = proof.subjects([name], spec_file=EXAMPLES / "sandbox.yaml")
    report = run_probes(
        proof.probe_host(found),
        found.document,
        cell=name,
        container=name,
        only=["caps-raise", "mount", "ptrace", "bpf", "write-rootfs"],
        settle_s=3.0,
    )
    assert not report.ok
    assert report.cell_died is not None and "not running" in report.cell_died
    assert report.to_json()["ok"] is False
    assert report.state_before is not None and report.state_before.running
