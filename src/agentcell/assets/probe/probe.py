"""agentcell's escape and abuse probes, run inside a cell.

This program is not part of any image. ``agentcell probe`` sends its source to the cell's own
``python3`` over the stdin of ``docker exec`` and nothing is written into the cell. It uses the
standard library only, so any image with a Python 3.9+ interpreter can run it.

Every probe *attempts* something a contained process must not be able to do and reports:

* ``blocked``: the attempt failed, with the mechanism that stopped it (seccomp, a missing
  capability, a read-only mount, no_new_privs, the pids limit, ...);
* ``contained``: the call succeeded, but inside gVisor's user-space kernel, which serves it
  without the host kernel seeing it (only for kernel-surface syscalls under runsc);
* ``allowed``: it succeeded and the spec explicitly allows it (e.g. a granted capability);
* ``NOT BLOCKED``: it succeeded and nothing in the spec allows it;
* ``skipped``: it cannot be attempted here, with the reason.

A probe that succeeds undoes what it did at once (closes the fd, unmounts, unlinks, kills its
children). Nothing is ever *written* to a host-facing file: the /proc/sys, sysrq-trigger,
release_agent and host-mount probes only open for writing and close again, which is enough to
show that a write would have been possible.

Usage (inside the cell): ``python3 - MODE CONFIG_JSON`` with MODE ``battery`` or
``memory-bomb``. Each result is one JSON line on stdout.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import platform
import signal
import socket
import stat
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# -- syscalls ---------------------------------------------------------------------------------

# Numbers of the syscalls this program makes through ctypes, per architecture.
_SYSCALLS: dict[str, dict[str, int]] = {
    "x86_64": {
        "ptrace": 101, "setresuid": 117, "capget": 125, "capset": 126, "chroot": 161,
        "mount": 165, "umount2": 166, "sethostname": 170, "init_module": 175,
        "kexec_load": 246, "add_key": 248, "keyctl": 250, "unshare": 272,
        "perf_event_open": 298, "open_by_handle_at": 304, "setns": 308, "finit_module": 313,
        "bpf": 321, "userfaultfd": 323, "io_uring_setup": 425,
    },
    "aarch64": {
        "ptrace": 117, "setresuid": 147, "capget": 90, "capset": 91, "chroot": 51,
        "mount": 40, "umount2": 39, "sethostname": 161, "init_module": 105,
        "kexec_load": 104, "add_key": 217, "keyctl": 219, "unshare": 97,
        "perf_event_open": 241, "open_by_handle_at": 265, "setns": 268, "finit_module": 273,
        "bpf": 280, "userfaultfd": 282, "io_uring_setup": 425,
    },
}  # fmt: skip

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWUSER = 0x10000000
MNT_DETACH = 2
PTRACE_TRACEME = 0
BPF_MAP_CREATE = 0
BPF_MAP_TYPE_ARRAY = 2
KEYCTL_GET_KEYRING_ID = 0
KEY_SPEC_PROCESS_KEYRING = -2
KEY_SPEC_SESSION_KEYRING = -3
PERF_TYPE_SOFTWARE = 1
PERF_ATTR_SIZE = 112
UFFD_USER_MODE_ONLY = 1
AT_FDCWD = -100
LINUX_CAPABILITY_VERSION_3 = 0x20080522
CAP_SYS_ADMIN = 21
SIGKILL_EXIT = 128 + signal.SIGKILL

# Errors that mean "refused"; anything else from a syscall means it reached the kernel code.
_REFUSED = {errno.EPERM, errno.EACCES, errno.ENOSYS, errno.EROFS}

# Capability numbers, for naming what /proc/self/status shows.
CAP_NAMES = (
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID",
    "SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW",
    "IPC_LOCK", "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT",
    "SYS_ADMIN", "SYS_BOOT", "SYS_NICE", "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD",
    "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG",
    "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF", "CHECKPOINT_RESTORE",
)  # fmt: skip

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def syscall(name: str, *args: Any) -> tuple[int, int]:
    """(return value, errno) of a raw syscall; errno is 0 on success."""
    table = _SYSCALLS.get(platform.machine())
    if table is None:
        return -1, errno.ENOSYS
    ctypes.set_errno(0)
    result = int(_libc.syscall(ctypes.c_long(table[name]), *args))
    return result, (ctypes.get_errno() if result < 0 else 0)


def close_quietly(fd: int) -> None:
    """Close an fd a successful probe got, ignoring a second close."""
    with contextlib.suppress(OSError):
        os.close(fd)


# -- what the probes report -------------------------------------------------------------------


@dataclass
class Config:
    """What the orchestrator knows about the cell, passed as JSON on the command line."""

    runtime: str = "runc"
    allowed_caps: list[str] = field(default_factory=list)
    host_mounts: list[dict[str, Any]] = field(default_factory=list)
    tmpfs: list[dict[str, Any]] = field(default_factory=list)
    pids_limit: int = 0
    memory_limit: int = 0
    host_network: bool = False
    host_pid: bool = False
    docker_socket: bool = False
    read_only_rootfs: bool = True
    canary: dict[str, Any] | None = None
    neighbour: dict[str, Any] | None = None
    only: list[str] = field(default_factory=list)
    memory_target: int = 0
    deadline_s: float = 20.0

    @classmethod
    def from_json(cls, text: str) -> Config:
        """Build from the orchestrator's JSON, ignoring keys this version does not know."""
        data = json.loads(text) if text else {}
        known = set(cls.__dataclass_fields__)
        return cls(**{key: value for key, value in data.items() if key in known})

    @property
    def sandboxed(self) -> bool:
        """Whether a user-space kernel (gVisor) serves the cell's syscalls."""
        return self.runtime == "runsc"


@dataclass
class Outcome:
    """One probe's verdict."""

    status: str
    mechanism: str
    detail: str = ""


def blocked(mechanism: str, detail: str = "") -> Outcome:
    return Outcome("blocked", mechanism, detail)


def not_blocked(mechanism: str, detail: str = "") -> Outcome:
    return Outcome("NOT BLOCKED", mechanism, detail)


def skipped(reason: str) -> Outcome:
    return Outcome("skipped", reason)


def read_status() -> dict[str, str]:
    """This process's /proc/self/status as a mapping."""
    fields: dict[str, str] = {}
    with open("/proc/self/status", encoding="ascii", errors="replace") as handle:
        for line in handle:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return fields


