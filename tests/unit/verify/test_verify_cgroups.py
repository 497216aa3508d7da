"""The cgroup readers on recorded trees: v1 (this kind of host) and v2 (most hosts)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentcell.verify.cgroups import (
    CgroupPlacement,
    cgroup_mounts,
    parse_proc_cgroup,
    place,
    read_limits,
    read_procs,
    read_v1_limits,
    read_v2_limits,
)
from agentcell.verify.procfs import KernelReadError, read_mountinfo, read_text

from .trees import PID, HostTree

MiB = 2**20
V1_UNLIMITED = "9223372036854771712"


def _placement(tree: HostTree) -> CgroupPlacement:
    membership = parse_proc_cgroup(read_text(tree.cell / "cgroup"))
    mounts = cgroup_mounts(read_mountinfo(tree.root / "proc", "self"), root=tree.root)
    return place(membership, mounts)


def test_proc_cgroup_on_a_hybrid_host_lists_v1_controllers_and_the_unified_path() -> None:
    membership = parse_proc_cgroup(
        "10:hugetlb:/docker/c1\n9:name=systemd:/docker/c1\n8:pids:/docker/c1\n"
        "4:memory:/docker/c1\n2:cpu,cpuacct:/docker/c1\n0::/docker/c1\n"
    )
    assert membership.v1 == {
        "hugetlb": "/docker/c1",
        "pids": "/docker/c1",
        "memory": "/docker/c1",
        "cpu": "/docker/c1",
        "cpuacct": "/docker/c1",
    }
    assert membership.unified == "/docker/c1"


def test_proc_cgroup_on_a_v2_host_has_only_the_unified_line() -> None:
    membership = parse_proc_cgroup("0::/system.slice/docker-c1.scope\n")
    assert membership.v1 == {}
    assert membership.unified == "/system.slice/docker-c1.scope"


def test_host_cgroup_mounts_map_each_v1_controller(v1_host: HostTree) -> None:
    mounts = cgroup_mounts(read_mountinfo(v1_host.root / "proc", "self"), root=v1_host.root)
    assert mounts.v1["memory"] == v1_host.root / "sys/fs/cgroup/memory"
    assert mounts.v1["pids"] == v1_host.root / "sys/fs/cgroup/pids"
    assert "name=systemd" not in mounts.v1
    # The hybrid host's empty v2 hierarchy is found too, but v1 holds the limits.
    assert mounts.unified == v1_host.root / "sys/fs/cgroup/unified"


def test_combined_v1_mounts_serve_every_controller_they_hold(tmp_path: Path) -> None:
    (tmp_path / "7").mkdir()
    (tmp_path / "7" / "mountinfo").write_text(
        "25 24 0:22 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct\n"
        "26 24 0:23 /docker/x /sys/fs/cgroup/memory ro - cgroup cgroup rw,memory\n"
    )
    mounts = cgroup_mounts(read_mountinfo(tmp_path, 7))
    assert mounts.v1["cpu"] == mounts.v1["cpuacct"] == Path("/sys/fs/cgroup/cpu,cpuacct")
    # A container's bind of its own sub-cgroup is not the hierarchy root.
    assert "memory" not in mounts.v1


def test_v1_limits_of_the_recorded_cell(v1_host: HostTree) -> None:
    placement = _placement(v1_host)
    limits = read_limits(placement)
    assert limits.version == "1"
    assert (limits.cpu_quota_us, limits.cpu_period_us, limits.cpus) == (50000, 100000, 0.5)
    assert limits.memory_bytes == 256 * MiB
    assert limits.memory_swap_bytes == 256 * MiB
    assert limits.swap_accounting
    assert limits.pids_max == 128
    assert limits.oom_kills == 1  # the recorded cell had been through probe's memory bomb
    assert limits.sources["memory"].endswith("memory/docker/cell0001/memory.limit_in_bytes")
    assert read_procs(placement) == (PID,)


def test_v1_unlimited_values_read_as_none(v1_host: HostTree) -> None:
    base = "sys/fs/cgroup"
    v1_host.write(f"{base}/cpu/docker/cell0001/cpu.cfs_quota_us", "-1\n")
    v1_host.write(f"{base}/memory/docker/cell0001/memory.limit_in_bytes", V1_UNLIMITED + "\n")
    v1_host.write(f"{base}/memory/docker/cell0001/memory.memsw.limit_in_bytes", V1_UNLIMITED)
    v1_host.write(f"{base}/pids/docker/cell0001/pids.max", "max\n")
    limits = read_limits(_placement(v1_host))
    assert limits.cpus is None
    assert limits.memory_bytes is None
    assert limits.memory_swap_bytes is None
    assert limits.pids_max is None


def test_v1_without_swap_accounting_says_so(v1_host: HostTree) -> None:
    (v1_host.root / "sys/fs/cgroup/memory/docker/cell0001/memory.memsw.limit_in_bytes").unlink()
    limits = read_limits(_placement(v1_host))
    assert not limits.swap_accounting
    assert limits.memory_swap_bytes is None
    assert limits.memory_bytes == 256 * MiB


def test_v1_counts_oom_kills(v1_host: HostTree) -> None:
    v1_host.write(
        "sys/fs/cgroup/memory/docker/cell0001/memory.oom_control",
        "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n",
    )
    assert read_limits(_placement(v1_host)).oom_kills == 3


def test_v1_missing_controller_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(KernelReadError, match="pids"):
        read_v1_limits({"cpu": tmp_path, "memory": tmp_path})


def test_v1_garbage_in_a_limit_file_is_an_error_naming_it(v1_host: HostTree) -> None:
    v1_host.write("sys/fs/cgroup/pids/docker/cell0001/pids.max", "lots\n")
    with pytest.raises(KernelReadError, match=r"pids\.max"):
        read_limits(_placement(v1_host))


def test_v2_limits_of_a_docker_scope(v2_host: HostTree) -> None:
    placement = _placement(v2_host)
    assert placement.version == "2"
    limits = read_limits(placement)
    assert limits.cpus == 0.5
    assert limits.memory_bytes == 256 * MiB
    # memory.swap.max is swap alone; the spec (and Docker) count memory plus swap.
    assert limits.memory_swap_bytes == 256 * MiB
    assert limits.pids_max == 128
    assert limits.oom_kills == 1
    assert read_procs(placement) == (PID, 4300)


def test_v2_swap_allowance_adds_to_memory(v2_host: HostTree) -> None:
    scope = "sys/fs/cgroup/system.slice/docker-cell0001.scope"
    v2_host.write(f"{scope}/memory.swap.max", str(64 * MiB))
    assert read_limits(_placement(v2_host)).memory_swap_bytes == 320 * MiB
    v2_host.write(f"{scope}/memory.swap.max", "max\n")
    assert read_limits(_placement(v2_host)).memory_swap_bytes is None


def test_v2_unlimited_and_disabled_controllers(v2_host: HostTree) -> None:
    scope = v2_host.root / "sys/fs/cgroup/system.slice/docker-cell0001.scope"
    (scope / "cpu.max").write_text("max 100000\n")
    (scope / "memory.max").write_text("max\n")
    (scope / "pids.max").unlink()  # pids controller not enabled for this cgroup
    (scope / "memory.swap.max").unlink()  # no swap accounting
    limits = read_v2_limits(scope)
    assert limits.cpus is None
    assert limits.cpu_period_us == 100000
    assert limits.memory_bytes is None
    assert limits.pids_max is None
    assert not limits.swap_accounting


def test_v2_directory_gone_means_the_cell_stopped(tmp_path: Path) -> None:
    with pytest.raises(KernelReadError, match="does not exist") as caught:
        read_v2_limits(tmp_path / "gone")
    assert "agentcell ps" in (caught.value.fix or "")


def test_a_process_in_no_mounted_hierarchy_cannot_be_placed(v2_host: HostTree) -> None:
    membership = parse_proc_cgroup("0::/x\n")
    with pytest.raises(KernelReadError, match="no cgroup hierarchy"):
        place(membership, cgroup_mounts(()))
