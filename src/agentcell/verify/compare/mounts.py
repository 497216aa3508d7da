"""The checks of the cell's mounts: rootfs, tmpfs, host mounts, engine sockets, agentcell's own
mounts, mounts nobody asked for, and the engine's masks over /proc and /sys."""

from __future__ import annotations

from collections.abc import Sequence

from agentcell.cell.paths import CELL_RUN_DIR, DOCKER_SOCKET, ENGINE_SOCKET_NAMES
from agentcell.spec.model import AgentSpec
from agentcell.spec.units import format_bytes
from agentcell.verify.compare.check import Check
from agentcell.verify.facts import Observation, Reading
from agentcell.verify.procfs import MountEntry, parse_size

__all__ = [
    "AGENTCELL_MOUNT_PREFIX",
    "DOCKER_MASKED_PATHS",
    "DOCKER_READONLY_PATHS",
    "mount_checks",
]

# What Docker 20.10 masks and makes read-only in every non-privileged container's /proc and /sys.
DOCKER_MASKED_PATHS = (
    "/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware",
)  # fmt: skip

DOCKER_READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")

# Mounts every engine-made container has besides what the spec asks for.
_ENGINE_MOUNTS = frozenset(
    {
        "/", "/proc", "/dev", "/dev/pts", "/dev/mqueue", "/dev/shm", "/sys", "/sys/fs/cgroup",
        "/etc/resolv.conf", "/etc/hostname", "/etc/hosts",
    }
)  # fmt: skip

_ENGINE_MOUNT_PREFIXES = ("/sys/fs/cgroup/",)

# agentcell mounts a cell's identity and the control-plane socket under this directory;
# they are expected although the spec does not list them.
AGENTCELL_MOUNT_PREFIX = CELL_RUN_DIR + "/"


def _topmost(entries: Sequence[MountEntry], mount_point: str) -> MountEntry | None:
    """The mount visible at a path: the last one mounted there."""
    found = [entry for entry in entries if entry.mount_point == mount_point]
    return found[-1] if found else None


def _describe(entry: MountEntry) -> str:
    state = "ro" if entry.read_only else "rw"
    size = parse_size(entry.super_options.get("size"))
    flags = [flag for flag in ("noexec", "nosuid", "nodev") if entry.flag(flag)]
    parts = [entry.fstype, state, *flags]
    if size is not None:
        parts.append(f"size={format_bytes(size)}")
    return " ".join(parts)


