"""Cgroup limits as the kernel holds them, for cgroup v1 and v2.

The limits a cell lives under are in the files the kernel enforces them from, found through
``/proc/<pid>/cgroup`` and the host's cgroup mounts. Both hierarchies are supported: this kind
of host mounts v1 (with an empty v2 beside it), most current hosts mount only v2.

::

    v1: cpu.cfs_quota_us / cpu.cfs_period_us, memory.limit_in_bytes,
        memory.memsw.limit_in_bytes (memory + swap), pids.max, memory.oom_control (oom_kill)
    v2: cpu.max, memory.max, memory.swap.max (swap only), pids.max, memory.events (oom_kill)

Every function is pure over paths, so unit tests run them on recorded trees.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Literal

from agentcell.errors import Location
from agentcell.verify.procfs import KernelReadError, MountEntry, read_text

__all__ = [
    "V1_CONTROLLERS",
    "CgroupLimits",
    "CgroupMembership",
    "CgroupMounts",
    "CgroupPlacement",
    "cgroup_mounts",
    "parse_proc_cgroup",
    "place",
    "read_limits",
    "read_procs",
    "read_v1_limits",
    "read_v2_limits",
]

CgroupVersion = Literal["1", "2"]
# The v1 controllers verify reads.
V1_CONTROLLERS = ("cpu", "memory", "pids")
# v1 prints "unlimited" memory as LONG_MAX rounded down to a page; anything this large is it.
_V1_UNLIMITED = 2**62


@dataclass(frozen=True, kw_only=True)
class CgroupMembership:
    """The cgroups of one process, from ``/proc/<pid>/cgroup``."""

    v1: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    """Controller name -> path inside that controller's hierarchy."""
    unified: str | None = None
    """Path in the v2 (unified) hierarchy, when the process has one."""


def parse_proc_cgroup(text: str) -> CgroupMembership:
    """Parse ``/proc/<pid>/cgroup`` (``hierarchy-id:controllers:path`` per line)."""
    v1: dict[str, str] = {}
    unified: str | None = None
    for line in text.splitlines():
        hierarchy, sep, rest = line.partition(":")
        controllers, sep2, path = rest.partition(":")
        if not (sep and sep2):
            continue
        if hierarchy == "0" and not controllers:
            unified = path
            continue
        for controller in controllers.split(","):
            if controller and not controller.startswith("name="):
                v1[controller] = path
    return CgroupMembership(v1=MappingProxyType(v1), unified=unified)


@dataclass(frozen=True, kw_only=True)
class CgroupMounts:
    """Where the host mounts each cgroup hierarchy."""

    v1: Mapping[str, Path] = field(default_factory=lambda: MappingProxyType({}))
    """Controller -> mount point (``cpu,cpuacct`` mounted once serves both)."""
    unified: Path | None = None
    unified_controllers: tuple[str, ...] = ()
    """Controllers enabled in the v2 hierarchy (``cgroup.controllers`` at its root)."""


def cgroup_mounts(entries: Iterable[MountEntry], *, root: Path = Path("/")) -> CgroupMounts:
    """The cgroup hierarchies among a mount table (the host's own ``/proc/self/mountinfo``).

    ``root`` prefixes every mount point, so a recorded tree stands in for ``/``.
    """
    v1: dict[str, Path] = {}
    unified: Path | None = None
    for entry in entries:
        where = root / entry.mount_point.lstrip("/")
        if entry.fstype == "cgroup":
            for option in entry.super_options:
                if option in ("rw", "ro") or option.startswith("name=") or "=" in option:
                    continue
                # A bind of a sub-cgroup (a container's view) is not the hierarchy root.
                if entry.root == "/":
                    v1.setdefault(option, where)
        elif entry.fstype == "cgroup2" and entry.root == "/" and unified is None:
            unified = where
    controllers: tuple[str, ...] = ()
    if unified is not None:
        try:
            controllers = tuple((unified / "cgroup.controllers").read_text().split())
        except OSError:
            controllers = ()
    return CgroupMounts(v1=MappingProxyType(v1), unified=unified, unified_controllers=controllers)