def cap_set(mask_hex: str | None) -> set[str]:
    """Capability names in a hex mask from /proc/self/status."""
    if not mask_hex:
        return set()
    mask = int(mask_hex, 16)
    return {
        CAP_NAMES[bit] if bit < len(CAP_NAMES) else f"CAP_{bit}"
        for bit in range(64)
        if mask >> bit & 1
    }


class Cell:
    """Facts about this process the probes share, read once."""

    def __init__(self, config: Config) -> None:
        self.config = config
        status = read_status()
        self.effective = cap_set(status.get("CapEff"))
        self.bounding = cap_set(status.get("CapBnd"))
        self.seccomp = status.get("Seccomp", "?")
        self.no_new_privs = status.get("NoNewPrivs")
        self.uid = os.getuid()
        self.allowed = {cap.upper().removeprefix("CAP_") for cap in config.allowed_caps}
        self.scratch = self._scratch_dir()

    def _scratch_dir(self) -> str | None:
        """A writable directory for probes that need one (a tmpfs, normally)."""
        candidates = [str(mount["path"]) for mount in self.config.tmpfs]
        candidates.append(tempfile.gettempdir())
        for path in candidates:
            with contextlib.suppress(OSError):
                return tempfile.mkdtemp(prefix=".agentcell-probe-", dir=path)
        return None

    def cleanup(self) -> None:
        if self.scratch is not None:
            with contextlib.suppress(OSError):
                for name in os.listdir(self.scratch):
                    with contextlib.suppress(OSError):
                        os.unlink(os.path.join(self.scratch, name))
                os.rmdir(self.scratch)

    def why_refused(self, err: int, *, caps: tuple[str, ...], seccomp_denied: bool) -> str:
        """The layers that refuse a syscall here, most specific first."""
        layers: list[str] = []
        if seccomp_denied and self.seccomp == "2":
            layers.append(f"seccomp filter ({errno.errorcode.get(err, err)})")
        missing = [cap for cap in caps if cap not in self.effective]
        if caps and len(missing) == len(caps):
            layers.append("no " + "/".join(f"CAP_{cap}" for cap in caps))
        if not layers:
            kernel = "gVisor" if self.config.sandboxed else "the kernel"
            layers.append(f"{kernel} refused ({errno.errorcode.get(err, err)})")
        return " + ".join(layers)

    def syscall_outcome(
        self,
        name: str,
        result: int,
        err: int,
        *,
        caps: tuple[str, ...],
        seccomp_denied: bool = True,
        undo: Callable[[], None] | None = None,
    ) -> Outcome:
        """Judge a kernel-surface syscall attempt."""
        if result >= 0 or err not in _REFUSED:
            if undo is not None and result >= 0:
                undo()
            reached = (
                "succeeded"
                if result >= 0
                else f"reached the kernel ({errno.errorcode.get(err, err)})"
            )
            if self.config.sandboxed:
                return Outcome(
                    "contained",
                    "gVisor sentry",
                    f"{name} {reached} inside gVisor's user-space kernel; the host kernel "
                    "never sees it",
                )
            granted = [cap for cap in caps if cap in self.allowed]
            if granted:
                return Outcome("allowed", f"spec grants CAP_{granted[0]}", f"{name} {reached}")
            return not_blocked("nothing stopped it", f"{name} {reached}")
        if err == errno.ENOSYS:
            kernel = "gVisor" if self.config.sandboxed else "this kernel"
            return blocked(f"not implemented by {kernel} (ENOSYS)", f"{name} -> ENOSYS")
        return blocked(
            self.why_refused(err, caps=caps, seccomp_denied=seccomp_denied),
            f"{name} -> {errno.errorcode.get(err, err)}",
        )


def child_call(action: Callable[[], int], timeout_s: float = 5.0) -> tuple[int, int]:
    """Run ``action`` in a forked child and return (result, errno) as the child saw them.

    ``action`` returns an errno (0 for success). Probes that would change this process
    (unshare, setns, ptrace, setresuid, chroot) run this way.
    """
    pid = os.fork()
    if pid == 0:
        code = errno.EIO
        try:
            code = action()
        except OSError as exc:
            code = exc.errno or errno.EIO
        finally:
            os._exit(min(max(code, 0), 254))
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            code = os.waitstatus_to_exitcode(status)
            return (0, 0) if code == 0 else (-1, code)
        time.sleep(0.01)
    with contextlib.suppress(OSError):
        os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return -1, errno.ETIMEDOUT


def errno_of(name: str, *args: Any) -> int:
    """A syscall's errno (0 on success); meant for child_call bodies."""
    return syscall(name, *args)[1]


# -- the probes -------------------------------------------------------------------------------

Probe = Callable[[Cell], Outcome]
PROBES: list[tuple[str, str, str, Probe]] = []


def probe(probe_id: str, category: str, title: str) -> Callable[[Probe], Probe]:
    """Register a probe in the battery, in definition order."""

    def register(function: Probe) -> Probe:
        PROBES.append((probe_id, category, title, function))
        return function

    return register


@probe("caps-raise", "privilege", "raise CAP_SYS_ADMIN with capset")
def caps_raise(cell: Cell) -> Outcome:
    header = (ctypes.c_uint32 * 2)(LINUX_CAPABILITY_VERSION_3, 0)
    data = (ctypes.c_uint32 * 6)()
    syscall("capget", ctypes.byref(header), ctypes.byref(data))
    data[0] |= 1 << CAP_SYS_ADMIN  # effective
    data[1] |= 1 << CAP_SYS_ADMIN  # permitted
    result, err = syscall("capset", ctypes.byref(header), ctypes.byref(data))
    extra = sorted((cell.effective | cell.bounding) - cell.allowed)
    if result == 0:
        return not_blocked("capset succeeded", "CAP_SYS_ADMIN is now effective")
    if extra:
        return not_blocked(
            "capabilities beyond the spec",
            f"capset refused, but the cell holds {', '.join('CAP_' + c for c in extra)}",
        )
    held = ", ".join(sorted(cell.effective)) or "none"
    return blocked(
        "capabilities dropped (bounding set)",
        f"capset -> {errno.errorcode.get(err, err)}; effective: {held}",
    )


