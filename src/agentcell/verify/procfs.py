"""Readers for what the kernel says about a process: status, mounts, namespaces, network, LSM.

Each reader is a pure function of a filesystem root (``proc_root`` is ``/proc`` on a host, a
directory of recorded files in tests) so the parsing is tested without a kernel. Parsers take
the text of one file; readers open the file and turn OS errors into :class:`KernelReadError`.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from agentcell.errors import HostError, Location
from agentcell.spec.model import CAPABILITY_BITS

__all__ = [
    "CAPABILITY_BITS",
    "NAMESPACES",
    "KernelReadError",
    "MountEntry",
    "ProcStatus",
    "Route",
    "active_lsms",
    "capability_names",
    "default_routes",
    "parse_interfaces",
    "parse_ipv6_routes",
    "parse_mountinfo",
    "parse_routes",
    "parse_size",
    "parse_status",
    "read_cmdline",
    "read_lsm_label",
    "read_mountinfo",
    "read_namespaces",
    "read_status",
    "read_text",
]


# The namespaces verify compares with the host's (time is left out: no engine sets it).
NAMESPACES = ("pid", "net", "ipc", "uts", "user", "cgroup", "mnt")


class KernelReadError(HostError):
    """A kernel file cannot be read or does not say what verify needs."""


def read_text(path: Path) -> str:
    """The text of a procfs/sysfs/cgroupfs file.

    Raises:
        KernelReadError: the file is absent or unreadable.
    """
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError as exc:
        raise KernelReadError(
            f"{path} does not exist", where=Location(file=str(path)), fix=_EXITED
        ) from exc
    except PermissionError as exc:
        raise KernelReadError(
            f"{path} is not readable (permission denied)",
            where=Location(file=str(path)),
            fix="run verify as root on the host that runs the cell",
        ) from exc
    except OSError as exc:
        raise KernelReadError(
            f"cannot read {path}: {exc.strerror}", where=Location(file=str(path))
        ) from exc


_EXITED = "the process may have exited: check that the cell is running (`agentcell ps`)"


# -- /proc/<pid>/status -----------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ProcStatus:
    """The privilege-relevant lines of ``/proc/<pid>/status``.

    A field is None when the kernel did not print its line: gVisor, for one, prints no CapAmb
    or NoNewPrivs, and that is "not shown", not "off".
    """

    pid: int
    name: str
    uids: tuple[int, ...]
    """Real, effective, saved and filesystem uid."""
    gids: tuple[int, ...]
    groups: tuple[int, ...]
    cap_inheritable: int | None
    cap_permitted: int | None
    cap_effective: int | None
    cap_bounding: int | None
    cap_ambient: int | None
    no_new_privs: bool | None
    seccomp_mode: int | None
    """0 disabled, 1 strict, 2 filter."""
    seccomp_filters: int | None


def parse_status(text: str, *, pid: int) -> ProcStatus:
    """Parse the text of ``/proc/<pid>/status``.

    Raises:
        ValueError: a line verify relies on (Uid, Gid) is missing or malformed.
    """
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()

    def ints(key: str) -> tuple[int, ...]:
        raw = fields.get(key)
        if raw is None:
            raise ValueError(f"no {key} line in /proc/{pid}/status")
        return tuple(int(part) for part in raw.split())

    def mask(key: str) -> int | None:
        raw = fields.get(key)
        return int(raw, 16) if raw else None

    def number(key: str) -> int | None:
        raw = fields.get(key)
        return int(raw) if raw else None

    nnp = number("NoNewPrivs")
    return ProcStatus(
        pid=pid,
        name=fields.get("Name", "?"),
        uids=ints("Uid"),
        gids=ints("Gid"),
        groups=tuple(int(part) for part in fields.get("Groups", "").split()),
        cap_inheritable=mask("CapInh"),
        cap_permitted=mask("CapPrm"),
        cap_effective=mask("CapEff"),
        cap_bounding=mask("CapBnd"),
        cap_ambient=mask("CapAmb"),
        no_new_privs=None if nnp is None else nnp == 1,
        seccomp_mode=number("Seccomp"),
        seccomp_filters=number("Seccomp_filters"),
    )


def read_status(proc_root: Path, pid: int | str) -> ProcStatus:
    """``/proc/<pid>/status`` under ``proc_root``.

    Raises:
        KernelReadError: the file cannot be read or lacks the Uid/Gid lines.
    """
    path = proc_root / str(pid) / "status"
    text = read_text(path)
    try:
        return parse_status(text, pid=int(pid) if str(pid).isdigit() else 0)
    except ValueError as exc:
        raise KernelReadError(str(exc), where=Location(file=str(path))) from exc


def capability_names(mask: int | None) -> frozenset[str]:
    """Capability names (no CAP_ prefix) set in a mask; unknown bits become ``CAP_<n>``."""
    if not mask:
        return frozenset()
    return frozenset(
        CAPABILITY_BITS[bit] if bit < len(CAPABILITY_BITS) else f"CAP_{bit}"
        for bit in range(64)
        if mask >> bit & 1
    )


# -- /proc/<pid>/mountinfo --------------------------------------------------------------------

_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")


def _unescape(text: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes (\\040 ...)."""
    return _OCTAL_ESCAPE.sub(lambda match: chr(int(match.group(1), 8)), text)


