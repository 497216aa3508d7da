"""The filesystem a cell sees: its root, its tmpfs, host mounts, engine sockets and
agentcell's own state."""

from __future__ import annotations

from agentcell.cell.paths import agentcell_state_dirs
from agentcell.policy.rules.base import Check, Rule, Violation
from agentcell.policy.view import CellView, HostMountFact

__all__ = [
    "AGENTCELL_STATE_MOUNTED",
    "HOST_MOUNT_READ_ONLY",
    "HOST_MOUNT_WRITABLE",
    "RULES",
    "SENSITIVE_MOUNT_READ_ONLY",
    "SENSITIVE_MOUNT_WRITABLE",
    "SHARED_PROPAGATION",
    "SOCKET_READ_ONLY",
    "SOCKET_WRITABLE",
    "UNSIZED_TMPFS",
    "WRITABLE_ROOTFS",
]


def _writable_rootfs(view: CellView) -> list[Violation]:
    if view.read_only_rootfs:
        return []
    return [Violation(message="root filesystem is writable", fact="read_only_rootfs")]


WRITABLE_ROOTFS = Rule(
    id="AC-007",
    severity="error",
    title="Writable root filesystem",
    rationale="A writable image lets an intruder replace binaries and libraries the agent "
    "trusts, and persist across restarts of the process.",
    remediation="Keep security.read_only_rootfs true (--read-only) and give the agent a "
    "sized tmpfs for scratch space.",
    cis=("5.13",),
    security_severity=5.0,
    check=_writable_rootfs,
)


def _tmpfs(view: CellView) -> list[Violation]:
    return [
        Violation(
            message=f"tmpfs {mount.path} has no size limit (the kernel allows half of host RAM)",
            fact="tmpfs",
            item=mount.field,
            fix=f"mount it with a size, e.g. --tmpfs {mount.path}:size=64m",
        )
        for mount in view.tmpfs
        if mount.size is None
    ]


UNSIZED_TMPFS = Rule(
    id="AC-015",
    severity="warning",
    title="tmpfs without a size",
    rationale="An unsized tmpfs may grow to half of the host's RAM.",
    remediation="Give every tmpfs a size (--tmpfs /tmp:size=64m).",
    security_severity=3.0,
    check=_tmpfs,
)


def _socket_writable(view: CellView) -> list[Violation]:
    found = []
    for mount in view.host_mounts:
        socket = mount.engine_socket
        if socket is not None and not mount.read_only:
            via = "" if mount.is_socket else f" (inside {mount.host_path})"
            found.append(
                Violation(
                    message=f"engine socket {socket}{via} is mounted writable at {mount.target}: "
                    "full control of the engine, and so of the host",
                    fact="host_mounts",
                    item=mount.field,
                )
            )
    return found


SOCKET_WRITABLE = Rule(
    id="AC-022",
    severity="error",
    title="Engine socket mounted writable",
    rationale="Whoever can talk to the Docker (or containerd, CRI-O, podman) socket can "
    "start a privileged container with the host's / mounted: it is root on the host.",
    remediation="Remove the mount. Use a filtering proxy that allows only the read calls "
    "the agent needs.",
    cis=("5.32",),
    pss="baseline",
    security_severity=10.0,
    check=_socket_writable,
)


def _socket_mounted(view: CellView) -> list[Violation]:
    found = []
    for mount in view.host_mounts:
        socket = mount.engine_socket
        if socket is not None and mount.read_only:
            via = "" if mount.is_socket else f" (inside {mount.host_path})"
            found.append(
                Violation(
                    message=f"engine socket {socket}{via} is mounted at {mount.target}; read-only "
                    "does not stop API calls, so this is control of the engine (high risk)",
                    fact="host_mounts",
                    item=mount.field,
                )
            )
    return found


SOCKET_READ_ONLY = Rule(
    id="AC-023",
    severity="error",
    title="Engine socket mounted read-only",
    rationale="A read-only bind mount of a socket still lets the cell connect to it, so "
    "the whole engine API, including creating privileged containers, stays reachable. "
    "Read-only only stops the cell from replacing the socket file.",
    remediation="Remove host.docker_socket. Monitoring agents should reach the engine "
    "through a filtering proxy that allows only read calls.",
    cis=("5.32",),
    pss="baseline",
    security_severity=9.0,
    check=_socket_mounted,
)


def _own(mount: HostMountFact) -> bool:
    """A read-only mount agentcell provides itself (identity, control-plane socket): not host
    access the spec asked for. A writable one is judged like any other."""
    return mount.provided and mount.read_only


def _sensitive_mounts(*, writable: bool) -> Check:
    def check(view: CellView) -> list[Violation]:
        found = []
        for mount in view.host_mounts:
            if mount.is_socket or mount.read_only == writable or _own(mount):
                continue
            directory = mount.sensitive
            if directory is None:
                continue
            mode = "writable" if writable else "read-only"
            inside = "" if directory == mount.host_path else f" (sensitive: {directory})"
            found.append(
                Violation(
                    message=f"host path {mount.host_path}{inside} is mounted {mode} "
                    f"at {mount.target}",
                    fact="host_mounts",
                    item=mount.field,
                )
            )
        return found

    return check