@probe("setuid-root", "privilege", "become root (setresuid, setuid-root binaries)")
def setuid_root(cell: Cell) -> Outcome:
    if cell.uid == 0:
        return not_blocked("the cell runs as root (uid 0)")
    result, err = child_call(lambda: errno_of("setresuid", 0, 0, 0))
    if result == 0:
        return not_blocked("setresuid(0) succeeded")
    found = find_setuid_binaries()
    if found and cell.no_new_privs != "1":
        return not_blocked(
            "setuid-root binaries without no_new_privs",
            f"exec of {found[0]} would run as root ({len(found)} found)",
        )
    where = f"{len(found)} setuid binaries, inert under no_new_privs" if found else "none found"
    return blocked(
        "not root, no CAP_SETUID" + (" + no_new_privs" if found else ""),
        f"setresuid(0) -> {errno.errorcode.get(err, err)}; setuid-root binaries: {where}",
    )


# Where setuid helpers live, and how deep to look (all of /usr/lib is slow under gVisor).
_SETUID_DIRS = (
    ("/bin", 0), ("/sbin", 0), ("/usr/bin", 0), ("/usr/sbin", 0), ("/usr/local/bin", 0),
    ("/usr/lib", 2), ("/usr/libexec", 2),
)  # fmt: skip


def find_setuid_binaries(limit: int = 5) -> list[str]:
    """Setuid-root executables in the usual places, on mounts that honour the bit."""
    found: list[str] = []
    for directory, depth in _SETUID_DIRS:
        with contextlib.suppress(OSError):
            if os.statvfs(directory).f_flag & os.ST_NOSUID:
                continue
            base = directory.count("/")
            for root, dirs, files in os.walk(directory):
                if root.count("/") - base >= depth:
                    dirs.clear()
                for name in files:
                    path = os.path.join(root, name)
                    with contextlib.suppress(OSError):
                        info = os.lstat(path)
                        setuid = stat.S_ISREG(info.st_mode) and info.st_mode & stat.S_ISUID
                        if setuid and info.st_uid == 0:
                            found.append(path)
                            if len(found) >= limit:
                                return found
    return found


@probe("no-new-privs", "privilege", "no_new_privs is set")
def no_new_privs(cell: Cell) -> Outcome:
    pr_get_no_new_privs = 39
    value = int(_libc.prctl(pr_get_no_new_privs, 0, 0, 0, 0))
    if value == 1:
        return blocked("no_new_privs=1", "setuid and file-capability exec gain nothing")
    if cell.config.sandboxed:
        return Outcome(
            "contained",
            "gVisor sentry",
            "gVisor reports no_new_privs=0 inside the sandbox; the host-side sandbox process "
            "has it set (agentcell verify shows it)",
        )
    return not_blocked("no_new_privs is not set", "setuid binaries and file caps can raise privs")


@probe("mount", "syscall", "mount a tmpfs")
def mount_tmpfs(cell: Cell) -> Outcome:
    if cell.scratch is None:
        return skipped("no writable directory to mount on")
    target = os.path.join(cell.scratch, "mnt")
    os.makedirs(target, exist_ok=True)
    result, err = syscall("mount", b"none", target.encode(), b"tmpfs", 0, None)

    def undo() -> None:
        syscall("umount2", target.encode(), MNT_DETACH)

    outcome = cell.syscall_outcome("mount", result, err, caps=("SYS_ADMIN",), undo=undo)
    with contextlib.suppress(OSError):
        os.rmdir(target)
    return outcome


@probe("unshare-userns", "syscall", "unshare a user namespace")
def unshare_userns(cell: Cell) -> Outcome:
    result, err = child_call(lambda: errno_of("unshare", CLONE_NEWUSER))
    return cell.syscall_outcome("unshare(CLONE_NEWUSER)", result, err, caps=())


@probe("setns", "syscall", "setns into a namespace")
def setns_uts(cell: Cell) -> Outcome:
    def attempt() -> int:
        fd = os.open("/proc/self/ns/uts", os.O_RDONLY)
        return errno_of("setns", fd, CLONE_NEWUTS)

    result, err = child_call(attempt)
    return cell.syscall_outcome("setns", result, err, caps=("SYS_ADMIN",))


@probe("ptrace", "syscall", "ptrace (PTRACE_TRACEME)")
def ptrace_traceme(cell: Cell) -> Outcome:
    result, err = child_call(lambda: errno_of("ptrace", PTRACE_TRACEME, 0, None, None))
    return cell.syscall_outcome("ptrace", result, err, caps=())


@probe("bpf", "syscall", "create an eBPF map")
def bpf_map(cell: Cell) -> Outcome:
    attr = (ctypes.c_uint32 * 30)()
    attr[0], attr[1], attr[2], attr[3] = BPF_MAP_TYPE_ARRAY, 4, 4, 1
    result, err = syscall("bpf", BPF_MAP_CREATE, ctypes.byref(attr), ctypes.sizeof(attr))
    return cell.syscall_outcome(
        "bpf", result, err, caps=("BPF", "SYS_ADMIN"), undo=lambda: close_quietly(result)
    )


@probe("keyctl", "syscall", "use the kernel keyring (keyctl, add_key)")
def keyring(cell: Cell) -> Outcome:
    result, err = syscall("keyctl", KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 0)
    if result >= 0 or err not in _REFUSED:
        return cell.syscall_outcome("keyctl", result, err, caps=())
    result, err = syscall(
        "add_key", b"user", b"agentcell-probe", b"x", 1, ctypes.c_long(KEY_SPEC_PROCESS_KEYRING)
    )
    return cell.syscall_outcome("keyctl and add_key", result, err, caps=())


@probe("perf_event_open", "syscall", "open a perf event")
def perf_event(cell: Cell) -> Outcome:
    attr = (ctypes.c_uint8 * PERF_ATTR_SIZE)()
    ctypes.c_uint32.from_buffer(attr, 0).value = PERF_TYPE_SOFTWARE
    ctypes.c_uint32.from_buffer(attr, 4).value = PERF_ATTR_SIZE
    result, err = syscall("perf_event_open", ctypes.byref(attr), 0, -1, -1, 0)
    return cell.syscall_outcome(
        "perf_event_open",
        result,
        err,
        caps=("PERFMON", "SYS_ADMIN"),
        undo=lambda: close_quietly(result),
    )


