"""What a cell can reach of the cells beside it, read from the host's process table.

Isolation from the host is not isolation from the next cell. Without user namespaces two
cells with the same uid are one user to the kernel: through a host ``/proc`` each can open
the other's ``/proc/<pid>/root``, ``cwd``, ``environ``, ``mem`` and ``fd``, in a host PID
namespace each can signal the other, and they share every per-uid limit (inotify instances,
RLIMIT_NPROC). These checks read every process on the host (``/proc/<pid>/status`` and
``cgroup``), find which container each belongs to, and report:

``cross.uid``        any process outside the cell that runs with one of the cell's uids;
``cross.host-proc``  with a host /proc or host PID namespace: which other cells' processes the
                     cell can see, and whether the kernel lets it into any of them;
``cross.mounts``     mounts that expose agentcell's own state (keys, tokens, sockets), another
                     cell's identity, or an engine socket.

Pure over a file tree (:class:`~agentcell.verify.facts.HostPaths`) and what the engine says
the cell mounts, so it is unit-tested on recorded trees.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from agentcell.cell.paths import ENGINE_SOCKET_NAMES
from agentcell.verify.compare import Check
from agentcell.verify.procfs import KernelReadError, capability_names, read_status, read_text

__all__ = [
    "CellExposure",
    "HostProcess",
    "container_of",
    "neighbour_checks",
    "read_host_processes",
]

# The container's own cgroup is the last 64-hex component of the path: /docker/<id> (cgroupfs
# driver, default parent), /agentcell/<tenant>/<id> (a tenant's parent), or
# /system.slice/docker-<id>.scope (systemd driver).
_CONTAINER_IN_CGROUP = re.compile(r"/(?:docker-)?([0-9a-f]{64})(?:\.scope)?(?:/|$)")
# Per-uid kernel limits two cells with one uid share (the files that show their size).
_PER_UID_LIMITS = (
    ("inotify instances", "sys/fs/inotify/max_user_instances"),
    ("inotify watches", "sys/fs/inotify/max_user_watches"),
)
# What lets a process into another uid's /proc/<pid>/{root,mem,environ,fd} or signal it.
_CROSS_UID_CAPABILITIES = frozenset({"SYS_PTRACE", "DAC_OVERRIDE", "DAC_READ_SEARCH", "KILL"})


@dataclass(frozen=True, kw_only=True)
class HostProcess:
    """One process on the host: who it runs as and which container it belongs to."""

    pid: int
    name: str
    uids: tuple[int, ...]
    """Real, effective, saved and filesystem uid."""
    container_id: str | None
    """The engine container whose cgroup holds it; None for a host process."""
    cap_effective: int | None


@dataclass(frozen=True, kw_only=True)
class CellExposure:
    """What the engine says gives the cell a view of the host and its neighbours."""

    container_id: str
    host_proc_targets: tuple[str, ...]
    """Where the host's /proc is bind-mounted in the cell."""
    host_pid: bool
    """The cell shares the host's PID namespace."""
    bind_sources: tuple[str, ...]
    """Every host path bind-mounted into the cell, as the engine records it."""
    own_sources: tuple[str, ...]
    """Host paths agentcell itself mounted for this cell: its identity, the agents' socket."""
    sandboxed: bool = False
    """The cell runs under gVisor: its processes' uids exist only in the sandbox's kernel."""


def container_of(cgroup_text: str) -> str | None:
    """The container id in a ``/proc/<pid>/cgroup`` file, if the process is in one."""
    for line in cgroup_text.splitlines():
        match = _CONTAINER_IN_CGROUP.search(line.partition(":")[2].partition(":")[2])
        if match:
            return match.group(1)
    return None


def read_host_processes(proc: Path) -> tuple[HostProcess, ...]:
    """Every process under ``proc`` that could be read (a process may end while we read)."""
    found = []
    for entry in sorted(proc.iterdir(), key=lambda path: path.name):
        if not entry.name.isdigit():
            continue
        try:
            status = read_status(proc, entry.name)
            cgroup = read_text(entry / "cgroup")
        except KernelReadError:
            continue
        found.append(
            HostProcess(
                pid=status.pid,
                name=status.name,
                uids=status.uids,
                container_id=container_of(cgroup),
                cap_effective=status.cap_effective,
            )
        )
    return tuple(found)


def neighbour_checks(
    exposure: CellExposure,
    processes: Sequence[HostProcess],
    *,
    cell_names: Mapping[str, str],
    state_dirs: Sequence[str],
    proc: Path,
) -> list[Check]:
    """The cross-cell checks of one cell.

    ``cell_names`` maps container ids to a name to show (``tenant/agent`` for cells);
    ``state_dirs`` are agentcell's own directories on this host.
    """
    mine = [p for p in processes if p.container_id == exposure.container_id]
    others = [p for p in processes if p.container_id != exposure.container_id]
    return [
        _shared_uid(exposure, mine, others, cell_names, proc),
        _host_proc(exposure, mine, others, cell_names),
        _mounts(exposure, state_dirs),
    ]


def _who(process: HostProcess, cell_names: Mapping[str, str]) -> str:
    if process.container_id is None:
        return f"host process {process.pid} ({process.name})"
    owner = cell_names.get(process.container_id, f"container {process.container_id[:12]}")
    return f"{owner} (pid {process.pid})"


def _listed(items: Iterable[str], limit: int = 4) -> str:
    unique = list(dict.fromkeys(items))
    shown = ", ".join(unique[:limit])
    return shown + (f" and {len(unique) - limit} more" if len(unique) > limit else "")


