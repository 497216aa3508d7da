"""A tenant network's life through the CLI and a real control plane: `apply` makes it with the
host rules the Tenant document asks for, and `tenant delete` removes it, its rules and files."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import docker

from agentcell.cell.network import nft_table, tenant_network
from agentcell.runtime import netfilter
from tests.conftest import Created

from .cp_harness import ControlPlane

AGENTCELL = Path(sys.executable).with_name("agentcell")
DOCUMENTS = (
    "apiVersion: agentcell/v1\nkind: Tenant\nmetadata: {{name: {tenant}}}\n"
    "spec:\n  network: {{intra_tenant: false}}\n"
    "---\n"
    "apiVersion: agentcell/v1\nkind: Agent\nmetadata: {{name: web, tenant: {tenant}}}\n"
    "spec:\n  image: agentcell/sandbox:0.1.0\n  network: tenant\n"
)


def run(plane: ControlPlane, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AGENTCELL_HOME": str(plane.home)}
    return subprocess.run(
        [str(AGENTCELL), *argv], capture_output=True, text=True, timeout=300, env=env
    )


def tables(tenant: str) -> set[str]:
    return {family for family, name in netfilter.agentcell_tables() if name == nft_table(tenant)}


def test_apply_makes_the_network_and_tenant_delete_removes_it(
    control_plane: ControlPlane,
    docker_client: docker.DockerClient,
    created: Created,
    tmp_path: Path,
) -> None:
    tenant = created.tenant_network("nl" + secrets.token_hex(3))
    created.container(f"agentcell_{tenant}_web")
    path = tmp_path / "tenant.yaml"
    path.write_text(DOCUMENTS.format(tenant=tenant))
    applied = run(control_plane, "apply", "-f", str(path))
    assert applied.returncode == 0, applied.stderr
    assert docker_client.networks.get(tenant_network(tenant)).attrs["Internal"] is True
    # intra_tenant: false gives the bridge table too.
    assert tables(tenant) == {"inet", "bridge"}
    resolv = control_plane.home / "run" / "net" / tenant / "resolv.conf"
    assert resolv.read_text().startswith("nameserver ")

    deleted = run(control_plane, "tenant", "delete", tenant, "--force")
    assert deleted.returncode == 0, deleted.stderr
    assert [n for n in docker_client.networks.list() if n.name == tenant_network(tenant)] == []
    assert tables(tenant) == set()
    assert not resolv.parent.exists()