@probe("io_uring", "syscall", "set up an io_uring")
def io_uring(cell: Cell) -> Outcome:
    params = (ctypes.c_uint8 * 120)()
    result, err = syscall("io_uring_setup", 8, ctypes.byref(params))
    return cell.syscall_outcome(
        "io_uring_setup", result, err, caps=(), undo=lambda: close_quietly(result)
    )


@probe("userfaultfd", "syscall", "create a userfaultfd")
def userfaultfd(cell: Cell) -> Outcome:
    result, err = syscall("userfaultfd", os.O_CLOEXEC | UFFD_USER_MODE_ONLY)
    return cell.syscall_outcome(
        "userfaultfd", result, err, caps=(), undo=lambda: close_quietly(result)
    )


@probe("open_by_handle_at", "syscall", "open a file by handle (the 'shocker' escape)")
def open_by_handle(cell: Cell) -> Outcome:
    handle = (ctypes.c_uint8 * 16)()
    ctypes.c_uint32.from_buffer(handle, 0).value = 8  # handle_bytes
    ctypes.c_int32.from_buffer(handle, 4).value = 1  # handle_type: FILEID_INO32_GEN
    result, err = syscall("open_by_handle_at", AT_FDCWD, ctypes.byref(handle), os.O_RDONLY)
    return cell.syscall_outcome(
        "open_by_handle_at",
        result,
        err,
        caps=("DAC_READ_SEARCH",),
        undo=lambda: close_quietly(result),
    )


@probe("kernel-modules", "syscall", "load a kernel module or a kexec image")
def kernel_modules(cell: Cell) -> Outcome:
    module = syscall("finit_module", -1, b"", 0)
    outcome = cell.syscall_outcome("finit_module", *module, caps=("SYS_MODULE",))
    if outcome.status != "blocked":
        return outcome
    kexec = syscall("kexec_load", 0, 0, None, 0)
    second = cell.syscall_outcome("kexec_load", *kexec, caps=("SYS_BOOT",))
    if second.status != "blocked":
        return second
    mechanism = outcome.mechanism
    if second.mechanism != mechanism:
        mechanism += f"; {second.mechanism}"
    return blocked(mechanism, f"{outcome.detail}; {second.detail}")


@probe("chroot", "syscall", "chroot")
def chroot(cell: Cell) -> Outcome:
    result, err = child_call(lambda: errno_of("chroot", b"/"))
    return cell.syscall_outcome("chroot", result, err, caps=("SYS_CHROOT",), seccomp_denied=False)


@probe("sethostname", "syscall", "change the hostname")
def sethostname(cell: Cell) -> Outcome:
    # The same name again: a success proves the power without changing anything.
    name = os.uname().nodename.encode()
    result, err = child_call(lambda: errno_of("sethostname", name, len(name)))
    return cell.syscall_outcome(
        "sethostname", result, err, caps=("SYS_ADMIN",), seccomp_denied=False
    )


@probe("mknod", "syscall", "create a block device node")
def mknod(cell: Cell) -> Outcome:
    if cell.scratch is None:
        return skipped("no writable directory")
    path = os.path.join(cell.scratch, "blockdev")
    try:
        os.mknod(path, stat.S_IFBLK | 0o600, os.makedev(7, 0))
    except OSError as exc:
        if exc.errno in _REFUSED:
            return blocked(
                cell.why_refused(exc.errno or 0, caps=("MKNOD",), seccomp_denied=False),
                f"mknod -> {errno.errorcode.get(exc.errno or 0, exc.errno)}",
            )
        return skipped(f"mknod failed for another reason: {exc}")
    os.unlink(path)
    if cell.config.sandboxed:
        return Outcome("contained", "gVisor sentry", "the node exists only in gVisor's VFS")
    if "MKNOD" in cell.allowed:
        return Outcome("allowed", "spec grants CAP_MKNOD", "created and removed a device node")
    return not_blocked("CAP_MKNOD held", "created (and removed) a block device node")


@probe("devices", "filesystem", "open a host block device")
def devices(cell: Cell) -> Outcome:
    found: list[str] = []
    with contextlib.suppress(OSError):
        for name in os.listdir("/dev"):
            path = os.path.join("/dev", name)
            with contextlib.suppress(OSError):
                if stat.S_ISBLK(os.stat(path).st_mode):
                    found.append(path)
    if not found:
        return blocked("no block device nodes in /dev")
    for path in found:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        os.close(fd)
        return not_blocked("a block device is readable", f"opened {path}")
    return blocked("device cgroup / permissions", f"{len(found)} nodes, none could be opened")


@probe("write-rootfs", "filesystem", "write to the root filesystem")
def write_rootfs(cell: Cell) -> Outcome:
    path = f"/.agentcell-probe-{os.getpid()}"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        err = exc.errno or errno.EIO
        refusal = write_refusal("/", err)
        if "read-only mount" in refusal or err == errno.EROFS:
            return blocked(refusal, f"create {path} -> {errno.errorcode.get(err, err)}")
        if not cell.config.read_only_rootfs:
            return blocked(refusal, "the spec allows a writable rootfs")
        return not_blocked(
            "rootfs is writable; only file permissions stopped this write",
            f"create {path} -> {errno.errorcode.get(err, err)}",
        )
    os.close(fd)
    os.unlink(path)
    if not cell.config.read_only_rootfs:
        return Outcome("allowed", "spec: read_only_rootfs false", f"created and removed {path}")
    return not_blocked("rootfs is writable", f"created and removed {path}")


