"""Each tenant's cells sit in the tenant's own cgroup parent, whose limit files hold the
tenant's quota (read from cgroupfs on the host), and every cell has a cgroup namespace of its
own (read from /proc/PID/ns/cgroup against the host's)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from agentcell.policy import admit
from agentcell.runtime.cgroups import TenantLimits
from agentcell.runtime.docker.backend import DockerBackend
from agentcell.runtime.docker.translate import settings_for
from agentcell.spec.load import load_text
from tests.images import build_labelled
from tests.policies import AdmitAll

ROOT = Path("/sys/fs/cgroup")


@pytest.fixture(scope="module")
def backend(docker_client: docker.DockerClient) -> DockerBackend:
    return DockerBackend(docker_client)


@pytest.fixture
def tenant(backend: DockerBackend) -> Iterator[str]:
    name = "cg" + secrets.token_hex(3)
    try:
        yield name
    finally:
        for cell in backend.cells(tenant=name):
            backend.down(cell.tenant, cell.agent)
        backend.tenant_cgroup(name).remove()


def cell(backend: DockerBackend, tenant: str, name: str, limits: TenantLimits | None) -> int:
    (doc,) = load_text(
        f"apiVersion: agentcell/v1\nkind: Agent\nmetadata: {{name: {name}, tenant: {tenant}}}\n"
        "spec: {image: 'agentcell/sandbox:0.1.0'}\n"
    )
    return backend.up(admit(doc, AdmitAll()), tenant_limits=limits).cell.pid


def test_the_tenant_quota_is_the_kernel_limit_of_its_cgroup_parent(
    backend: DockerBackend, tenant: str
) -> None:
    if backend.facts.cgroup_version != "1":
        pytest.skip("this test reads cgroup v1 files; v2 is covered on recorded trees")
    limits = TenantLimits(cpus=1.5, memory=768 * 2**20, pids=300)
    pids = [cell(backend, tenant, name, limits) for name in ("a", "b")]
    parent = f"agentcell/{tenant}"
    assert (ROOT / "memory" / parent / "memory.limit_in_bytes").read_text().strip() == str(
        768 * 2**20
    )
    assert (ROOT / "cpu" / parent / "cpu.cfs_quota_us").read_text().strip() == "150000"
    assert (ROOT / "pids" / parent / "pids.max").read_text().strip() == "300"
    for pid in pids:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
        memory = next(line for line in lines if ":memory:" in line)
        assert memory.split(":", 2)[2].startswith(f"/{parent}/")
    # Both cells count against the one parent.
    tasks = (ROOT / "pids" / parent / "pids.current").read_text().strip()
    assert int(tasks) >= 2


def test_every_cell_has_its_own_cgroup_namespace(backend: DockerBackend, tenant: str) -> None:
    pid = cell(backend, tenant, "ns", None)
    assert os.readlink(f"/proc/{pid}/ns/cgroup") != os.readlink("/proc/self/ns/cgroup")
    (doc,) = load_text(
        f"apiVersion: agentcell/v1\nkind: Agent\nmetadata: {{name: ns, tenant: {tenant}}}\n"
        "spec: {image: 'agentcell/sandbox:0.1.0'}\n"
    )
    assert settings_for(admit(doc, AdmitAll())).sdk_kwargs()["cgroupns"] == "private"


def test_the_parent_goes_with_the_tenants_last_cell(backend: DockerBackend, tenant: str) -> None:
    cell(backend, tenant, "a", TenantLimits(pids=100))
    cell(backend, tenant, "b", TenantLimits(pids=100))
    backend.down(tenant, "a")
    assert list(ROOT.glob(f"*/agentcell/{tenant}"))
    backend.down(tenant, "b")
    assert not list(ROOT.glob(f"*/agentcell/{tenant}"))


def test_a_container_that_only_claims_the_tenant_keeps_no_parent(
    backend: DockerBackend, docker_client: docker.DockerClient, tenant: str
) -> None:
    # An image whose labels say it is one of the tenant's cells: the engine merges them into
    # every container made from it, so the container's labels alone would say so too.
    tag = build_labelled(
        docker_client,
        f"agentcell-test/claims:{secrets.token_hex(4)}",
        {"org.agentcell.managed": "true", "org.agentcell.tenant": tenant},
    )
    claimant = None
    try:
        claimant = docker_client.containers.create(tag, ["sleep", "60"])
        cell(backend, tenant, "a", TenantLimits(pids=100))
        backend.down(tenant, "a", timeout_s=0)
        assert not list(ROOT.glob(f"*/agentcell/{tenant}"))
    finally:
        if claimant is not None:
            claimant.remove(force=True)
        docker_client.images.remove(tag, force=True)