@dataclass(frozen=True, kw_only=True)
class MountEntry:
    """One line of ``/proc/<pid>/mountinfo`` (proc(5))."""

    mount_id: int
    parent_id: int
    device: str
    root: str
    """The path inside the mounted filesystem that is mounted (a bind shows its subpath)."""
    mount_point: str
    mount_options: frozenset[str]
    fstype: str
    source: str
    super_options: Mapping[str, str | None] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def read_only(self) -> bool:
        """Whether this mount (not only its superblock) is read-only."""
        return "ro" in self.mount_options

    def flag(self, name: str) -> bool:
        """Whether a per-mount flag such as ``noexec`` or ``nosuid`` is set."""
        return name in self.mount_options


def parse_mountinfo(text: str) -> tuple[MountEntry, ...]:
    """Parse the text of ``/proc/<pid>/mountinfo``.

    Raises:
        ValueError: a line does not have the mountinfo shape.
    """
    entries = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        try:
            dash = parts.index("-", 6)
        except ValueError as exc:
            raise ValueError(f"mountinfo line {number} has no ' - ' separator") from exc
        if len(parts) < dash + 3:
            raise ValueError(f"mountinfo line {number} is truncated")
        super_options: dict[str, str | None] = {}
        for option in parts[dash + 3].split(",") if len(parts) > dash + 3 else ():
            key, sep, value = option.partition("=")
            super_options[key] = value if sep else None
        entries.append(
            MountEntry(
                mount_id=int(parts[0]),
                parent_id=int(parts[1]),
                device=parts[2],
                root=_unescape(parts[3]),
                mount_point=_unescape(parts[4]),
                mount_options=frozenset(parts[5].split(",")),
                fstype=parts[dash + 1],
                source=_unescape(parts[dash + 2]),
                super_options=MappingProxyType(super_options),
            )
        )
    return tuple(entries)


def read_mountinfo(proc_root: Path, pid: int | str) -> tuple[MountEntry, ...]:
    """``/proc/<pid>/mountinfo`` under ``proc_root``.

    Raises:
        KernelReadError: the file cannot be read or parsed.
    """
    path = proc_root / str(pid) / "mountinfo"
    try:
        return parse_mountinfo(read_text(path))
    except ValueError as exc:
        raise KernelReadError(str(exc), where=Location(file=str(path))) from exc


_SIZE = re.compile(r"^(\d+)([kmgtKMGT]?)$")
_SIZE_FACTORS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def parse_size(text: str | None) -> int | None:
    """Bytes from a tmpfs ``size=`` option (``16384k`` on Linux, ``16m`` on gVisor)."""
    if text is None:
        return None
    match = _SIZE.match(text.strip())
    if match is None:
        return None
    return int(match.group(1)) * _SIZE_FACTORS[match.group(2).lower()]


# -- namespaces, cmdline, LSM -----------------------------------------------------------------


def read_namespaces(proc_root: Path, pid: int | str) -> dict[str, str]:
    """Namespace kind -> identity (``net:[4026532182]``) for the ones verify compares.

    A namespace whose link cannot be read is left out.
    """
    found: dict[str, str] = {}
    for kind in NAMESPACES:
        try:
            found[kind] = os.readlink(proc_root / str(pid) / "ns" / kind)
        except OSError:
            continue
    return found


