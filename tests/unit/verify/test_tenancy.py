"""cgroup.tenant on recorded v1 and v2 trees: a cell under its tenant's parent whose limit
files hold the quota verifies; a changed limit file or a cell outside the parent is a
mismatch."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from agentcell.cell.quota import TenantLimits
from agentcell.verify.tenancy import tenant_check
from tests.unit.verify.trees import PID, HostTree, v1_tree, v2_tree

QUOTA = TenantLimits(cpus=2, memory=2**30, pids=500)


def under_tenant(tree: HostTree, version: str) -> None:
    """Move the recorded cell under /agentcell/acme and give the parent QUOTA's limits."""
    fs = tree.root / "sys" / "fs" / "cgroup"
    if version == "1":
        tree.edit(f"proc/{PID}/cgroup", "/docker/cell0001", "/agentcell/acme/cell0001")
        for controller in ("cpu", "memory", "pids"):
            parent = fs / controller / "agentcell" / "acme"
            parent.mkdir(parents=True)
            shutil.move(str(fs / controller / "docker" / "cell0001"), parent / "cell0001")
        tree.write("sys/fs/cgroup/cpu/agentcell/acme/cpu.cfs_quota_us", "200000\n")
        tree.write("sys/fs/cgroup/cpu/agentcell/acme/cpu.cfs_period_us", "100000\n")
        tree.write("sys/fs/cgroup/memory/agentcell/acme/memory.limit_in_bytes", f"{2**30}\n")
        tree.write("sys/fs/cgroup/memory/agentcell/acme/memory.memsw.limit_in_bytes", f"{2**30}\n")
        tree.write("sys/fs/cgroup/pids/agentcell/acme/pids.max", "500\n")
    else:
        tree.edit(f"proc/{PID}/cgroup", "/system.slice/docker-cell0001.scope",
                  "/agentcell/acme/cell0001")  # fmt: skip
        parent = fs / "agentcell" / "acme"
        parent.mkdir(parents=True)
        shutil.move(str(fs / "system.slice" / "docker-cell0001.scope"), parent / "cell0001")
        tree.write("sys/fs/cgroup/agentcell/acme/cpu.max", "200000 100000\n")
        tree.write("sys/fs/cgroup/agentcell/acme/memory.max", f"{2**30}\n")
        tree.write("sys/fs/cgroup/agentcell/acme/memory.swap.max", "0\n")
        tree.write("sys/fs/cgroup/agentcell/acme/pids.max", "500\n")


@pytest.mark.parametrize("version", ["1", "2"])
def test_a_cell_in_its_tenant_parent_with_the_quota_verifies(version: str, tmp_path: Path) -> None:
    tree = v1_tree(tmp_path) if version == "1" else v2_tree(tmp_path)
    under_tenant(tree, version)
    check = tenant_check(tenant="acme", pid=PID, expected=QUOTA, paths=tree.paths)
    assert check.status == "verified", check
    assert "pids 500" in check.observed


def test_a_changed_limit_file_is_a_mismatch(v1_host: HostTree) -> None:
    under_tenant(v1_host, "1")
    v1_host.write("sys/fs/cgroup/pids/agentcell/acme/pids.max", "max\n")
    check = tenant_check(tenant="acme", pid=PID, expected=QUOTA, paths=v1_host.paths)
    assert check.status == "mismatch"
    assert "pids unlimited" in check.observed


def test_a_cell_outside_its_tenant_parent_is_a_mismatch(v1_host: HostTree) -> None:
    check = tenant_check(tenant="acme", pid=PID, expected=QUOTA, paths=v1_host.paths)
    assert check.status == "mismatch"
    assert "/docker" in check.observed


def test_no_recorded_quota_still_checks_the_parent(v2_host: HostTree) -> None:
    under_tenant(v2_host, "2")
    check = tenant_check(tenant="acme", pid=PID, expected=None, paths=v2_host.paths)
    assert check.status == "verified"
    other = tenant_check(tenant="other", pid=PID, expected=None, paths=v2_host.paths)
    assert other.status == "mismatch"
