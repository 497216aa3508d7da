"""Bad input through the real command: a clear error with file:line:field, exit code 2, and
nothing created on the engine."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import docker
import pytest

from agentcell.cell.names import container_name
from agentcell.cell.network import tenant_network
from tests.conftest import Created

AGENTCELL = Path(sys.executable).with_name("agentcell")


def spec(tenant: str, name: str = "victim", extra: str = "") -> str:
    return (
        "apiVersion: agentcell/v1\nkind: Agent\n"
        f"metadata:\n  name: {name}\n  tenant: {tenant}\n"
        f"spec:\n  image: agentcell/sandbox:0.1.0\n{extra}"
    )


@pytest.fixture
def tenant() -> str:
    return "bad" + secrets.token_hex(3)


def up(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(AGENTCELL), "up", "-f", str(path)], capture_output=True, text=True, timeout=120
    )


def cells_of(client: docker.DockerClient, tenant: str) -> list[str]:
    containers = client.containers.list(
        all=True, filters={"label": f"org.agentcell.tenant={tenant}"}
    )
    return [c.name or "" for c in containers]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.yaml"
    path.write_text(text)
    return path


CASES = {
    "invalid yaml": ("  env: {A: [unclosed}\n", ":8:", "invalid YAML"),
    "unknown field": ("  resources:\n    memroy: 512m\n", ":9: spec.resources.memroy", "memory"),
    "wrong type": ("  resources:\n    pids: many\n", ":9: spec.resources.pids", "integer"),
    "negative limit": ("  resources:\n    cpus: -2\n", ":9: spec.resources.cpus", "greater"),
    "absurd limit": ("  resources:\n    memory: 99999g\n", ":9: spec.resources.memory", "less"),
    "named network": (
        "  network: backend\n",
        ":8: spec.network",
        "fix: tenants have one network: write network: tenant",
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_spec_is_refused_with_its_location(
    docker_client: docker.DockerClient, tmp_path: Path, tenant: str, case: str
) -> None:
    extra, location, words = CASES[case]
    path = write(tmp_path, spec(tenant, extra=extra))
    result = up(path)
    assert result.returncode == 2, result.stderr
    assert f"{path}{location}" in result.stderr
    assert words in result.stderr
    assert "fix:" in result.stderr
    assert cells_of(docker_client, tenant) == []


def test_missing_image_is_refused(
    docker_client: docker.DockerClient, tmp_path: Path, tenant: str
) -> None:
    path = write(tmp_path, spec(tenant).replace("image: agentcell/sandbox:0.1.0", "env: {}"))
    result = up(path)
    assert result.returncode == 2
    assert f"{path}:6: spec.image: required field 'image' is missing" in result.stderr
    assert cells_of(docker_client, tenant) == []


def test_unreadable_file_is_refused(tmp_path: Path) -> None:
    result = up(tmp_path / "nope.yaml")
    assert result.returncode == 2
    assert f"{tmp_path / 'nope.yaml'}: file not found" in result.stderr


def test_one_bad_document_stops_the_whole_file(
    docker_client: docker.DockerClient, tmp_path: Path, tenant: str
) -> None:
    good = spec(tenant, name="good")
    bad = spec(tenant, name="bad", extra="  security:\n    runtime: kata\n")
    result = up(write(tmp_path, good + "---\n" + bad))
    assert result.returncode == 2
    assert "spec.security.runtime" in result.stderr
    assert cells_of(docker_client, tenant) == []


def test_name_collision_in_the_specs(
    docker_client: docker.DockerClient, tmp_path: Path, tenant: str
) -> None:
    result = up(write(tmp_path, spec(tenant) + "---\n" + spec(tenant)))
    assert result.returncode == 2
    assert "defined twice" in result.stderr
    assert f"{tmp_path / 'agent.yaml'}:12: metadata.name" in result.stderr
    assert cells_of(docker_client, tenant) == []


def test_name_collision_with_a_foreign_container(
    docker_client: docker.DockerClient, created: Created, tmp_path: Path, tenant: str
) -> None:
    name = created.container(container_name(tenant, "victim"))
    docker_client.containers.create("agentcell/base:bookworm", ["true"], name=name)
    result = up(write(tmp_path, spec(tenant)))
    assert result.returncode == 2
    assert "agentcell did not create it" in result.stderr
    assert f"{tmp_path / 'agent.yaml'}:4: metadata.name" in result.stderr
    foreign = docker_client.containers.get(name)
    assert foreign.labels.get("org.agentcell.managed") is None  # untouched


def test_runsc_with_a_network_is_refused_on_this_host(
    docker_client: docker.DockerClient, tmp_path: Path, tenant: str
) -> None:
    # pids leaves gVisor's own threads room, so the refusal is about the network alone.
    extra = "  network: tenant\n  resources: {pids: 512}\n  security:\n    runtime: runsc\n"
    result = up(write(tmp_path, spec(tenant, extra=extra)))
    assert result.returncode == 3, result.stderr
    assert "runs without networking on this host" in result.stderr
    assert cells_of(docker_client, tenant) == []
    assert docker_client.networks.list(names=[tenant_network(tenant)]) == []


@pytest.mark.parametrize("policy", ["restricted", "monitoring-agent"])
@pytest.mark.parametrize("source", ["/run/agentcell", "/var/lib/agentcell", "HOME", "/"])
def test_no_mount_of_agentcell_state_is_admitted_even_with_an_exception(
    docker_client: docker.DockerClient, tmp_path: Path, tenant: str, source: str, policy: str
) -> None:
    home = tmp_path / "home"
    (home / "run" / "identity" / "other" / "agent").mkdir(parents=True)
    mounted = str(home / "run") if source == "HOME" else source
    extra = (
        f"  host:\n    mounts: [{{source: {mounted}, target: /host/state}}]\n"
        "  exceptions:\n"
        "    - {rule: AC-040, reason: reads other cells' tokens}\n"
        "    - {rule: AC-025, reason: reads the host state}\n"
        "    - {rule: AC-027, reason: reads the host state}\n"
    )
    result = subprocess.run(
        [str(AGENTCELL), "up", "-f", str(write(tmp_path, spec(tenant, extra=extra))),
         "--policy", policy],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "AGENTCELL_HOME": str(home)},
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "AC-040" in result.stderr
    assert "spec.host.mounts[0]" in result.stderr
    assert cells_of(docker_client, tenant) == []