def read_cmdline(proc_root: Path, pid: int | str) -> tuple[str, ...]:
    """The argv of a process ('' separated by NULs in procfs).

    Raises:
        KernelReadError: the file cannot be read.
    """
    raw = read_text(proc_root / str(pid) / "cmdline")
    return tuple(part for part in raw.split("\0") if part)


def read_lsm_label(proc_root: Path, pid: int | str) -> str | None:
    """The LSM label of a process (``attr/current``), or None when no LSM provides one.

    The kernel answers EINVAL when no active LSM implements the attribute.
    """
    try:
        raw = (proc_root / str(pid) / "attr" / "current").read_bytes()
    except OSError as exc:
        if exc.errno in (errno.EINVAL, errno.ENOENT, errno.EOPNOTSUPP):
            return None
        raise KernelReadError(f"cannot read the LSM label of pid {pid}: {exc.strerror}") from exc
    label = raw.rstrip(b"\0\n").decode(errors="replace")
    return label or None


def active_lsms(sys_root: Path) -> tuple[tuple[str, ...], str]:
    """(the active LSMs, where that was read). Empty when nothing tells.

    ``/sys/kernel/security/lsm`` lists them when securityfs is mounted; otherwise AppArmor and
    SELinux still show in sysfs/selinuxfs.
    """
    lsm_file = sys_root / "kernel" / "security" / "lsm"
    try:
        names = tuple(name for name in lsm_file.read_text().strip().split(",") if name)
    except OSError:
        names = ()
    if names:
        return names, str(lsm_file)
    found: list[str] = []
    apparmor = sys_root / "module" / "apparmor" / "parameters" / "enabled"
    try:
        if apparmor.read_text().strip().upper().startswith("Y"):
            found.append("apparmor")
    except OSError:
        pass
    if (sys_root / "fs" / "selinux" / "enforce").exists():
        found.append("selinux")
    return tuple(found), f"{apparmor} and {sys_root / 'fs' / 'selinux'}"


# -- network ----------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Route:
    """One route of the process's network namespace."""

    interface: str
    destination: str
    prefix: int
    gateway: str
    family: int  # 4 or 6

    @property
    def default(self) -> bool:
        """Whether this is a default route (0.0.0.0/0 or ::/0)."""
        return self.prefix == 0


def parse_interfaces(text: str) -> tuple[str, ...]:
    """Interface names from ``/proc/<pid>/net/dev``."""
    names = []
    for line in text.splitlines()[2:]:
        name, sep, _ = line.partition(":")
        if sep and name.strip():
            names.append(name.strip())
    return tuple(names)


def _ipv4(hex_le: str) -> str:
    value = int(hex_le, 16)
    return ".".join(str(value >> shift & 0xFF) for shift in (0, 8, 16, 24))


def parse_routes(text: str) -> tuple[Route, ...]:
    """IPv4 routes from ``/proc/<pid>/net/route`` (addresses are little-endian hex)."""
    rtf_up = 0x1
    routes = []
    for line in text.splitlines()[1:]:
        parts = line.split()
        if len(parts) < 8:
            continue
        if not int(parts[3], 16) & rtf_up:
            continue
        prefix = bin(int(parts[7], 16)).count("1")
        routes.append(
            Route(
                interface=parts[0],
                destination=_ipv4(parts[1]),
                prefix=prefix,
                gateway=_ipv4(parts[2]),
                family=4,
            )
        )
    return tuple(routes)


def parse_ipv6_routes(text: str) -> tuple[Route, ...]:
    """Usable IPv6 routes from ``/proc/<pid>/net/ipv6_route``.

    Loopback and reject routes (the kernel's "unreachable" entries on ``lo``) are left out.
    """
    rtf_up, rtf_reject = 0x1, 0x200
    routes = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 10:
            continue
        flags = int(parts[8], 16)
        if parts[9] == "lo" or not flags & rtf_up or flags & rtf_reject:
            continue
        routes.append(
            Route(
                interface=parts[9],
                destination=_ipv6(parts[0]),
                prefix=int(parts[1], 16),
                gateway=_ipv6(parts[4]),
                family=6,
            )
        )
    return tuple(routes)


def _ipv6(hex_text: str) -> str:
    groups = [hex_text[index : index + 4].lstrip("0") or "0" for index in range(0, 32, 4)]
    return ":".join(groups)


def default_routes(routes: Iterable[Route]) -> tuple[Route, ...]:
    """The default routes among ``routes``."""
    return tuple(route for route in routes if route.default)