def mount_checks(
    spec: AgentSpec,
    observation: Observation,
    reading: Reading[tuple[MountEntry, ...]] | None = None,
) -> list[Check]:
    """The mount checks, over the cell's mountinfo or (``reading``) another list of mounts."""
    own_reading = reading is None
    reading = reading or observation.mounts
    entries = reading.value
    basis, source = reading.basis, reading.source
    if entries is None:
        expected = "read back"
        return [Check.unknown(id="mounts", title="mounts", expected=expected, reading=reading)]

    checks: list[Check] = []
    root = _topmost(entries, "/")
    want_ro = spec.security.read_only_rootfs
    checks.append(
        Check.judged(
            id="mounts.rootfs",
            title="root filesystem",
            ok=root is not None and (root.read_only or not want_ro),
            expected="ro" if want_ro else "rw allowed",
            observed=_describe(root) if root is not None else "no / mount",
            source=source,
            basis=basis,
        )
    )
    # gVisor's mountinfo (as the image reads it) prints noexec but never nosuid/nodev.
    sandboxed = basis == "image"
    for tmpfs in spec.resources.tmpfs:
        entry = _topmost(entries, tmpfs.path)
        flags = ["noexec"] if not tmpfs.exec else []
        if not sandboxed:
            flags += ["nosuid", "nodev"]
        expected = " ".join(["tmpfs", "rw", *flags, f"size={format_bytes(tmpfs.size)}"])
        if entry is None:
            checks.append(
                Check.judged(
                    id=f"mounts.tmpfs:{tmpfs.path}",
                    title=f"tmpfs {tmpfs.path}",
                    ok=False,
                    expected=expected,
                    observed="absent",
                    source=source,
                    basis=basis,
                )
            )
            continue
        size = parse_size(entry.super_options.get("size"))
        ok = (
            entry.fstype == "tmpfs"
            and size == tmpfs.size
            and all(entry.flag(flag) for flag in flags)
        )
        checks.append(
            Check.judged(
                id=f"mounts.tmpfs:{tmpfs.path}",
                title=f"tmpfs {tmpfs.path}",
                ok=ok,
                expected=expected,
                observed=_describe(entry),
                source=source,
                basis=basis,
            )
        )
    for mount in spec.host.mounts:
        entry = _topmost(entries, mount.target)
        expected = f"{mount.source} {'ro' if mount.read_only else 'rw'}"
        if entry is None:
            checks.append(
                Check.judged(
                    id=f"mounts.host:{mount.target}",
                    title=f"host mount {mount.target}",
                    ok=False,
                    expected=expected,
                    observed="absent",
                    source=source,
                    basis=basis,
                )
            )
            continue
        # A recursive bind brings the host's submounts along, and Docker 20.10 makes only the
        # top mount read-only: /sys brings a writable /sys/fs/cgroup/* with it.
        prefix = mount.target.rstrip("/") + "/"
        writable = [
            sub.mount_point
            for sub in entries
            if sub.mount_point.startswith(prefix) and not sub.read_only
        ]
        observed = _describe(entry)
        if writable:
            shown = ", ".join(sorted(set(writable))[:4]) + (
                " ..." if len(set(writable)) > 4 else ""
            )
            observed += f"; {len(set(writable))} submounts rw: {shown}"
        checks.append(
            Check.judged(
                id=f"mounts.host:{mount.target}",
                title=f"host mount {mount.target}",
                ok=not mount.read_only or (entry.read_only and not writable),
                expected=expected + (" (submounts too)" if mount.read_only else ""),
                observed=observed,
                source=source,
                basis=basis,
                why="a recursive bind keeps the host's submounts, and the engine made only the "
                "top one read-only; bind it non-recursively"
                if writable and mount.read_only
                else "a bind mount shows its filesystem, not its host path",
            )
        )
    sockets = [
        entry
        for entry in entries
        if entry.mount_point.endswith(ENGINE_SOCKET_NAMES)
        or entry.root.endswith(ENGINE_SOCKET_NAMES)
    ]
    if spec.host.docker_socket:
        entry = _topmost(entries, DOCKER_SOCKET)
        checks.append(
            Check.judged(
                id="mounts.docker-socket",
                title="engine socket",
                ok=entry is not None and entry.read_only,
                expected=f"{DOCKER_SOCKET} ro (spec: host.docker_socket)",
                observed=_describe(entry) if entry is not None else "absent",
                source=source,
                basis=basis,
                why="read-only does not stop API calls over the socket; prefer a filtering proxy",
            )
        )
    else:
        checks.append(
            Check.judged(
                id="mounts.docker-socket",
                title="engine socket",
                ok=not sockets,
                expected="absent",
                observed=", ".join(entry.mount_point for entry in sockets) or "absent",
                source=source,
                basis=basis,
            )
        )
    own = [entry for entry in entries if entry.mount_point.startswith(AGENTCELL_MOUNT_PREFIX)]
    if own:
        writable = [entry.mount_point for entry in own if not entry.read_only]
        checks.append(
            Check.judged(
                id="mounts.agentcell",
                title="mounts agentcell adds (identity, control-plane socket)",
                ok=not writable,
                expected=f"read-only, under {AGENTCELL_MOUNT_PREFIX}",
                observed="rw: " + ", ".join(writable)
                if writable
                else ", ".join(entry.mount_point for entry in own) + " (ro)",
                source=source,
                basis=basis,
            )
        )
    allowed = set(_ENGINE_MOUNTS) | {t.path for t in spec.resources.tmpfs}
    allowed |= {entry.mount_point for entry in own}
    host_targets = [mount.target for mount in spec.host.mounts]
    if spec.host.docker_socket:
        host_targets.append(DOCKER_SOCKET)
    if not sandboxed:
        allowed |= set(DOCKER_MASKED_PATHS) | set(DOCKER_READONLY_PATHS)
    unexpected = sorted(
        {
            entry.mount_point
            for entry in entries
            if entry.mount_point not in allowed
            and not entry.mount_point.startswith(_ENGINE_MOUNT_PREFIXES)
            and not any(
                entry.mount_point == target
                or entry.mount_point.startswith(target.rstrip("/") + "/")
                for target in host_targets
            )
        }
    )
    checks.append(
        Check.judged(
            id="mounts.unexpected",
            title="mounts the spec does not ask for",
            ok=not unexpected,
            expected="none",
            observed=", ".join(unexpected) or "none",
            source=source,
            basis=basis,
        )
    )
    if own_reading:
        checks.append(_masks(observation, entries))
    return checks


def _masks(observation: Observation, entries: Sequence[MountEntry]) -> Check:
    """Docker's masks over kernel files in /proc and /sys, or gVisor's lack of them."""
    title = "masked and read-only kernel paths"
    expected = "kernel files in /proc and /sys masked, /proc/sys etc. read-only"
    if observation.target.sandboxed:
        present = observation.masked_present
        if present.value is None:
            return Check.unknown(id="mounts.masks", title=title, expected=expected, reading=present)
        shown = sorted(path for path, exists in present.value.items() if exists)
        return Check.judged(
            id="mounts.masks",
            title=title,
            ok=not shown,
            expected="absent from gVisor's /proc",
            observed=", ".join(shown) or "none present",
            source=present.source,
            basis="image",
            why="gVisor's /proc is its own; host kernel files do not exist there",
        )
    problems = []
    for path in DOCKER_MASKED_PATHS:
        entry = _topmost(entries, path)
        if entry is None and _exists_on_host(observation, path):
            problems.append(f"{path} not masked")
    for path in DOCKER_READONLY_PATHS:
        entry = _topmost(entries, path)
        if entry is None:
            if _exists_on_host(observation, path):
                problems.append(f"{path} not read-only")
        elif not entry.read_only:
            problems.append(f"{path} mounted rw")
    return Check.judged(
        id="mounts.masks",
        title=title,
        ok=not problems,
        expected=expected,
        observed="; ".join(problems) or "all masked / read-only",
        source=observation.mounts.source,
        basis="kernel",
        why="privileged containers lose these masks" if problems else "",
    )


def _exists_on_host(observation: Observation, path: str) -> bool:
    """Whether a masked path exists on this kernel at all (the engine masks only those)."""
    paths = observation.paths
    for prefix, root in (("/proc/", paths.proc), ("/sys/", paths.sys)):
        if path.startswith(prefix):
            return (root / path.removeprefix(prefix)).exists()
    return False
