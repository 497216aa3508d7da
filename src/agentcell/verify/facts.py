"""What verify reads about one running cell, and where it read each part.

The runtime layer says which container to look at (:class:`CellTarget`: its host pid, what the
engine recorded, and for gVisor the sandbox's own view read through an exec). :func:`observe`
then reads the kernel's files on the host. Nothing here talks to an engine.

Where each fact comes from depends on the runtime:

=============  =======================================  ======================================
fact           runc / crun                              runsc (gVisor)
=============  =======================================  ======================================
uid            /proc/<pid>/status of every process      ``runsc ps`` (gVisor's process table,
               in the cell's cgroup                     asked from the host)
gid, caps,     /proc/<pid>/status                       the OCI spec runsc keeps in its state
nnp                                                     file (what it was handed: configured)
seccomp        /proc/<pid>/status, and that of a        the sentry's own filter on the host;
               process started by ``docker exec``       exec'd processes are not filtered
mounts         /proc/<pid>/mountinfo                    the OCI spec in runsc's state file
cgroups        host cgroup files                        host cgroup files (of the sandbox)
namespaces     /proc/<pid>/ns vs the host's             same, for the sandbox process
network        /proc/<pid>/net (the cell's netns)       same (the sandbox's netns)
runtime        the runtime's state dir on the host      state dir + sandbox process argv
=============  =======================================  ======================================

Under runsc, what gVisor's /proc says inside the cell is read by the image's own ``python3``
(``assets/probe/snapshot.py`` over an exec), so an image can print anything there. Those
readings have the basis ``image``: they can turn a check into a mismatch, never into verified.
"""

from __future__ import annotations

import json
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
    "RuntimeRecord",
    "SandboxProcess",
    "SandboxView",
    "identify_runtime",
    "observe",
    "parse_runsc_ps",
    "parse_runtime_record",
    "read_cell_cgroup",
    "runsc_state_file",
]

Basis = Literal["kernel", "sandbox", "host", "image", "engine"]
"""Where a fact was read: the host kernel's files; gVisor's kernel, asked from the host
(``runsc ps``); other host state (a runtime's state directory and the OCI spec it keeps); what
the image's own binaries printed inside the cell (untrusted); or only the engine's record."""

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
    self_status: str | None = None
    """The exec'd reader's own /proc/self/status: how gVisor treats a process started by exec."""


@dataclass(frozen=True, kw_only=True)
class RuntimeRecord:
    """What the OCI runtime was handed for the cell: the ``config.json`` of its bundle, which
    runsc keeps in its own state file on the host. A record, not the kernel: "configured"."""

    uid: int
    gid: int
    additional_gids: tuple[int, ...]
    no_new_privileges: bool
    capabilities: Mapping[str, frozenset[str]]
    """OCI capability set (``bounding``, ``effective``, ...) -> names without ``CAP_``."""
    readonly_root: bool
    mounts: tuple[MountEntry, ...]
    """The spec's mounts, shaped as mountinfo entries so the same comparison judges both."""
    seccomp: bool
    """Whether the spec holds a seccomp profile for runsc to apply (``--oci-seccomp``)."""


@dataclass(frozen=True, kw_only=True)
class SandboxProcess:
    """One line of ``runsc ps``: a process in gVisor's own process table."""

    pid: int
    uid: int
    command: str


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
    sandbox_ps: str | None = None
    """The output of ``runsc ps`` for the container, run on the host (gVisor only)."""
    sandbox_ps_error: str | None = None
    exec_status: str | None = None
    """The host's /proc/<pid>/status of a process the engine started by exec (runc/crun)."""
    exec_pid: int = 0
    exec_error: str | None = None
    """Why no exec'd process could be read."""

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
    exec_process: Reading[ProcStatus]
    """A process started by ``docker exec``: host /proc (runc/crun), the image's word (runsc)."""
    record: Reading[RuntimeRecord] | None = None
    """The OCI spec runsc was handed (gVisor only)."""
    sandbox_ps: Reading[tuple[SandboxProcess, ...]] | None = None
    """gVisor's process table from ``runsc ps`` (gVisor only)."""


