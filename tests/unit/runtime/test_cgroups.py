"""A tenant's cgroup parent on recorded v1 and v2 trees: the quota becomes the kernel's
limit files, a lowered or removed quota leaves no old limit behind, and removal takes only
empty directories."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentcell.runtime.cgroups import TenantCgroup, TenantLimits


def v1_tree(root: Path) -> Path:
    for controller in ("cpu", "memory", "pids", "cpuset"):
        (root / controller).mkdir(parents=True)
    return root


def read(path: Path) -> str:
    return path.read_text().strip()


def cgroup(tmp_path: Path, version: str) -> TenantCgroup:
    root = v1_tree(tmp_path / "fs") if version == "1" else tmp_path / "fs"
    if version == "2":
        root.mkdir()
        (root / "cgroup.subtree_control").write_text("")
    return TenantCgroup(tenant="acme", version=version, root=root, records=tmp_path / "records")


def test_v1_limits_are_written_to_each_controller(tmp_path: Path) -> None:
    tenant = cgroup(tmp_path, "1")
    tenant.ensure(TenantLimits(cpus=1.5, memory=2 * 2**30, pids=512))
    root = tenant.root
    assert read(root / "cpu/agentcell/acme/cpu.cfs_quota_us") == "150000"
    assert read(root / "cpu/agentcell/acme/cpu.cfs_period_us") == "100000"
    assert read(root / "memory/agentcell/acme/memory.limit_in_bytes") == str(2 * 2**30)
    assert read(root / "pids/agentcell/acme/pids.max") == "512"
    assert tenant.recorded() == TenantLimits(cpus=1.5, memory=2 * 2**30, pids=512)
    assert tenant.parent == "/agentcell/acme"


def test_a_limit_taken_out_of_the_quota_becomes_unlimited(tmp_path: Path) -> None:
    tenant = cgroup(tmp_path, "1")
    tenant.ensure(TenantLimits(cpus=1, memory=2**30, pids=64))
    tenant.ensure(TenantLimits(pids=64))
    assert read(tenant.root / "cpu/agentcell/acme/cpu.cfs_quota_us") == "-1"
    assert read(tenant.root / "memory/agentcell/acme/memory.limit_in_bytes") == "-1"


def test_v2_enables_the_controllers_and_writes_the_limits(tmp_path: Path) -> None:
    tenant = cgroup(tmp_path, "2")
    (tenant.root / "agentcell").mkdir()
    (tenant.root / "agentcell" / "cgroup.subtree_control").write_text("")
    tenant.ensure(TenantLimits(cpus=2, memory=2**30, pids=100))
    directory = tenant.root / "agentcell" / "acme"
    assert read(directory / "cpu.max") == "200000 100000"
    assert read(directory / "memory.max") == str(2**30)
    assert read(directory / "pids.max") == "100"
    assert read(tenant.root / "cgroup.subtree_control") == "+cpu +memory +pids"
    assert read(tenant.root / "agentcell" / "cgroup.subtree_control") == "+cpu +memory +pids"


def test_remove_takes_empty_directories_and_the_record(tmp_path: Path) -> None:
    tenant = cgroup(tmp_path, "1")
    tenant.ensure(TenantLimits(pids=8))
    # Files the kernel would not leave there; removal must not delete through them.
    for directory in tenant.directories():
        for entry in directory.iterdir():
            entry.unlink()
    (tenant.root / "cpuset" / "agentcell" / "acme").mkdir(parents=True)
    tenant.remove()
    assert not list(tenant.root.glob("*/agentcell"))
    assert tenant.recorded() is None


def test_a_directory_still_in_use_stays(tmp_path: Path) -> None:
    tenant = cgroup(tmp_path, "1")
    tenant.ensure(TenantLimits(pids=8))
    tenant.remove()  # the limit files stand in for a cell's cgroup: not empty
    assert all(directory.is_dir() for directory in tenant.directories())


def test_an_unwritable_tree_is_a_host_error(tmp_path: Path) -> None:
    from agentcell.errors import HostError

    tenant = TenantCgroup(tenant="acme", version="1", root=tmp_path / "file", records=tmp_path)
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(HostError, match="cannot write tenant acme's cgroup limits"):
        tenant.ensure(TenantLimits(pids=8))