@probe("write-host-mounts", "filesystem", "write to host mounts")
def write_host_mounts(cell: Cell) -> Outcome:
    mounts = cell.config.host_mounts
    if not mounts:
        return skipped("the spec mounts nothing from the host")
    problems, checked = [], []
    for mount in mounts:
        target = str(mount["target"])
        read_only = bool(mount.get("read_only", True))
        if not os.path.exists(target):
            checked.append(f"{target}: not present")
            continue
        target_ro = mounted_read_only(target)
        name = os.path.join(target, f".agentcell-probe-{os.getpid()}")
        try:
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as exc:
            created = False
            reason = errno.errorcode.get(exc.errno or 0, str(exc.errno))
        else:
            os.close(fd)
            os.unlink(name)
            created, reason = True, "created"
        if (created or not target_ro) and read_only:
            problems.append(f"{target}: {'created a file' if created else 'mounted read-write'}")
        else:
            checked.append(f"{target}: {'ro mount' if target_ro else 'rw'} ({reason})")
    # A recursive bind brings the host's submounts along (e.g. /sys -> /sys/fs/cgroup/*);
    # read-only on the top mount says nothing about them.
    for mount in mounts:
        if not mount.get("read_only", True):
            continue
        prefix = str(mount["target"]).rstrip("/") + "/"
        writable = [point for point, ro in own_mounts() if point.startswith(prefix) and not ro]
        if writable:
            owned = [point for point in writable if os.access(point, os.W_OK)]
            problems.append(
                f"{len(writable)} read-write submounts under {prefix} (e.g. {writable[0]})"
                + (f", {len(owned)} writable by this uid" if owned else "")
            )
    if problems:
        return not_blocked(
            "host mount or its submounts are writable (only file permissions stop this uid)",
            "; ".join(problems),
        )
    return blocked("read-only bind mounts", "; ".join(checked))


def mounted_read_only(path: str) -> bool:
    """Whether the mount holding ``path`` is read-only, by statvfs or, where the kernel leaves
    ST_RDONLY out of statvfs (gVisor), by the mount table."""
    with contextlib.suppress(OSError):
        if os.statvfs(path).f_flag & os.ST_RDONLY:
            return True
    holder = ""
    read_only = False
    for point, ro in own_mounts():
        inside = path == point or path.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(holder):
            holder, read_only = point, ro
    return read_only


def own_mounts() -> list[tuple[str, bool]]:
    """(mount point, read-only) of every mount this process sees."""
    found = []
    with contextlib.suppress(OSError), open("/proc/self/mountinfo", encoding="utf-8") as handle:
        for line in handle:
            parts = line.split()
            if len(parts) > 5:
                point = parts[4].replace("\\040", " ")
                found.append((point, "ro" in parts[5].split(",")))
    return found


def open_for_write(path: str) -> int:
    """errno of opening ``path`` write-only (0 if it opened). Nothing is ever written."""
    try:
        fd = os.open(path, os.O_WRONLY)
    except OSError as exc:
        return exc.errno or errno.EIO
    os.close(fd)
    return 0


def write_refusal(path: str, err: int) -> str:
    """Why opening ``path`` for writing failed: the mount, the file mode, or both."""
    reasons = []
    if mounted_read_only(path):
        reasons.append("read-only mount")
    if err == errno.EACCES:
        reasons.append("file permissions (not root)")
    elif err != errno.EROFS or not reasons:
        reasons.append(errno.errorcode.get(err, str(err)))
    return " + ".join(reasons)


@probe("proc-sys", "filesystem", "open /proc/sys/kernel/core_pattern for writing")
def proc_sys(cell: Cell) -> Outcome:
    path = "/proc/sys/kernel/core_pattern"
    err = open_for_write(path)
    if err == 0:
        if cell.config.sandboxed:
            return Outcome("contained", "gVisor sentry", "gVisor's own /proc/sys, not the host's")
        return not_blocked("/proc/sys is writable", "core_pattern opened (nothing was written)")
    if err == errno.ENOENT:
        return skipped(f"{path} does not exist here")
    return blocked(write_refusal(path, err), f"open(O_WRONLY) -> {errno.errorcode.get(err, err)}")


@probe("sysrq-trigger", "filesystem", "open /proc/sysrq-trigger for writing")
def sysrq(cell: Cell) -> Outcome:
    path = "/proc/sysrq-trigger"
    err = open_for_write(path)
    if err == 0:
        return not_blocked("/proc/sysrq-trigger is writable", "opened (nothing was written)")
    if err == errno.ENOENT:
        return skipped("this kernel has no /proc/sysrq-trigger (CONFIG_MAGIC_SYSRQ off)")
    return blocked(write_refusal(path, err), f"open(O_WRONLY) -> {errno.errorcode.get(err, err)}")


@probe("kcore", "filesystem", "read /proc/kcore (kernel memory)")
def kcore(cell: Cell) -> Outcome:
    try:
        with open("/proc/kcore", "rb") as handle:
            head = handle.read(4)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return skipped("this kernel has no /proc/kcore (CONFIG_PROC_KCORE off)")
        return blocked(f"refused ({errno.errorcode.get(exc.errno or 0, exc.errno)})")
    if head == b"\x7fELF":
        return not_blocked("kernel memory is readable", "read the ELF header of /proc/kcore")
    return blocked("masked (empty file bound over it)", f"read {len(head)} bytes")


@probe("cgroup-release-agent", "escape", "cgroup v1 release_agent (CVE-2022-0492 pattern)")
def release_agent(cell: Cell) -> Outcome:
    # Already-writable release_agent files in the cell's view of the cgroup tree?
    with contextlib.suppress(OSError):
        for name in os.listdir("/sys/fs/cgroup"):
            path = os.path.join("/sys/fs/cgroup", name, "release_agent")
            if os.path.exists(path) and open_for_write(path) == 0:
                return not_blocked("release_agent is writable", f"{path} opened for writing")
    if cell.scratch is None:
        return skipped("no writable directory to mount on")
    target = os.path.join(cell.scratch, "cgroup")
    os.makedirs(target, exist_ok=True)

    def mount_cgroup() -> int:
        last = errno.EPERM
        for controller in (b"rdma", b"memory", b"pids"):
            result, err = syscall("mount", b"cgroup", target.encode(), b"cgroup", 0, controller)
            if result == 0:
                agent = os.path.join(target, "release_agent")
                writable = os.path.exists(agent) and open_for_write(agent) == 0
                syscall("umount2", target.encode(), MNT_DETACH)
                return 0 if writable else errno.ENOTSUP
            last = err
        return last

    def attempt() -> int:
        # First as the cell is (a real CAP_SYS_ADMIN mounts directly); then the CVE pattern:
        # a new user+cgroup+mount namespace grants a namespaced "root" enough to mount.
        first = mount_cgroup()
        if first == 0:
            return 0
        if syscall("unshare", CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWCGROUP)[0] != 0:
            return first
        second = mount_cgroup()
        return 0 if second == 0 else (errno.ENOTSUP if errno.ENOTSUP in (first, second) else first)

    result, err = child_call(attempt)
    with contextlib.suppress(OSError):
        os.rmdir(target)
    if result == 0:
        if cell.config.sandboxed:
            return Outcome("contained", "gVisor sentry", "gVisor's own cgroupfs, not the host's")
        return not_blocked("mounted cgroup v1 and release_agent is writable")
    if err == errno.ENOTSUP:
        return blocked(
            "release_agent not writable (kernel: only the initial user namespace may set it)",
            "a cgroup v1 hierarchy could be mounted, but its release_agent refused writing",
        )
    return blocked(
        cell.why_refused(err, caps=("SYS_ADMIN",), seccomp_denied=True),
        f"unshare+mount cgroup -> {errno.errorcode.get(err, err)}",
    )