def identify_runtime(state_root: Path, container_id: str) -> str | None:
    """The OCI runtime that created a container, from the state it keeps on the host.

    runc writes ``<id>/state.json``, crun ``<id>/status``, runsc ``<id>_sandbox:<id>.state``.
    """
    directory = state_root / container_id
    if (directory / "state.json").exists():
        return "runc"
    if (directory / "status").exists():
        return "crun"
    if runsc_state_file(state_root, container_id).exists():
        return "runsc"
    return None


def runsc_state_file(state_root: Path, container_id: str) -> Path:
    """Where runsc keeps a container's state, including the OCI spec it was handed."""
    return state_root / f"{container_id}_sandbox:{container_id}.state"


def parse_runtime_record(data: object) -> RuntimeRecord:
    """The facts verify compares from an OCI runtime spec (``config.json``).

    Raises:
        ValueError: the document is not shaped like an OCI runtime spec.
    """
    if not isinstance(data, dict):
        raise ValueError("the OCI spec is not a JSON object")
    process = data.get("process")
    root = data.get("root") or {}
    linux = data.get("linux") or {}
    if not isinstance(process, dict) or not isinstance(process.get("user"), dict):
        raise ValueError("the OCI spec has no process.user")
    user = process["user"]
    caps = process.get("capabilities") or {}
    try:
        capabilities = {
            kind: frozenset(str(name).removeprefix("CAP_") for name in caps.get(kind) or ())
            for kind in ("bounding", "effective", "inheritable", "permitted", "ambient")
        }
        mounts = [
            MountEntry(
                mount_id=0,
                parent_id=0,
                device="",
                root=str(mount.get("source") or ""),
                mount_point=str(mount["destination"]),
                mount_options=frozenset(_mount_flags(mount.get("options") or [])),
                fstype=str(mount.get("type") or "bind"),
                source=str(mount.get("source") or ""),
                super_options=MappingProxyType(_size_option(mount.get("options") or [])),
            )
            for mount in data.get("mounts") or []
        ]
        readonly_root = bool(root.get("readonly"))
        mounts.insert(
            0,
            MountEntry(
                mount_id=0,
                parent_id=0,
                device="",
                root="/",
                mount_point="/",
                mount_options=frozenset({"ro" if readonly_root else "rw"}),
                fstype="rootfs",
                source=str(root.get("path") or ""),
            ),
        )
        return RuntimeRecord(
            uid=int(user["uid"]),
            gid=int(user["gid"]),
            additional_gids=tuple(int(gid) for gid in user.get("additionalGids") or ()),
            no_new_privileges=bool(process.get("noNewPrivileges")),
            capabilities=MappingProxyType(capabilities),
            readonly_root=readonly_root,
            mounts=tuple(mounts),
            seccomp=bool(linux.get("seccomp")),
        )
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise ValueError(f"the OCI spec is malformed: {exc!r}") from exc


def _mount_flags(options: list[str]) -> set[str]:
    flags = {str(option) for option in options if "=" not in str(option)}
    # An OCI mount is read-write unless it says ro, as in mountinfo.
    return flags if "ro" in flags else flags | {"rw"}


def _size_option(options: list[str]) -> dict[str, str | None]:
    for option in options:
        key, sep, value = str(option).partition("=")
        if sep and key == "size":
            return {"size": value}
    return {}


def parse_runsc_ps(text: str) -> tuple[SandboxProcess, ...]:
    """The processes of ``runsc ps`` (its table: UID PID PPID C TTY STIME TIME CMD).

    Raises:
        ValueError: the output is not that table.
    """
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines or lines[0].split()[:2] != ["UID", "PID"]:
        raise ValueError("runsc ps printed no process table")
    processes = []
    for line in lines[1:]:
        parts = line.split(None, 7)
        if len(parts) < 8:
            raise ValueError(f"runsc ps printed an unexpected line: {line[:80]!r}")
        processes.append(SandboxProcess(pid=int(parts[1]), uid=int(parts[0]), command=parts[7]))
    return tuple(processes)