def _per_uid_limits(proc: Path) -> str:
    values = []
    for label, relative in _PER_UID_LIMITS:
        try:
            values.append(f"{label} ({read_text(proc / relative).strip()} per uid)")
        except KernelReadError:
            values.append(label)
    return ", ".join([*values, "processes (RLIMIT_NPROC)", "signals pending"])


def _shared_uid(
    exposure: CellExposure,
    mine: Sequence[HostProcess],
    others: Sequence[HostProcess],
    cell_names: Mapping[str, str],
    proc: Path,
) -> Check:
    title = "no other process shares the cell's host uid"
    source = "host /proc/*/status and /proc/*/cgroup"
    if not mine:
        return Check(
            id="cross.uid",
            title=title,
            status="unknown",
            expected="the cell's own uid",
            observed="no process of the cell on the host",
            source=source,
            basis="kernel",
            why="the cell is not running, or its processes ended while the host was read",
        )
    if exposure.sandboxed:
        # Only gVisor's own processes (sentry, gofer) run on the host; the workload's uid is
        # a uid of the sandbox's kernel, which no host process or other cell can act as.
        return Check(
            id="cross.uid",
            title=title,
            status="verified",
            expected="the cell's own uid",
            observed="the workload runs inside gVisor; its uids are not host uids",
            source=source,
            basis="kernel",
        )
    uids = {uid for process in mine for uid in process.uids}
    sharing = [p for p in others if uids & set(p.uids)]
    shown_uids = "/".join(str(uid) for uid in sorted(uids))
    if not sharing:
        return Check(
            id="cross.uid",
            title=title,
            status="verified",
            expected="the cell's own uid",
            observed=f"uid {shown_uids}: only the cell's {len(mine)} processes run with it",
            source=source,
            basis="kernel",
        )
    return Check(
        id="cross.uid",
        title=title,
        status="mismatch",
        expected="the cell's own uid",
        observed=f"uid {shown_uids} is also {_listed(_who(p, cell_names) for p in sharing)}",
        source=source,
        basis="kernel",
        why="a process with the same uid can open the cell's /proc/<pid>/root, environ, mem "
        "and fd through a host /proc, signal it in a shared PID namespace, and they share the "
        f"per-uid limits: {_per_uid_limits(proc)}",
    )


def _host_proc(
    exposure: CellExposure,
    mine: Sequence[HostProcess],
    others: Sequence[HostProcess],
    cell_names: Mapping[str, str],
) -> Check:
    title = "other cells' processes are out of the cell's reach"
    source = "engine record (mounts, PID mode) and host /proc/*/status"
    views = [*(f"host /proc at {t}" for t in exposure.host_proc_targets)]
    if exposure.host_pid:
        views.append("the host PID namespace")
    if not views:
        return Check(
            id="cross.host-proc",
            title=title,
            status="verified",
            expected="no view of other cells' processes",
            observed="no host /proc mount and a PID namespace of its own",
            source=source,
            basis="kernel",
        )
    uids = {uid for process in mine for uid in process.uids}
    caps = frozenset().union(*(capability_names(p.cap_effective) for p in mine))
    crossing = sorted(caps & _CROSS_UID_CAPABILITIES)
    neighbours = [p for p in others if p.container_id is not None]
    reachable = [p for p in neighbours if crossing or uids & set(p.uids)]
    seen = f"{' and '.join(views)} shows {len(neighbours)} processes of other containers"
    if reachable:
        why = (
            f"the cell holds {', '.join(crossing)}"
            if crossing
            else "they run with the cell's uid, so the kernel's ptrace access check passes"
        )
        return Check(
            id="cross.host-proc",
            title=title,
            status="mismatch",
            expected="no other cell's process shares the cell's uid or yields to its capabilities",
            observed=f"{seen}; reachable: {_listed(_who(p, cell_names) for p in reachable)}",
            source=source,
            basis="kernel",
            why=why + ": their root, cwd, environ, mem and fd are open to the cell",
        )
    return Check(
        id="cross.host-proc",
        title=title,
        status="verified",
        expected="no other cell's process shares the cell's uid or yields to its capabilities",
        observed=f"{seen}; none runs with the cell's uid and the cell holds no capability "
        "that crosses uids, so the kernel refuses their root, cwd, environ, mem, fd and signals",
        source=source,
        basis="kernel",
    )


def _within(path: str, directory: str) -> bool:
    return directory == "/" or path == directory or path.startswith(directory.rstrip("/") + "/")


def _mounts(exposure: CellExposure, state_dirs: Sequence[str]) -> Check:
    title = "no mount exposes agentcell's state, another cell or an engine socket"
    exposed = []
    for raw in exposure.bind_sources:
        source = posixpath.normpath(raw)
        if raw in exposure.own_sources:
            continue
        for directory in state_dirs:
            if _within(source, directory) or _within(directory, source):
                exposed.append(f"{source} (agentcell's {directory})")
                break
        else:
            if source.endswith(ENGINE_SOCKET_NAMES):
                exposed.append(f"{source} (an engine socket)")
    if exposed:
        return Check(
            id="cross.mounts",
            title=title,
            status="mismatch",
            expected="only the cell's own identity and the agents' socket directory",
            observed=f"mounted: {_listed(exposed)}",
            source="engine record (Mounts)",
            basis="engine",
            why="agentcell's state holds every cell's join token and the CA; an engine socket "
            "controls every cell on the host",
        )
    return Check(
        id="cross.mounts",
        title=title,
        status="configured",
        expected="only the cell's own identity and the agents' socket directory",
        observed=f"{len(exposure.bind_sources)} host mounts, none of agentcell's state "
        "or an engine socket",
        source="engine record (Mounts)",
        basis="engine",
        why="read from the engine's record of the mounts; verify's mounts.* checks read mountinfo",
    )