@probe("docker-socket", "escape", "reach the Docker Engine socket")
def docker_socket(cell: Cell) -> Outcome:
    for path in ("/var/run/docker.sock", "/run/docker.sock", "/run/containerd/containerd.sock"):
        if not os.path.exists(path):
            continue
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.settimeout(3)
        try:
            client.connect(path)
            client.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            answer = client.recv(256)
        except OSError as exc:
            client.close()
            return blocked(f"socket present but unusable ({exc.strerror})", path)
        client.close()
        if cell.config.docker_socket:
            return Outcome(
                "allowed", "spec: host.docker_socket (high risk)", f"{path}: {answer[:20]!r}"
            )
        return not_blocked("engine socket reachable", f"{path} answered {answer[:20]!r}")
    return blocked("no engine socket in the cell")


@probe("raw-socket", "network", "open raw sockets (AF_PACKET, SOCK_RAW)")
def raw_socket(cell: Cell) -> Outcome:
    opened: list[str] = []
    errors: list[str] = []
    for family, kind, proto, label in (
        (socket.AF_PACKET, socket.SOCK_RAW, 0, "AF_PACKET"),
        (socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP, "AF_INET/SOCK_RAW"),
    ):
        try:
            socket.socket(family, kind, proto).close()
            opened.append(label)
        except OSError as exc:
            errors.append(f"{label} -> {errno.errorcode.get(exc.errno or 0, exc.errno)}")
    if not opened:
        return blocked(
            cell.why_refused(errno.EPERM, caps=("NET_RAW",), seccomp_denied=False),
            "; ".join(errors),
        )
    if cell.config.sandboxed:
        return Outcome("contained", "gVisor netstack", f"opened {', '.join(opened)} in gVisor")
    if "NET_RAW" in cell.allowed:
        return Outcome("allowed", "spec grants CAP_NET_RAW", f"opened {', '.join(opened)}")
    return not_blocked("CAP_NET_RAW held", f"opened {', '.join(opened)}")


# (family, type, protocol, name) of sockets a cell has no use for; each call, if it gets past
# seccomp, makes the kernel load and run that family's code (AF_VSOCK reaches the VM host).
_UNUSED_SOCKETS = (
    (40, socket.SOCK_STREAM, 0, "AF_VSOCK"), (38, socket.SOCK_SEQPACKET, 0, "AF_ALG"),
    (17, socket.SOCK_DGRAM, 0, "AF_PACKET"), (15, socket.SOCK_RAW, 2, "AF_KEY"),
    (30, socket.SOCK_RDM, 0, "AF_TIPC"), (21, socket.SOCK_SEQPACKET, 0, "AF_RDS"),
    (31, socket.SOCK_SEQPACKET, 0, "AF_BLUETOOTH"), (29, socket.SOCK_RAW, 1, "AF_CAN"),
    (44, socket.SOCK_RAW, 0, "AF_XDP"), (43, socket.SOCK_STREAM, 0, "AF_SMC"),
    (42, socket.SOCK_DGRAM, 0, "AF_QIPCRTR"), (45, socket.SOCK_DGRAM, 0, "AF_MCTP"),
    (16, socket.SOCK_RAW, 12, "NETLINK_NETFILTER"), (16, socket.SOCK_RAW, 21, "NETLINK_CRYPTO"),
)  # fmt: skip
# What socket() answers when no family (or netlink protocol) of that number is reachable.
_NO_SUCH_FAMILY = {errno.EAFNOSUPPORT, errno.EPROTONOSUPPORT}


@probe("socket-families", "network", "open sockets of unused families (AF_VSOCK, AF_ALG, ...)")
def socket_families(cell: Cell) -> Outcome:
    opened: list[str] = []
    reached: list[str] = []
    refused: dict[str, list[str]] = {}
    for family, kind, proto, label in _UNUSED_SOCKETS:
        try:
            socket.socket(family, kind, proto).close()
        except OSError as exc:
            err = exc.errno or errno.EIO
            if err in _NO_SUCH_FAMILY or err in _REFUSED:
                refused.setdefault(errno.errorcode.get(err, str(err)), []).append(label)
            else:
                # Any other answer came from the family's own code.
                reached.append(f"{label} ({errno.errorcode.get(err, err)})")
        else:
            opened.append(label)
    summary = "; ".join(f"{name}: {', '.join(labels)}" for name, labels in refused.items())
    if opened or reached:
        what = ", ".join(opened + reached)
        if cell.config.sandboxed:
            return Outcome("contained", "gVisor sentry", f"{what} inside gVisor")
        verb = "opened" if opened else "reached"
        return not_blocked("nothing stopped these families", f"{verb} {what}")
    kernel = "gVisor" if cell.config.sandboxed else "the kernel"
    mechanism = f"no such family in {kernel}"
    if cell.seccomp == "2":
        mechanism = f"seccomp filter, or {mechanism}"
    return blocked(mechanism, summary)