@dataclass(frozen=True, kw_only=True)
class CgroupPlacement:
    """The directories that hold one process's limits, and which cgroup version they are."""

    version: CgroupVersion
    directories: Mapping[str, Path]
    """v1: controller -> directory; v2: the single directory under key ``unified``."""


def place(membership: CgroupMembership, mounts: CgroupMounts) -> CgroupPlacement:
    """Find the directories of a process's cgroups.

    v1 wins when the process is in v1 memory/pids/cpu hierarchies that the host mounts (a
    hybrid host keeps an empty v2 beside them); otherwise the unified hierarchy is used.

    Raises:
        KernelReadError: neither hierarchy holds the process's controllers.
    """
    v1_dirs = {
        controller: mounts.v1[controller] / membership.v1[controller].lstrip("/")
        for controller in V1_CONTROLLERS
        if controller in membership.v1 and controller in mounts.v1
    }
    if v1_dirs:
        return CgroupPlacement(version="1", directories=MappingProxyType(v1_dirs))
    if membership.unified is not None and mounts.unified is not None:
        directory = mounts.unified / membership.unified.lstrip("/")
        return CgroupPlacement(version="2", directories=MappingProxyType({"unified": directory}))
    raise KernelReadError(
        "the process is in no cgroup hierarchy this host mounts",
        fix="check /proc/<pid>/cgroup and the cgroup mounts in /proc/self/mountinfo",
    )


@dataclass(frozen=True, kw_only=True)
class CgroupLimits:
    """Limits read back from the cgroup files. None means unlimited, except where noted."""

    version: CgroupVersion
    cpu_quota_us: int | None
    cpu_period_us: int | None
    memory_bytes: int | None
    memory_swap_bytes: int | None
    """Memory plus swap, as Docker and the spec count it (v2: memory.max + memory.swap.max)."""
    swap_accounting: bool
    """Whether the kernel accounts swap at all (v1 memory.memsw.*, v2 memory.swap.max)."""
    pids_max: int | None
    oom_kills: int | None
    """OOM kills in this cgroup so far; None when the kernel does not count them."""
    sources: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    """Limit name -> the file it was read from."""

    @property
    def cpus(self) -> float | None:
        """CPU limit in cores (quota / period), None when unlimited."""
        if self.cpu_quota_us is None or not self.cpu_period_us:
            return None
        return self.cpu_quota_us / self.cpu_period_us


def _number(path: Path, *, unlimited: tuple[str, ...] = ("max",)) -> int | None:
    text = read_text(path).strip()
    if text in unlimited:
        return None
    try:
        return int(text)
    except ValueError as exc:
        raise KernelReadError(
            f"{path} holds {text!r}, not a number", where=Location(file=str(path))
        ) from exc


def _keyed(path: Path, key: str) -> int | None:
    """The value of ``key`` in a flat-keyed file such as memory.events; None if absent."""
    try:
        text = read_text(path)
    except KernelReadError:
        return None
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name == key:
            return int(value)
    return None


