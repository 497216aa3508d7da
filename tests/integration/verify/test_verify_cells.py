"""``verify`` against the real engine: every example cell on runc, crun and runsc, and a
container weakened by hand that must show exactly its weaknesses."""

from __future__ import annotations

import secrets
import time

import docker
import pytest

from agentcell.policy import admit, preset
from agentcell.runtime.docker.backend import DockerBackend
from agentcell.runtime.docker.proof import DockerProof
from agentcell.runtime.docker.translate import settings_for
from agentcell.spec.load import load_paths
from agentcell.verify.compare import VerifyReport, mismatch_ids, verify
from tests.conftest import EXAMPLES, TEST_LABEL, Created
from tests.integration.verify.cells import RUNTIMES, Cells, for_runtime, require, subject

pytestmark = pytest.mark.integration


def report_of(proof: DockerProof, cells: Cells, runtime: str, example: str) -> VerifyReport:
    found = subject(proof, cells, runtime, example)
    return verify(found.document, proof.target(found), spec_source=found.spec_source)


@pytest.mark.parametrize("example", ["sandbox", "monitor-agent"])
@pytest.mark.parametrize("runtime", RUNTIMES)
def test_every_example_cell_verifies(
    proof: DockerProof, cells: Cells, runtime: str, example: str
) -> None:
    report = report_of(proof, cells, runtime, example)
    assert report.ok, [(c.id, c.expected, c.observed) for c in report.mismatches]
    checks = {check.id: check for check in report.checks}
    assert checks["runtime"].observed == runtime
    assert checks["cgroup.memory"].status == "verified"
    # Under runsc capabilities and mounts come from the OCI spec runsc was handed: a record.
    held = "configured" if runtime == "runsc" else "verified"
    assert checks["caps.bounding"].status == held
    assert checks["mounts.rootfs"].status == held
    assert checks["net.default-route"].status == "verified"


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_what_each_runtime_lets_verify_see(proof: DockerProof, cells: Cells, runtime: str) -> None:
    checks = {c.id: c for c in report_of(proof, cells, runtime, "sandbox").checks}
    if runtime == "runsc":
        # gVisor: uid from runsc ps, mounts from the OCI spec runsc was handed, cgroups and
        # namespaces from the host; the OCI profile is applied inside the sandbox only when
        # runsc runs with --oci-seccomp (scripts/setup.sh registers it so), and never to
        # processes started by exec.
        assert checks["identity.uid"].basis == "sandbox"
        assert checks["mounts.tmpfs:/workspace"].basis == "host"
        assert checks["mounts.tmpfs:/workspace"].status == "configured"
        assert checks["seccomp.exec"].status == "not-enforced"
        assert checks["cgroup.pids"].basis == "kernel"
        assert checks["seccomp.mode"].status == "verified"
        runsc = proof.backend.facts.runtime("runsc")
        assert runsc is not None
        enforced = "--oci-seccomp" in runsc.args
        assert checks["seccomp.profile"].status == ("configured" if enforced else "not-enforced")
        assert checks["ns.user"].status == "verified"
    else:
        assert checks["identity.uid"].basis == "kernel"
        assert checks["seccomp.profile"].status == "configured"
        assert checks["seccomp.exec"].status == "verified"
        assert checks["ns.user"].status == "not-enforced"
    assert checks["lsm"].status == "not-enforced"


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_the_strict_profile_keeps_the_reference_images_healthy(
    backend: DockerBackend, cells: Cells, runtime: str
) -> None:
    require(cells, runtime)
    deadline = time.monotonic() + 90
    health: dict[str, str | None] = {}
    while time.monotonic() < deadline:
        health = {
            name: backend.find(cells.ref(runtime, name)).health
            for name in ("sandbox", "monitor-agent")
        }
        if all(state == "healthy" for state in health.values()):
            return
        if "unhealthy" in health.values():
            break
        time.sleep(2)
    pytest.fail(f"{runtime} cells did not become healthy: {health}")


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_a_weakened_container_shows_exactly_its_weaknesses(
    backend: DockerBackend,
    proof: DockerProof,
    docker_client: docker.DockerClient,
    created: Created,
    runtime: str,
) -> None:
    if backend.facts.runtime(runtime) is None:
        pytest.skip(f"runtime {runtime} is not registered")
    (doc,) = load_paths([EXAMPLES / "sandbox.yaml"])
    spec_file = EXAMPLES / "sandbox.yaml"
    # What `docker run` would do with the sandbox's settings, minus three protections.
    kwargs = settings_for(admit(for_runtime(doc, runtime, "weak"), preset("restricted")))
    options = kwargs.sdk_kwargs()
    options.update(
        name=created.container(f"agentcell-weak-{secrets.token_hex(3)}"),
        cap_add=["NET_RAW"],
        read_only=False,
        labels={TEST_LABEL: "verify"},
        restart_policy={"Name": "no"},
    )
    for dropped in ("mem_limit", "memswap_limit", "healthcheck"):
        options.pop(dropped, None)
    docker_client.containers.run(**options)

    (found,) = proof.subjects([options["name"]], spec_file=spec_file)
    document = for_runtime(doc, runtime, "weak").document
    report = verify(document, proof.target(found), spec_source=str(spec_file))
    # No memory limit means no memory+swap limit either: both are reported.
    # Under runsc too: the OCI spec runsc was handed keeps NET_RAW in the bounding set.
    expected = {"caps.bounding", "mounts.rootfs", "cgroup.memory", "cgroup.memory-swap"}
    assert mismatch_ids(report.checks) == expected, [(c.id, c.observed) for c in report.mismatches]