@probe("fork-bomb", "resources", "fork until something stops it")
def fork_bomb(cell: Cell) -> Outcome:
    limit = cell.config.pids_limit
    # Enough to pass a set limit; bounded so an unlimited cell costs the host little.
    ceiling = min(limit + 64, 4096) if limit > 0 else 512
    read_end, write_end = os.pipe()
    children: list[int] = []
    failure = ""
    started = time.monotonic()
    try:
        while len(children) < ceiling and time.monotonic() - started < 15:
            try:
                pid = os.fork()
            except OSError as exc:
                failure = errno.errorcode.get(exc.errno or 0, str(exc.errno))
                break
            if pid == 0:
                os.close(write_end)
                # Block until the parent closes the pipe; touch as little memory as possible.
                with contextlib.suppress(OSError):
                    os.read(read_end, 1)
                os._exit(0)
            children.append(pid)
    finally:
        os.close(write_end)
        os.close(read_end)
        for pid in children:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        for pid in children:
            with contextlib.suppress(OSError):
                os.waitpid(pid, 0)
    count = len(children)
    seconds = time.monotonic() - started
    if failure:
        near = f" (pids limit {limit})" if limit else ""
        if limit and count > limit:
            return not_blocked("forks went past the pids limit", f"{count} forks{near}")
        return blocked(
            f"pids limit ({failure})" if limit else f"fork failed ({failure})",
            f"fork failed after {count} children{near} in {seconds:.1f}s; all reaped",
        )
    return not_blocked("no limit stopped the forks", f"{count} children in {seconds:.1f}s")


@probe("tmpfs-fill", "resources", "fill each tmpfs past its size")
def tmpfs_fill(cell: Cell) -> Outcome:
    if not cell.config.tmpfs:
        return skipped("the spec has no tmpfs")
    chunk = b"\0" * (1 << 20)
    results, overflows = [], []
    mount_points = {point for point, _ in own_mounts()}
    for mount in cell.config.tmpfs:
        path, size = str(mount["path"]), int(mount["size"])
        if path not in mount_points:
            overflows.append(f"{path}: nothing is mounted there")
            continue
        name = os.path.join(path, f".agentcell-probe-fill-{os.getpid()}")
        written = 0
        stop = ""
        started = time.monotonic()
        try:
            with open(name, "wb", buffering=0) as handle:
                while written <= size + (16 << 20) and time.monotonic() - started < 20:
                    try:
                        written += handle.write(chunk) or 0
                    except OSError as exc:
                        stop = errno.errorcode.get(exc.errno or 0, str(exc.errno))
                        break
        except OSError as exc:
            stop = errno.errorcode.get(exc.errno or 0, str(exc.errno))
        finally:
            with contextlib.suppress(OSError):
                os.unlink(name)
        mib = written / (1 << 20)
        if stop and written <= size:
            results.append(f"{path}: {stop} after {mib:.0f} MiB (size {size >> 20} MiB)")
        else:
            overflows.append(f"{path}: wrote {mib:.0f} MiB past size {size >> 20} MiB")
    if overflows:
        return not_blocked("tmpfs missing or its size not enforced", "; ".join(overflows + results))
    return blocked("tmpfs size (ENOSPC)", "; ".join(results))


def _read_routes(path: str) -> list[list[str]]:
    try:
        with open(path, encoding="ascii") as handle:
            return [line.split() for line in handle.read().splitlines()[1:] if line.strip()]
    except OSError:
        return []


@probe("default-route", "network", "find a default route out")
def default_route(cell: Cell) -> Outcome:
    if cell.config.host_network:
        return Outcome("allowed", "spec: host.network", "the cell shares the host's network")
    routes = _read_routes("/proc/net/route")
    defaults = [r[0] for r in routes if len(r) > 7 and r[1] == "00000000" and r[7] == "00000000"]
    v6 = []
    with contextlib.suppress(OSError), open("/proc/net/ipv6_route", encoding="ascii") as handle:
        for line in handle:
            parts = line.split()
            rtf_up, rtf_reject = 0x1, 0x200
            flags = int(parts[8], 16) if len(parts) > 9 else 0
            if (
                len(parts) > 9
                and parts[0] == "0" * 32
                and parts[1] == "00"
                and parts[9] != "lo"
                and flags & rtf_up
                and not flags & rtf_reject
            ):
                v6.append(parts[9])
    if defaults or v6:
        return not_blocked("default route present", f"via {', '.join(defaults + v6)}")
    interfaces = sorted({r[0] for r in routes})
    return blocked(
        "no default route", f"routes on: {', '.join(interfaces) or 'no interface but lo'}"
    )


@probe("canary", "network", "connect to a canary container on another network")
def canary(cell: Cell) -> Outcome:
    target = cell.config.canary
    if not target:
        return skipped("no canary was started")
    host, port = str(target["host"]), int(target["port"])
    client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    client.settimeout(3)
    try:
        client.connect((host, port))
    except OSError as exc:
        reason = "timeout" if isinstance(exc, TimeoutError) else exc.strerror or str(exc)
        return blocked(f"unreachable ({reason})", f"{host}:{port}")
    finally:
        client.close()
    return not_blocked("canary reachable", f"connected to {host}:{port}")


# -- cross-cell: a neighbour of another tenant, started beside this cell ----------------------

NEIGHBOUR_SECRET_FILE = "/tmp/agentcell-neighbour-secret"  # noqa: S105 (a path)
NEIGHBOUR_TOKEN = "/run/agentcell/identity/token"  # noqa: S105 (a path)


def neighbour_views(cell: Cell) -> list[str]:
    """The neighbour's /proc/<pid> directories this cell can see: through a host /proc mount,
    or its own /proc when it shares the host's PID namespace."""
    target = cell.config.neighbour or {}
    pid = int(target.get("pid") or 0)
    roots = [
        str(mount["target"])
        for mount in cell.config.host_mounts
        if os.path.normpath(str(mount.get("source", ""))) == "/proc"
    ]
    if cell.config.host_pid:
        roots.append("/proc")
    return [f"{root}/{pid}" for root in roots if pid and os.path.isdir(f"{root}/{pid}")]


def refusal(err: OSError | None) -> str:
    if err is None:
        return "nothing to open"
    if err.errno in (errno.EACCES, errno.EPERM):
        return f"the kernel's ptrace access check: another uid ({errno.errorcode[err.errno]})"
    return f"refused ({errno.errorcode.get(err.errno or 0, err)})"


def through_proc(cell: Cell, action: Callable[[str, dict[str, Any]], str | None]) -> Outcome:
    """Try ``action`` on every view of the neighbour's /proc/<pid>; NOT BLOCKED on the first
    that yields what it was after."""
    target = cell.config.neighbour
    if not target:
        return skipped("no neighbour was started")
    views = neighbour_views(cell)
    if not views:
        return blocked(
            "out of sight",
            "no host /proc mount and a PID namespace of its own: the neighbour's processes "
            "are not visible",
        )
    last: OSError | None = None
    for view in views:
        try:
            got = action(view, target)
        except OSError as exc:
            last = exc
            continue
        if got:
            return not_blocked(f"through {view}", got)
    return blocked(refusal(last), f"tried {', '.join(views)}")


