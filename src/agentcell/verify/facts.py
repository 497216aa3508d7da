"""What verify reads about one running cell, and where it read each part.

The runtime layer says which container to look at (:class:`CellTarget`: its host pid, what the
engine recorded, and for gVisor the sandbox's own view read through an exec). :func:`observe`
then reads the kernel's files on the host. Nothing here talks to an engine.

Where each fact comes from depends on the runtime:

=============  =======================================  ======================================
fact           runc / crun                              runsc (gVisor)
=============  =======================================  ======================================
uid, caps      /proc/<pid>/status of every process      the sandbox's /proc (gVisor's kernel)
               in the cell's cgroup
seccomp        /proc/<pid>/status                       the sentry's own filter on the host;
                                                        the spec's profile only with
                                                        --oci-seccomp
mounts         /proc/<pid>/mountinfo                    the sandbox's /proc/1/mountinfo
cgroups        host cgroup files                        host cgroup files (of the sandbox)
namespaces     /proc/<pid>/ns vs the host's             same, for the sandbox process
network        /proc/<pid>/net (the cell's netns)       same (the sandbox's netns)
runtime        the runtime's state dir on the host      state dir + sandbox process argv
=============  =======================================  ======================================
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Generic, Literal, TypeVar

from agentcell.verify.cgroups import (
    CgroupLimits,
    cgroup_mounts,
    parse_proc_cgroup,
    place,
    read_limits,
    read_procs,
)
from agentcell.verify.procfs import (
    KernelReadError,
    MountEntry,
    ProcStatus,
    Route,
    active_lsms,
    parse_interfaces,
    parse_ipv6_routes,
    parse_mountinfo,
    parse_routes,
    parse_status,
    read_cmdline,
    read_lsm_label,
    read_mountinfo,
    read_namespaces,
    read_status,
    read_text,
)

__all__ = [
    "Basis",
    "CellTarget",
    "EngineRecord",
    "HostPaths",
    "Observation",
    "Reading",
    "SandboxView",
    "identify_runtime",
    "observe",
    "read_cell_cgroup",
]

Basis = Literal["kernel", "sandbox", "host", "engine"]
"""Where a fact was read: the host kernel's files; gVisor's kernel inside the sandbox; other
host state (a runtime's state directory); or only the engine's record (configured, unproven)."""

T = TypeVar("T")

# Docker 20.10 runs runc, crun and runsc with this state root (the containerd shim's default).
DOCKER_RUNTIME_STATE = Path("/run/docker/runtime-runc/moby")


@dataclass(frozen=True, kw_only=True)
class HostPaths:
    """Where this host keeps the files verify reads; tests point them at recorded trees."""

    proc: Path = Path("/proc")
    sys: Path = Path("/sys")
    root: Path = Path("/")
    runtime_state: Path = DOCKER_RUNTIME_STATE


@dataclass(frozen=True, kw_only=True)
class EngineRecord:
    """What the engine says it configured (``docker inspect``): a claim, not a proof."""

    runtime: str
    runtime_args: tuple[str, ...] = ()
    seccomp_profile: str | None = None
    """The inline profile JSON, ``unconfined``, or None for the engine's default profile."""
    privileged: bool = False


@dataclass(frozen=True, kw_only=True)
class SandboxView:
    """Files as a sandboxed runtime (gVisor) shows them inside the cell, read through an exec.

    gVisor's /proc describes its own user-space kernel, so this is the truthful view of the
    cell's processes and mounts, while the host's /proc shows only the sandbox process.
    """

    statuses: Mapping[int, str] = field(default_factory=lambda: MappingProxyType({}))
    mountinfo: str | None = None
    route: str | None = None
    ipv6_route: str | None = None
    dev: str | None = None
    present: Mapping[str, bool] = field(default_factory=lambda: MappingProxyType({}))
    no_new_privs: bool | None = None
    """prctl(PR_GET_NO_NEW_PRIVS) of the exec'd reader, which runs with the cell's settings."""


@dataclass(frozen=True, kw_only=True)
class CellTarget:
    """The container verify looks at, as the runtime layer found it."""

    name: str
    container: str
    container_id: str
    host_pid: int
    engine: EngineRecord
    sandbox: SandboxView | None = None
    sandbox_error: str | None = None
    """Why the sandbox view could not be read (gVisor only)."""

    @property
    def sandboxed(self) -> bool:
        """Whether the engine runs this cell under gVisor."""
        return self.engine.runtime == "runsc"


@dataclass(frozen=True, kw_only=True)
class Reading(Generic[T]):
    """A fact, or why it could not be read; and where it was read."""

    value: T | None
    source: str
    basis: Basis
    error: str | None = None


@dataclass(frozen=True, kw_only=True)
class Observation:
    """Everything verify read about one cell."""

    target: CellTarget
    paths: HostPaths
    runtime: Reading[str]
    processes: Reading[tuple[ProcStatus, ...]]
    sandbox_process: Reading[ProcStatus]
    """The host-side process of the cell: the container's init (runc/crun) or gVisor's sandbox."""
    mounts: Reading[tuple[MountEntry, ...]]
    limits: Reading[CgroupLimits]
    namespaces: Reading[Mapping[str, str]]
    host_namespaces: Mapping[str, str]
    interfaces: Reading[tuple[str, ...]]
    routes: Reading[tuple[Route, ...]]
    lsms: tuple[str, ...]
    lsm_source: str
    lsm_label: str | None
    masked_present: Reading[Mapping[str, bool]]


def identify_runtime(state_root: Path, container_id: str) -> str | None:
    """The OCI runtime that created a container, from the state it keeps on the host.

    runc writes ``<id>/state.json``, crun ``<id>/status``, runsc ``<id>_sandbox:<id>.state``.
    """
    directory = state_root / container_id
    if (directory / "state.json").exists():
        return "runc"
    if (directory / "status").exists():
        return "crun"
    if (state_root / f"{container_id}_sandbox:{container_id}.state").exists():
        return "runsc"
    return None


def observe(target: CellTarget, paths: HostPaths | None = None) -> Observation:
    """Read everything verify compares, from the host's kernel (and gVisor's, for runsc)."""
    paths = paths or HostPaths()
    pid = target.host_pid
    pid_dir = paths.proc / str(pid)

    runtime = _runtime(target, paths)
    host_process = _read(lambda: read_status(paths.proc, pid), f"{pid_dir}/status", "kernel")
    limits, cgroup_procs = read_cell_cgroup(paths, pid)
    if target.sandboxed:
        processes = _sandbox_processes(target)
        mounts = _sandbox_read(
            target, lambda view: parse_mountinfo(view.mountinfo or ""), "/proc/1/mountinfo"
        )
        masked: Reading[Mapping[str, bool]] = _sandbox_read(
            target, lambda view: view.present, "stat of masked /proc paths"
        )
    else:
        processes = _processes(paths, pid, cgroup_procs)
        mounts = _read(lambda: read_mountinfo(paths.proc, pid), f"{pid_dir}/mountinfo", "kernel")
        masked = Reading(value=None, source=f"{pid_dir}/mountinfo", basis="kernel")
    namespaces: Reading[Mapping[str, str]] = Reading(
        value=MappingProxyType(read_namespaces(paths.proc, pid)),
        source=f"{pid_dir}/ns/*",
        basis="kernel",
    )
    host_namespaces = read_namespaces(paths.proc, "self")
    interfaces = _read(
        lambda: parse_interfaces(read_text(pid_dir / "net" / "dev")), f"{pid_dir}/net/dev", "kernel"
    )
    routes = _read(
        lambda: (
            parse_routes(read_text(pid_dir / "net" / "route"))
            + _optional_ipv6(pid_dir / "net" / "ipv6_route")
        ),
        f"{pid_dir}/net/route, ipv6_route",
        "kernel",
    )
    lsms, lsm_source = active_lsms(paths.sys)
    try:
        label = read_lsm_label(paths.proc, pid)
    except KernelReadError:
        label = None
    return Observation(
        target=target,
        paths=paths,
        runtime=runtime,
        processes=processes,
        sandbox_process=host_process,
        mounts=mounts,
        limits=limits,
        namespaces=namespaces,
        host_namespaces=MappingProxyType(host_namespaces),
        interfaces=interfaces,
        routes=routes,
        lsms=lsms,
        lsm_source=lsm_source,
        lsm_label=label,
        masked_present=masked,
    )


def _read(reader: Callable[[], T], source: str, basis: Basis) -> Reading[T]:
    try:
        return Reading(value=reader(), source=source, basis=basis)
    except KernelReadError as exc:
        return Reading(value=None, source=source, basis=basis, error=exc.what)
    except ValueError as exc:
        return Reading(value=None, source=source, basis=basis, error=str(exc))


def _optional_ipv6(path: Path) -> tuple[Route, ...]:
    try:
        return parse_ipv6_routes(read_text(path))
    except KernelReadError:
        return ()  # a kernel without IPv6 has no such file, and so no IPv6 route


def _runtime(target: CellTarget, paths: HostPaths) -> Reading[str]:
    source = str(paths.runtime_state / target.container_id)
    seen = identify_runtime(paths.runtime_state, target.container_id)
    if seen == "runsc":
        try:
            argv = read_cmdline(paths.proc, target.host_pid)
        except KernelReadError:
            argv = ()
        if argv and argv[0] == "runsc-sandbox":
            source += f"; /proc/{target.host_pid}/cmdline (runsc-sandbox)"
    if seen is None:
        return Reading(
            value=None,
            source=source,
            basis="host",
            error=f"no runc, crun or runsc state for the container under {paths.runtime_state}",
        )
    return Reading(value=seen, source=source, basis="host")


def read_cell_cgroup(paths: HostPaths, pid: int) -> tuple[Reading[CgroupLimits], tuple[int, ...]]:
    """The cgroup limits of the cell whose host process is ``pid``, and its processes."""
    source = f"{paths.proc / str(pid) / 'cgroup'} -> cgroupfs"
    try:
        membership = parse_proc_cgroup(read_text(paths.proc / str(pid) / "cgroup"))
        mounts = cgroup_mounts(read_mountinfo(paths.proc, "self"), root=paths.root)
        placement = place(membership, mounts)
        limits = read_limits(placement)
        procs = read_procs(placement)
    except KernelReadError as exc:
        return Reading(value=None, source=source, basis="kernel", error=exc.what), (pid,)
    return Reading(value=limits, source=source, basis="kernel"), procs or (pid,)


def _processes(
    paths: HostPaths, pid: int, procs: tuple[int, ...]
) -> Reading[tuple[ProcStatus, ...]]:
    statuses = []
    for member in procs:
        try:
            statuses.append(read_status(paths.proc, member))
        except KernelReadError:
            continue  # exited between listing and reading
    source = f"{paths.proc}/<pid>/status for pids {', '.join(map(str, procs))}"
    if not statuses:
        return Reading(
            value=None, source=source, basis="kernel", error=f"no process of pid {pid} readable"
        )
    return Reading(value=tuple(statuses), source=source, basis="kernel")


def _sandbox_processes(target: CellTarget) -> Reading[tuple[ProcStatus, ...]]:
    source = "/proc/<pid>/status inside the gVisor sandbox"
    view = target.sandbox
    if view is None:
        return Reading(value=None, source=source, basis="sandbox", error=target.sandbox_error)
    statuses = []
    for pid, text in sorted(view.statuses.items()):
        try:
            statuses.append(parse_status(text, pid=pid))
        except ValueError:
            continue
    if not statuses:
        return Reading(value=None, source=source, basis="sandbox", error="no process status read")
    return Reading(value=tuple(statuses), source=source, basis="sandbox")


def _sandbox_read(target: CellTarget, reader: Callable[[SandboxView], T], what: str) -> Reading[T]:
    source = f"{what} inside the gVisor sandbox"
    view = target.sandbox
    if view is None:
        return Reading(value=None, source=source, basis="sandbox", error=target.sandbox_error)
    try:
        return Reading(value=reader(view), source=source, basis="sandbox")
    except ValueError as exc:
        return Reading(value=None, source=source, basis="sandbox", error=str(exc))
