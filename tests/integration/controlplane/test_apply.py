"""`agentcell apply` against the real engine and a real control plane process, through the
CLI: a directory of 3 tenants and 6 agents converges, a second apply plans nothing, one change
is one replace, --prune removes exactly what left the directory, --dry-run changes nothing,
quota refuses a batch with the numbers, and a bad Tenant document changes nothing."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from agentcell.cell.labels import LABEL_MANAGED, LABEL_TENANT
from agentcell.runtime.docker.backend import DockerBackend

from .cp_harness import ControlPlane

AGENTCELL = Path(sys.executable).with_name("agentcell")
TENANT = (
    "apiVersion: agentcell/v1\nkind: Tenant\nmetadata: {{name: {name}}}\n"
    "spec:\n  quota: {{cpus: 4, memory: 2g, pids: 2048, cells: 4}}\n"
    "  config: {{greeting: hello}}\n{extra}"
)
AGENT = (
    "apiVersion: agentcell/v1\nkind: Agent\nmetadata: {{name: {name}, tenant: {tenant}}}\n"
    "spec:\n  image: agentcell/sandbox:0.1.0\n  healthcheck: {{command: [python3, -V]}}\n"
    "  resources: {{memory: {memory}}}\n"
)


@pytest.fixture
def prefix(docker_client: docker.DockerClient) -> Iterator[str]:
    value = "ap" + secrets.token_hex(2)
    backend = DockerBackend(docker_client)
    try:
        yield value
    finally:
        for cell in backend.cells():
            if cell.tenant.startswith(value):
                backend.down(cell.tenant, cell.agent)
        for index in range(3):
            backend.tenant_cgroup(f"{value}{index}").remove()


def write_directory(root: Path, prefix: str, memory: str = "128m") -> Path:
    root.mkdir(exist_ok=True)
    for index in range(3):
        tenant = f"{prefix}{index}"
        (root / f"{tenant}.yaml").write_text(TENANT.format(name=tenant, extra=""))
        for agent in ("web", "worker"):
            (root / f"{tenant}-{agent}.yaml").write_text(
                AGENT.format(name=agent, tenant=tenant, memory=memory)
            )
    return root


def apply(plane: ControlPlane, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AGENTCELL_HOME": str(plane.home)}
    return subprocess.run(
        [str(AGENTCELL), "apply", *argv], capture_output=True, text=True, timeout=300, env=env
    )


def cells_of(client: docker.DockerClient, prefix: str) -> dict[str, str]:
    found = {}
    for container in client.containers.list(all=True, filters={"label": f"{LABEL_MANAGED}=true"}):
        if container.labels.get(LABEL_TENANT, "").startswith(prefix):
            found[container.name or ""] = container.id or ""
    return found


def test_a_directory_converges_and_a_second_apply_plans_nothing(
    control_plane: ControlPlane, docker_client: docker.DockerClient, prefix: str, tmp_path: Path
) -> None:
    root = write_directory(tmp_path / "d", prefix)
    first = apply(control_plane, "-f", str(root))
    assert first.returncode == 0, first.stderr
    lines = first.stdout.splitlines()
    assert sum(line.startswith("create tenant") for line in lines) == 3
    assert sum(line.startswith("create agent") for line in lines) == 6
    made = cells_of(docker_client, prefix)
    assert len(made) == 6
    assert {t.name for t in control_plane.admin.tenants()} >= {f"{prefix}{i}" for i in range(3)}

    again = apply(control_plane, "-f", str(root))
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == "no changes"
    assert cells_of(docker_client, prefix) == made

    # One agent's memory changes: one replace, naming the field; --dry-run first changes nothing.
    changed = root / f"{prefix}1-web.yaml"
    changed.write_text(AGENT.format(name="web", tenant=f"{prefix}1", memory="192m"))
    versions = {t.name: t.version for t in control_plane.admin.tenants()}
    dry = apply(control_plane, "-f", str(root), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    # memory_swap follows memory (no swap), so it changes with it.
    replace = f"replace agent {prefix}1/web: spec.resources.memory, spec.resources.memory_swap"
    assert dry.stdout.splitlines() == [replace]
    assert cells_of(docker_client, prefix) == made
    assert {t.name: t.version for t in control_plane.admin.tenants()} == versions
    third = apply(control_plane, "-f", str(root))
    assert third.stdout.splitlines() == [replace]
    after = cells_of(docker_client, prefix)
    assert set(after) == set(made)
    assert [name for name in after if after[name] != made[name]] == [f"agentcell_{prefix}1_web"]

    # A file removed: only --prune deletes, and exactly that cell.
    (root / f"{prefix}2-worker.yaml").unlink()
    assert apply(control_plane, "-f", str(root)).stdout.strip() == "no changes"
    pruned = apply(control_plane, "-f", str(root), "--prune")
    assert pruned.returncode == 0, pruned.stderr
    assert pruned.stdout.splitlines() == [f"delete agent {prefix}2/worker"]
    assert set(cells_of(docker_client, prefix)) == set(after) - {f"agentcell_{prefix}2_worker"}


def test_a_batch_over_quota_creates_nothing_and_the_quota_is_a_kernel_limit(
    control_plane: ControlPlane, docker_client: docker.DockerClient, prefix: str, tmp_path: Path
) -> None:
    root = tmp_path / "q"
    root.mkdir()
    tenant = f"{prefix}0"
    (root / "t.yaml").write_text(
        TENANT.format(name=tenant, extra="").replace("memory: 2g", "memory: 512m")
    )
    for agent in ("a", "b", "c"):
        (root / f"{agent}.yaml").write_text(AGENT.format(name=agent, tenant=tenant, memory="256m"))
    refused = apply(control_plane, "-f", str(root))
    assert refused.returncode == 2, refused.stderr
    assert f"tenant {tenant}: memory 0 in use + 768m asked > 512m quota" in refused.stderr
    assert cells_of(docker_client, prefix) == {}
    assert tenant not in {t.name for t in control_plane.admin.tenants()}

    (root / "c.yaml").unlink()
    assert apply(control_plane, "-f", str(root)).returncode == 0
    limit = Path(f"/sys/fs/cgroup/memory/agentcell/{tenant}/memory.limit_in_bytes")
    if limit.parent.parent.parent.exists():  # cgroup v1 (this kind of host)
        assert limit.read_text().strip() == str(512 * 2**20)


@pytest.mark.parametrize(
    ("mistake", "field"),
    [
        ("  quota: {cpus: 1, memroy: 1g}\n", "spec.quota.memroy"),
        ("  quota: {memory: 2gx}\n", "spec.quota.memory"),
        ("  isolation: paranoid\n", "spec.isolation"),
    ],
    ids=["unknown-field", "bad-unit", "unknown-isolation"],
)
def test_a_bad_tenant_document_is_located_and_changes_nothing(
    control_plane: ControlPlane,
    docker_client: docker.DockerClient,
    prefix: str,
    tmp_path: Path,
    mistake: str,
    field: str,
) -> None:
    root = tmp_path / "bad"
    root.mkdir()
    (root / "t.yaml").write_text(
        f"apiVersion: agentcell/v1\nkind: Tenant\nmetadata: {{name: {prefix}0}}\nspec:\n{mistake}"
    )
    (root / "a.yaml").write_text(AGENT.format(name="a", tenant=f"{prefix}0", memory="128m"))
    result = apply(control_plane, "-f", str(root))
    assert result.returncode == 2
    assert f"t.yaml:5: {field}" in result.stderr
    assert "Traceback" not in result.stderr
    assert cells_of(docker_client, prefix) == {}
    assert control_plane.admin.tenants() == [] or f"{prefix}0" not in {
        t.name for t in control_plane.admin.tenants()
    }


def test_a_duplicate_tenant_and_a_quota_below_what_runs_are_refused(
    control_plane: ControlPlane, docker_client: docker.DockerClient, prefix: str, tmp_path: Path
) -> None:
    root = write_directory(tmp_path / "d", prefix)
    (root / "again.yaml").write_text(TENANT.format(name=f"{prefix}0", extra=""))
    duplicate = apply(control_plane, "-f", str(root))
    assert duplicate.returncode == 2
    assert f"tenant {prefix}0 is defined twice" in duplicate.stderr
    (root / "again.yaml").unlink()
    assert apply(control_plane, "-f", str(root)).returncode == 0
    made = cells_of(docker_client, prefix)

    # Lower tenant 0's memory quota below its two cells' 256m, without touching the agents.
    (root / f"{prefix}0.yaml").write_text(
        TENANT.format(name=f"{prefix}0", extra="").replace("memory: 2g", "memory: 200m")
    )
    lowered = apply(control_plane, "-f", str(root))
    assert lowered.returncode == 2
    assert f"tenant {prefix}0: memory" in lowered.stderr and "> 200m quota" in lowered.stderr
    assert cells_of(docker_client, prefix) == made
    stored = {t.name: t for t in control_plane.admin.tenants()}[f"{prefix}0"]
    assert stored.document.spec.quota.memory == 2 * 2**30


@pytest.mark.parametrize(
    ("quota", "numbers"),
    [
        ("{cpus: 1}", "cpus 0 in use + 1.5 asked > 1 quota"),
        ("{pids: 300}", "pids 0 in use + 384 asked > 300 quota"),
        ("{cells: 2}", "cells 0 in use + 3 asked > 2 quota"),
    ],
    ids=["cpus", "pids", "cells"],
)
def test_every_quota_dimension_refuses_a_batch_with_the_numbers(
    control_plane: ControlPlane,
    docker_client: docker.DockerClient,
    prefix: str,
    tmp_path: Path,
    quota: str,
    numbers: str,
) -> None:
    root = tmp_path / "q"
    root.mkdir()
    tenant = f"{prefix}0"
    (root / "t.yaml").write_text(
        f"apiVersion: agentcell/v1\nkind: Tenant\nmetadata: {{name: {tenant}}}\n"
        f"spec:\n  quota: {quota}\n"
    )
    for agent in ("a", "b", "c"):
        (root / f"{agent}.yaml").write_text(AGENT.format(name=agent, tenant=tenant, memory="64m"))
    refused = apply(control_plane, "-f", str(root))
    assert refused.returncode == 2, refused.stderr
    assert f"tenant {tenant}: {numbers}" in refused.stderr
    assert cells_of(docker_client, prefix) == {}


def test_tenant_list_show_and_delete(
    control_plane: ControlPlane, docker_client: docker.DockerClient, prefix: str, tmp_path: Path
) -> None:
    root = write_directory(tmp_path / "d", prefix)
    assert apply(control_plane, "-f", str(root)).returncode == 0
    env = {**os.environ, "AGENTCELL_HOME": str(control_plane.home)}

    def tenant(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(AGENTCELL), "tenant", *argv], capture_output=True, text=True, timeout=120, env=env
        )

    listed = tenant("list", "-o", "json")
    assert listed.returncode == 0, listed.stderr
    rows = {row["name"]: row for row in json.loads(listed.stdout)["items"]}
    assert rows[f"{prefix}0"]["used"]["cells"] == 2
    assert rows[f"{prefix}0"]["quota"]["memory"] == 2 * 2**30
    shown = tenant("show", f"{prefix}1")
    assert "cells   2/4" in shown.stdout and "memory  256m/2g" in shown.stdout
    refused = tenant("delete", f"{prefix}2")
    assert refused.returncode == 2 and "still has 2 cells" in refused.stderr
    deleted = tenant("delete", f"{prefix}2", "--force")
    assert deleted.returncode == 0, deleted.stderr
    assert not [name for name in cells_of(docker_client, prefix) if f"_{prefix}2_" in name]
    assert f"{prefix}2" not in {t.name for t in control_plane.admin.tenants()}
    assert not list(Path("/sys/fs/cgroup").glob(f"*/agentcell/{prefix}2"))
    unknown = tenant("show", "nosuch")
    assert unknown.returncode == 2 and "no tenant nosuch" in unknown.stderr


def test_a_tenant_with_egress_open_to_everything_is_a_finding_of_apply(
    control_plane: ControlPlane, prefix: str, tmp_path: Path
) -> None:
    root = tmp_path / "open"
    root.mkdir()
    extra = "  network:\n    egress:\n      allow:\n        - {cidr: 0.0.0.0/0, ports: [443]}\n"
    (root / "t.yaml").write_text(TENANT.format(name=f"{prefix}0", extra=extra))
    result = apply(control_plane, "--dry-run", "-f", str(root))
    assert result.returncode == 0, result.stderr
    assert "AC-043" in result.stderr
    assert "t.yaml:" in result.stderr
    assert "egress open to everything" in result.stderr