SENSITIVE_MOUNT_WRITABLE = Rule(
    id="AC-024",
    severity="error",
    title="Sensitive host path mounted writable",
    rationale="Writing to the host's /, /etc, /proc, /sys, /dev, /boot, /lib, /usr, /run "
    "or the engine's data directory is a direct way to become root on the host.",
    remediation="Mount only what the agent needs, read-only (read_only: true), and never "
    "a system directory writable.",
    cis=("5.6",),
    pss="baseline",
    security_severity=9.0,
    check=_sensitive_mounts(writable=True),
)


SENSITIVE_MOUNT_READ_ONLY = Rule(
    id="AC-025",
    severity="error",
    title="Sensitive host path mounted read-only",
    rationale="Even read-only, host system directories reveal secrets (/etc/shadow, keys, "
    "other processes' environments under /proc) and kernel details that help an attack.",
    remediation="Remove the mount, or use the monitoring-agent preset for agents whose job "
    "is to read the host's /proc and /sys.",
    cis=("5.6",),
    pss="baseline",
    security_severity=6.0,
    check=_sensitive_mounts(writable=False),
)


def _other_mounts(*, writable: bool) -> Check:
    def check(view: CellView) -> list[Violation]:
        found = []
        for mount in view.host_mounts:
            if mount.read_only == writable or mount.sensitive or mount.engine_socket:
                continue
            if _own(mount):
                continue
            mode = "writable" if writable else "read-only"
            found.append(
                Violation(
                    message=f"host path {mount.host_path} is mounted {mode} at {mount.target}",
                    fact="host_mounts",
                    item=mount.field,
                )
            )
        return found

    return check


HOST_MOUNT_WRITABLE = Rule(
    id="AC-026",
    severity="warning",
    title="Host path mounted writable",
    rationale="A writable host mount lets a compromised agent plant files the host or "
    "other cells later trust.",
    remediation="Mount it read-only unless the agent must write there.",
    pss="baseline",
    security_severity=5.0,
    check=_other_mounts(writable=True),
)


HOST_MOUNT_READ_ONLY = Rule(
    id="AC-027",
    severity="warning",
    title="Host path mounted read-only",
    rationale="Each host mount widens what the cell can see of the host; every one should "
    "be intended.",
    remediation="Remove the mount unless the agent needs it.",
    pss="baseline",
    security_severity=2.0,
    check=_other_mounts(writable=False),
)


def _propagation(view: CellView) -> list[Violation]:
    return [
        Violation(
            message=f"mount {mount.target} uses {mount.propagation} propagation: mounts made in "
            "the cell appear on the host",
            fact="host_mounts",
            item=mount.field,
        )
        for mount in view.host_mounts
        if mount.propagation in ("shared", "rshared")
    ]


SHARED_PROPAGATION = Rule(
    id="AC-028",
    severity="warning",
    title="Shared mount propagation",
    rationale="With shared propagation, mounts made inside the cell appear on the host.",
    remediation="Use the default rprivate propagation.",
    cis=("5.20",),
    security_severity=5.0,
    check=_propagation,
)


def _agentcell_state_mounts(view: CellView) -> list[Violation]:
    state_dirs = agentcell_state_dirs()
    found = []
    for mount in view.host_mounts:
        if _own(mount):
            continue
        directory = mount.agentcell_state(state_dirs)
        if directory is None:
            continue
        inside = "" if directory == mount.host_path else f" (agentcell's {directory})"
        found.append(
            Violation(
                message=f"host path {mount.host_path}{inside} is mounted at {mount.target}: it "
                "holds agentcell's keys, join tokens, database or sockets, and other cells' "
                "identities",
                fact="host_mounts",
                item=mount.field,
                fix="remove the mount; a cell gets its own identity with identity: true",
            )
        )
    return found


AGENTCELL_STATE_MOUNTED = Rule(
    id="AC-040",
    severity="error",
    title="agentcell's own state mounted",
    rationale="agentcell's state, run and identity directories hold the CA key, the admin "
    "token, every cell's join token and the control plane's sockets. A cell that can read "
    "them can enrol as any agent of any tenant. This rule cannot be excepted.",
    remediation="Remove the mount. A cell that needs an identity asks for identity: true "
    "and gets its own directory, read-only.",
    security_severity=9.5,
    check=_agentcell_state_mounts,
)


RULES: tuple[Rule, ...] = (
    WRITABLE_ROOTFS,
    UNSIZED_TMPFS,
    SOCKET_WRITABLE,
    SOCKET_READ_ONLY,
    SENSITIVE_MOUNT_WRITABLE,
    SENSITIVE_MOUNT_READ_ONLY,
    HOST_MOUNT_WRITABLE,
    HOST_MOUNT_READ_ONLY,
    SHARED_PROPAGATION,
    AGENTCELL_STATE_MOUNTED,
)
