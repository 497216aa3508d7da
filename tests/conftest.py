"""Fixtures shared by every test: a real Docker Engine, and bookkeeping that removes what a
test created even when it fails."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors
import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
TEST_LABEL = "test.agentcell.made-by"  # not org.agentcell.*: only agentcell sets those


_BEFORE: dict[str, set[str]] = {}


CGROUP_FS = Path("/sys/fs/cgroup")


def _tenant_cgroups() -> set[str]:
    """The tenants' cgroup parents (``/agentcell/<tenant>`` in any hierarchy) on this host."""
    return {str(path) for path in CGROUP_FS.glob("*/agentcell/*") if path.is_dir()} | {
        str(path) for path in CGROUP_FS.glob("agentcell/*") if path.is_dir()
    }


def _sweep_tenant_cgroups(before: set[str]) -> None:
    """Remove the empty tenant cgroup parents the tests made. A test that removes a cell with
    `docker rm` rather than `agentcell down` leaves its tenant's parent behind (the engine
    does not remove parents), and rmdir takes only an empty one."""
    for path in sorted(_tenant_cgroups() - before, reverse=True):
        with contextlib.suppress(OSError):
            Path(path).rmdir()
    for root in [*CGROUP_FS.glob("*/agentcell"), CGROUP_FS / "agentcell"]:
        with contextlib.suppress(OSError):
            root.rmdir()


def _nft_tables() -> set[str]:
    """agentcell's nftables tables (``inet agentcell_<t>``, ``bridge agentcell_<t>``)."""
    try:
        done = subprocess.run(
            ["nft", "-j", "list", "tables"], capture_output=True, text=True, timeout=10, check=False
        )
        listed = json.loads(done.stdout or "{}")
    except (OSError, subprocess.TimeoutExpired, ValueError):
        return set()
    return {
        f"{table['family']} {table['name']}"
        for item in listed.get("nftables", [])
        if isinstance(table := item.get("table"), dict)
        and str(table.get("name", "")).startswith("agentcell_")
    }


def remove_tenant_network(client: docker.DockerClient, tenant: str) -> None:
    """Remove what a tenant network leaves on the host: the engine network (once its containers
    are gone), the tenant's nftables tables and its files in the run directory."""
    from agentcell.cell.network import nft_table, tenant_network
    from agentcell.cell.paths import run_dir

    for network in client.networks.list(names=[tenant_network(tenant)]):
        if network.name == tenant_network(tenant):
            with contextlib.suppress(docker.errors.APIError):
                network.remove()
    for family in ("inet", "bridge"):
        subprocess.run(
            ["nft", "delete", "table", family, nft_table(tenant)],
            capture_output=True,
            timeout=10,
            check=False,
        )
    shutil.rmtree(run_dir() / "net" / tenant, ignore_errors=True)


def _engine_objects() -> dict[str, set[str]] | None:
    try:
        client = docker.DockerClient.from_env(version="1.41")
        try:
            return {
                "container": {c.name or c.id or "" for c in client.containers.list(all=True)},
                "network": {n.name or "" for n in client.networks.list()},
                "tenant cgroup": _tenant_cgroups(),
                "nft table": _nft_tables(),
            }
        finally:
            client.close()
    except docker.errors.DockerException:
        return None


_CGROUPS_BEFORE: set[str] = set()


def pytest_sessionstart(session: pytest.Session) -> None:
    """Note the tenant cgroup parents that exist before the tests (every run sweeps the ones
    the tests leave); with AGENTCELL_CHECK_LEFTOVERS=1 (scripts/test.sh), note every engine
    object too."""
    _CGROUPS_BEFORE.update(_tenant_cgroups())
    if os.environ.get("AGENTCELL_CHECK_LEFTOVERS") == "1":
        _BEFORE.update(_engine_objects() or {})


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run when the tests left a container, network, nftables table (``agentcell_*``,
    families inet and bridge) or tenant cgroup behind (empty
    tenant cgroup parents are swept first: see :func:`_sweep_tenant_cgroups`)."""
    _sweep_tenant_cgroups(_CGROUPS_BEFORE)
    if not _BEFORE:
        return
    after = _engine_objects() or {}
    leftovers = {kind: sorted(after.get(kind, set()) - names) for kind, names in _BEFORE.items()}
    if any(leftovers.values()):
        session.config.get_terminal_writer().line(f"tests left behind: {leftovers}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything under tests/integration needs the engine; mark it so `-m` can select it."""
    for item in items:
        if "integration" in item.path.parts:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    """A client for the local engine. Skips without one, unless CI demands it
    (AGENTCELL_REQUIRE_DOCKER=1 turns the skip into a failure)."""
    try:
        client = docker.DockerClient.from_env(version="1.41")
        client.ping()
    except docker.errors.DockerException as exc:
        if os.environ.get("AGENTCELL_REQUIRE_DOCKER") == "1":
            pytest.fail(f"the Docker Engine is required but unreachable: {exc}")
        pytest.skip(f"no Docker Engine: {exc}")
    yield client
    client.close()


class Created:
    """Names of containers, networks and tenant networks a test made; all removed at
    teardown."""

    def __init__(self, client: docker.DockerClient) -> None:
        self.client = client
        self.containers: list[str] = []
        self.networks: list[str] = []
        self.tenants: list[str] = []

    def container(self, name: str) -> str:
        self.containers.append(name)
        return name

    def network(self, name: str) -> str:
        self.networks.append(name)
        return name

    def tenant_network(self, tenant: str) -> str:
        """Record a tenant whose network (and host rules and files) the test makes."""
        self.tenants.append(tenant)
        return tenant

    def remove_all(self) -> None:
        for name in self.containers:
            with contextlib.suppress(docker.errors.NotFound):
                self.client.containers.get(name).remove(force=True)
        for name in self.networks:
            for network in self.client.networks.list(names=[name]):
                with contextlib.suppress(docker.errors.NotFound):
                    network.remove()
        for tenant in self.tenants:
            remove_tenant_network(self.client, tenant)


@pytest.fixture
def created(docker_client: docker.DockerClient) -> Iterator[Created]:
    """Record what the test creates; remove it afterwards whatever happened."""
    record = Created(docker_client)
    try:
        yield record
    finally:
        record.remove_all()