def observe(target: CellTarget, paths: HostPaths | None = None) -> Observation:
    """Read everything verify compares, from the host's kernel (and gVisor's, for runsc)."""
    paths = paths or HostPaths()
    pid = target.host_pid
    pid_dir = paths.proc / str(pid)

    runtime = _runtime(target, paths)
    host_process = _read(lambda: read_status(paths.proc, pid), f"{pid_dir}/status", "kernel")
    limits, cgroup_procs = read_cell_cgroup(paths, pid)
    record: Reading[RuntimeRecord] | None = None
    sandbox_ps: Reading[tuple[SandboxProcess, ...]] | None = None
    if target.sandboxed:
        processes = _sandbox_processes(target)
        mounts = _sandbox_read(
            target, lambda view: parse_mountinfo(view.mountinfo or ""), "/proc/1/mountinfo"
        )
        masked: Reading[Mapping[str, bool]] = _sandbox_read(
            target, lambda view: view.present, "stat of masked /proc paths"
        )
        exec_process = _sandbox_read(
            target,
            lambda view: parse_status(view.self_status or "", pid=0),
            "/proc/self/status of an exec'd process",
        )
        record = _runsc_record(paths, target.container_id)
        sandbox_ps = _runsc_ps(target)
    else:
        processes = _processes(paths, pid, cgroup_procs)
        mounts = _read(lambda: read_mountinfo(paths.proc, pid), f"{pid_dir}/mountinfo", "kernel")
        masked = Reading(value=None, source=f"{pid_dir}/mountinfo", basis="kernel")
        exec_process = _exec_process(target, paths)
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
        exec_process=exec_process,
        record=record,
        sandbox_ps=sandbox_ps,
    )


def _runsc_record(paths: HostPaths, container_id: str) -> Reading[RuntimeRecord]:
    state = runsc_state_file(paths.runtime_state, container_id)
    source = f"{state} (the OCI spec runsc was handed)"
    try:
        data = json.loads(read_text(state))
        return Reading(
            value=parse_runtime_record(data.get("spec") if isinstance(data, dict) else None),
            source=source,
            basis="host",
        )
    except KernelReadError as exc:
        return Reading(value=None, source=source, basis="host", error=exc.what)
    except ValueError as exc:  # json.JSONDecodeError is one
        return Reading(value=None, source=source, basis="host", error=str(exc))


def _runsc_ps(target: CellTarget) -> Reading[tuple[SandboxProcess, ...]]:
    source = "runsc ps (gVisor's process table, asked from the host)"
    if target.sandbox_ps is None:
        return Reading(
            value=None,
            source=source,
            basis="sandbox",
            error=target.sandbox_ps_error or "runsc ps was not run",
        )
    try:
        return Reading(value=parse_runsc_ps(target.sandbox_ps), source=source, basis="sandbox")
    except ValueError as exc:
        return Reading(value=None, source=source, basis="sandbox", error=str(exc))


def _exec_process(target: CellTarget, paths: HostPaths) -> Reading[ProcStatus]:
    source = f"{paths.proc}/{target.exec_pid or '<pid>'}/status of a process started by exec"
    if target.exec_status is None:
        error = target.exec_error or "no process was started by exec"
        return Reading(value=None, source=source, basis="kernel", error=error)
    try:
        status = parse_status(target.exec_status, pid=target.exec_pid)
    except ValueError as exc:
        return Reading(value=None, source=source, basis="kernel", error=str(exc))
    return Reading(value=status, source=source, basis="kernel")


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
    source = "/proc/<pid>/status inside the gVisor sandbox, as the image's python3 read it"
    view = target.sandbox
    if view is None:
        return Reading(value=None, source=source, basis="image", error=target.sandbox_error)
    statuses = []
    for pid, text in sorted(view.statuses.items()):
        try:
            statuses.append(parse_status(text, pid=pid))
        except ValueError:
            continue
    if not statuses:
        return Reading(value=None, source=source, basis="image", error="no process status read")
    return Reading(value=tuple(statuses), source=source, basis="image")


def _sandbox_read(target: CellTarget, reader: Callable[[SandboxView], T], what: str) -> Reading[T]:
    source = f"{what} inside the gVisor sandbox, as the image's python3 read it"
    view = target.sandbox
    if view is None:
        return Reading(value=None, source=source, basis="image", error=target.sandbox_error)
    try:
        return Reading(value=reader(view), source=source, basis="image")
    except ValueError as exc:
        return Reading(value=None, source=source, basis="image", error=str(exc))