def read_v1_limits(directories: Mapping[str, Path]) -> CgroupLimits:
    """Limits from v1 controller directories (controller -> the process's directory).

    Raises:
        KernelReadError: a controller directory or limit file is missing or unreadable.
    """
    cpu, memory, pids = (directories.get(name) for name in V1_CONTROLLERS)
    if cpu is None or memory is None or pids is None:
        missing = [name for name in V1_CONTROLLERS if name not in directories]
        raise KernelReadError(
            f"the process is in no v1 {', '.join(missing)} cgroup",
            fix="mount the cpu, memory and pids controllers (scripts/setup.sh checks this)",
        )
    quota = _number(cpu / "cpu.cfs_quota_us", unlimited=("-1",))
    period = _number(cpu / "cpu.cfs_period_us")
    memory_limit = _number(memory / "memory.limit_in_bytes")
    memsw_file = memory / "memory.memsw.limit_in_bytes"
    swap_accounting = memsw_file.exists()
    memsw = _number(memsw_file) if swap_accounting else None
    oom_kills = _keyed(memory / "memory.oom_control", "oom_kill")
    return CgroupLimits(
        version="1",
        cpu_quota_us=quota,
        cpu_period_us=period,
        memory_bytes=None
        if memory_limit is None or memory_limit >= _V1_UNLIMITED
        else memory_limit,
        memory_swap_bytes=None if memsw is None or memsw >= _V1_UNLIMITED else memsw,
        swap_accounting=swap_accounting,
        pids_max=_number(pids / "pids.max"),
        oom_kills=oom_kills,
        sources=MappingProxyType(
            {
                "cpu": f"{cpu / 'cpu.cfs_quota_us'}, {cpu / 'cpu.cfs_period_us'}",
                "memory": str(memory / "memory.limit_in_bytes"),
                "memory-swap": str(memsw_file),
                "pids": str(pids / "pids.max"),
                "oom": str(memory / "memory.oom_control"),
            }
        ),
    )


def read_v2_limits(directory: Path) -> CgroupLimits:
    """Limits from a v2 cgroup directory.

    A limit file that is absent because its controller is not enabled for the cgroup reads as
    unlimited, which is what the kernel enforces then.

    Raises:
        KernelReadError: the directory is missing or a present file is unreadable.
    """
    if not directory.is_dir():
        raise KernelReadError(
            f"cgroup directory {directory} does not exist",
            where=Location(file=str(directory)),
            fix="check that the cell is running (`agentcell ps`)",
        )
    quota: int | None = None
    period: int | None = None
    cpu_max = directory / "cpu.max"
    if cpu_max.exists():
        raw_quota, _, raw_period = read_text(cpu_max).strip().partition(" ")
        quota = None if raw_quota == "max" else int(raw_quota)
        period = int(raw_period) if raw_period else None
    memory_file = directory / "memory.max"
    swap_file = directory / "memory.swap.max"
    memory_limit = _number(memory_file) if memory_file.exists() else None
    swap_accounting = swap_file.exists()
    swap = _number(swap_file) if swap_accounting else None
    if memory_limit is None:
        memory_swap = None
    elif swap_accounting:
        memory_swap = None if swap is None else memory_limit + swap
    else:
        memory_swap = None
    pids_file = directory / "pids.max"
    return CgroupLimits(
        version="2",
        cpu_quota_us=quota,
        cpu_period_us=period,
        memory_bytes=memory_limit,
        memory_swap_bytes=memory_swap,
        swap_accounting=swap_accounting,
        pids_max=_number(pids_file) if pids_file.exists() else None,
        oom_kills=_keyed(directory / "memory.events", "oom_kill"),
        sources=MappingProxyType(
            {
                "cpu": str(cpu_max),
                "memory": str(memory_file),
                "memory-swap": f"{memory_file} + {swap_file}",
                "pids": str(pids_file),
                "oom": str(directory / "memory.events"),
            }
        ),
    )


def read_limits(placement: CgroupPlacement) -> CgroupLimits:
    """The limits of a placed cgroup, by its version.

    Raises:
        KernelReadError: a limit file is missing or unreadable.
    """
    if placement.version == "1":
        return read_v1_limits(placement.directories)
    return read_v2_limits(placement.directories["unified"])


def read_procs(placement: CgroupPlacement) -> tuple[int, ...]:
    """Every process in the cgroup (``cgroup.procs`` of the pids or unified directory).

    Raises:
        KernelReadError: the file cannot be read.
    """
    directory = placement.directories.get("pids") or next(iter(placement.directories.values()))
    text = read_text(directory / "cgroup.procs")
    return tuple(int(line) for line in text.split() if line.isdigit())