@probe("neighbour-root", "cross-cell", "read a file in another tenant's cell via /proc/<pid>/root")
def neighbour_root(cell: Cell) -> Outcome:
    def read(view: str, target: dict[str, Any]) -> str | None:
        with open(f"{view}/root{NEIGHBOUR_SECRET_FILE}") as handle:
            return "read its tmpfs file" if handle.read() == target["secret"] else None

    return through_proc(cell, read)


@probe("neighbour-cwd", "cross-cell", "list another tenant's cell's working directory")
def neighbour_cwd(cell: Cell) -> Outcome:
    return through_proc(cell, lambda view, _: f"listed {len(os.listdir(f'{view}/cwd'))} entries")


@probe("neighbour-environ", "cross-cell", "read another tenant's cell's environment")
def neighbour_environ(cell: Cell) -> Outcome:
    def read(view: str, target: dict[str, Any]) -> str | None:
        with open(f"{view}/environ", "rb") as handle:
            found = target["secret"].encode() in handle.read()
        return "read its secret from its environment" if found else None

    return through_proc(cell, read)


@probe("neighbour-mem", "cross-cell", "read another tenant's cell's memory via /proc/<pid>/mem")
def neighbour_mem(cell: Cell) -> Outcome:
    def read(view: str, _: dict[str, Any]) -> str | None:
        with open(f"{view}/maps") as maps:
            start = int(maps.readline().split("-")[0], 16)
        with open(f"{view}/mem", "rb") as memory:
            memory.seek(start)
            return f"read {len(memory.read(16))} bytes of its memory"

    return through_proc(cell, read)


@probe("neighbour-fd", "cross-cell", "write into another tenant's cell's stdin via /proc/<pid>/fd")
def neighbour_fd(cell: Cell) -> Outcome:
    def write(view: str, _: dict[str, Any]) -> str | None:
        descriptor = os.open(f"{view}/fd/0", os.O_WRONLY | os.O_NONBLOCK)
        try:
            os.write(descriptor, b"\n")
        finally:
            os.close(descriptor)
        return "wrote to its stdin"

    return through_proc(cell, write)


@probe("neighbour-signal", "cross-cell", "signal another tenant's cell")
def neighbour_signal(cell: Cell) -> Outcome:
    target = cell.config.neighbour
    if not target:
        return skipped("no neighbour was started")
    if not cell.config.host_pid:
        return blocked("another PID namespace", "the neighbour's pid does not exist here")
    try:
        os.kill(int(target["pid"]), 0)  # signal 0: the permission check without a signal
    except OSError as exc:
        return blocked(refusal(exc) if exc.errno == errno.EPERM else "no such process")
    return not_blocked("may signal it", "kill(pid, 0) succeeded in the host PID namespace")


@probe("neighbour-identity", "cross-cell", "read another tenant's cell's join token")
def neighbour_identity(cell: Cell) -> Outcome:
    target = cell.config.neighbour
    if not target:
        return skipped("no neighbour was started")
    host_dir = str(target.get("identity_host_dir") or "")
    paths = [f"{view}/root{NEIGHBOUR_TOKEN}" for view in neighbour_views(cell)]
    for mount in cell.config.host_mounts:
        source = os.path.normpath(str(mount.get("source", "")))
        if host_dir == source or host_dir.startswith(source.rstrip("/") + "/"):
            paths.append(str(mount["target"]) + host_dir[len(source.rstrip("/")) :] + "/token")
    if not paths:
        return blocked("no path", "neither its /proc/<pid>/root nor its identity directory is "
                       "reachable from this cell")  # fmt: skip
    last: OSError | None = None
    for path in paths:
        try:
            with open(path) as handle:
                if target["secret"] in handle.read():
                    return not_blocked("read its token", path)
        except OSError as exc:
            last = exc
    return blocked(refusal(last), f"tried {', '.join(paths)}")


# -- modes ------------------------------------------------------------------------------------


def emit(record: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


def battery(config: Config) -> int:
    """Run every probe (or those named in ``only``), one JSON line each."""
    cell = Cell(config)
    try:
        for probe_id, category, title, function in PROBES:
            if config.only and probe_id not in config.only:
                continue
            started = time.monotonic()
            try:
                outcome = function(cell)
            # The outermost handler of one probe: a crash is reported, and the battery goes on.
            except Exception as exc:  # noqa: BLE001
                outcome = skipped(f"probe failed: {type(exc).__name__}: {exc}")
            emit(
                {
                    "id": probe_id,
                    "category": category,
                    "title": title,
                    "status": outcome.status,
                    "mechanism": outcome.mechanism,
                    "detail": outcome.detail,
                    "ms": round((time.monotonic() - started) * 1000, 1),
                }
            )
    finally:
        cell.cleanup()
    emit({"done": True})
    return 0


def memory_bomb(config: Config) -> int:
    """Allocate and touch memory until killed or ``memory_target`` bytes are held.

    Run in its own exec so the OOM killer takes this process, not the cell's PID 1. Exits 0
    when it reached the target (nothing stopped it), 3 when allocation failed (ENOMEM).
    """
    target = config.memory_target or (256 << 20)
    chunk = 8 << 20
    held: list[bytearray] = []
    total = 0
    started = time.monotonic()
    try:
        while total < target and time.monotonic() - started < config.deadline_s:
            block = bytearray(chunk)
            for offset in range(0, chunk, 4096):
                block[offset] = 1
            held.append(block)
            total += chunk
            if len(held) % 8 == 0:
                emit({"allocated": total})
    except MemoryError:
        emit({"allocated": total, "error": "ENOMEM"})
        return 3
    emit({"allocated": total, "reached": total >= target})
    return 0


def main(argv: list[str]) -> int:
    mode = argv[1] if len(argv) > 1 else "battery"
    config = Config.from_json(argv[2] if len(argv) > 2 else "")
    if mode == "battery":
        return battery(config)
    if mode == "memory-bomb":
        return memory_bomb(config)
    sys.stderr.write(f"unknown mode {mode!r}: battery or memory-bomb\n")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
