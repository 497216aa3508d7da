"""The rule catalogue: what agentcell checks in a cell, why, and how to fix it.

Every rule judges a :class:`~agentcell.policy.view.CellView`, so the same rule refuses a spec
in ``up``, reports it in ``lint`` and flags a running container in ``audit``. Rules are pure:
``check(view)`` returns the violations it sees and never raises for a bad cell.

Each rule names the CIS Docker Benchmark v1.6.0 controls and the Kubernetes Pod Security
Standards level it serves, where one does. Several go beyond docker-bench on purpose: CIS 5.4
passes any container that added no capability, while AC-002 also asks that the defaults were
dropped; CIS 5.22 passes the engine's default seccomp profile, while AC-009 notes that Docker
20.10's default lets io_uring through.

Rule ids are stable (``^[A-Z]+-\\d{3}$``); specs name them in ``spec.exceptions``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from agentcell.cell.fields import FieldPath
from agentcell.cell.paths import agentcell_state_dirs
from agentcell.policy.admission import SEVERITY_RANK, Finding, Severity
from agentcell.policy.view import CellView, HostMountFact
from agentcell.spec.units import format_bytes

__all__ = [
    "CATALOGUE",
    "DANGEROUS_CAPABILITIES",
    "RULE_IDS",
    "PssLevel",
    "Rule",
    "Violation",
    "requires_runtime",
    "rule",
]

PssLevel = Literal["baseline", "restricted"]
RULE_ID = re.compile(r"^[A-Z]+-\d{3}$")


@dataclass(frozen=True, kw_only=True)
class Violation:
    """One thing a rule found wrong in one view."""

    message: str
    fact: str
    """The :class:`CellView` field at fault, to locate the finding."""
    item: FieldPath | None = None
    """The source path of the one list item at fault (a mount, a port), if it is one."""
    fix: str | None = None
    """A fix more specific than the rule's remediation."""
    severity: Severity | None = None
    """Lowers the finding below the rule's severity, e.g. when a fact is only unknown."""


Check = Callable[[CellView], Sequence[Violation]]


def _always(view: CellView) -> bool:
    return True


@dataclass(frozen=True, kw_only=True)
class Rule:
    """One check, with everything a user needs to understand and fix what it reports."""

    id: str
    severity: Severity
    """The severity in the ``restricted`` preset; presets may lower or raise it."""
    title: str
    rationale: str
    remediation: str
    cis: tuple[str, ...] = ()
    """CIS Docker Benchmark v1.6.0 control ids, e.g. ``("5.5",)``."""
    pss: PssLevel | None = None
    """The Kubernetes Pod Security Standards level whose controls this rule mirrors."""
    security_severity: float = 5.0
    """0-10, as SARIF consumers (GitHub code scanning) rank security results."""
    check: Check = field(compare=False, repr=False)
    applies: Callable[[CellView], bool] = field(default=_always, compare=False, repr=False)
    """False when the rule has nothing to judge in a view (it then does not count in scores)."""

    def __post_init__(self) -> None:
        if not RULE_ID.match(self.id):
            raise ValueError(f"rule id {self.id!r} does not match {RULE_ID.pattern}")

    def findings(self, view: CellView, *, severity: Severity | None = None) -> list[Finding]:
        """The rule's findings for ``view`` at ``severity`` (default: the rule's own)."""
        ceiling = severity or self.severity
        findings = []
        for violation in self.check(view):
            level = ceiling
            if (
                violation.severity is not None
                and SEVERITY_RANK[violation.severity] < SEVERITY_RANK[ceiling]
            ):
                level = violation.severity
            findings.append(
                Finding(
                    rule=self.id,
                    severity=level,
                    message=violation.message,
                    where=view.where(violation.fact, violation.item),
                    fix=violation.fix or self.remediation,
                )
            )
        return findings


# -- checks ------------------------------------------------------------------------------------

# Capabilities that amount to host root, or to a well-known way out of a container.
DANGEROUS_CAPABILITIES: dict[str, str] = {
    "ALL": "every capability: privileged mode in all but name",
    "AUDIT_CONTROL": "turns kernel auditing off",
    "BPF": "loads eBPF programs into the host kernel",
    "DAC_OVERRIDE": "ignores file permissions on every file the cell can reach",
    "DAC_READ_SEARCH": "open_by_handle_at(2) reads host files (the 'shocker' escape)",
    "MAC_ADMIN": "changes LSM (AppArmor/SELinux) policy",
    "MAC_OVERRIDE": "bypasses LSM (AppArmor/SELinux) policy",
    "NET_ADMIN": "rewrites interfaces, routes and firewall rules",
    "NET_RAW": "raw sockets: spoofing and ARP/ICMP attacks on neighbouring cells",
    "PERFMON": "perf_event_open(2): kernel attack surface and side channels",
    "SETFCAP": "sets file capabilities, a path back to privilege",
    "SYSLOG": "reads the kernel log and kernel addresses (defeats KASLR)",
    "SYS_ADMIN": "mount, namespaces, BPF and more: the usual container escape",
    "SYS_BOOT": "reboots the host or loads a new kernel",
    "SYS_MODULE": "loads kernel modules",
    "SYS_PTRACE": "traces and injects code into other processes",
    "SYS_RAWIO": "raw I/O on devices, /dev/mem and I/O ports",
    "SYS_TIME": "sets the host's clock",
}


def _privileged(view: CellView) -> list[Violation]:
    if not view.privileged:
        return []
    return [Violation(message="runs in privileged mode", fact="privileged")]


def _caps_not_dropped(view: CellView) -> list[Violation]:
    if view.privileged:
        return [
            Violation(
                message="has every capability: privileged mode ignores dropped capabilities",
                fact="privileged",
            )
        ]
    if view.cap_drop_all:
        return []
    return [
        Violation(
            message="keeps the engine's default capabilities (CHOWN, DAC_OVERRIDE, FOWNER, "
            "NET_RAW, SETUID, SETGID, ...) because not all capabilities were dropped",
            fact="cap_drop_all",
        )
    ]


def _dangerous_caps(view: CellView) -> list[Violation]:
    return [
        Violation(
            message=f"adds capability {cap}: {DANGEROUS_CAPABILITIES[cap]}",
            fact="cap_add",
            fix=f"remove {cap} from the capabilities; if the agent truly needs it, run it "
            "under runsc and write a reasoned exception",
        )
        for cap in view.cap_add
        if cap in DANGEROUS_CAPABILITIES
    ]


def _added_caps(view: CellView) -> list[Violation]:
    return [
        Violation(message=f"adds capability {cap}", fact="cap_add")
        for cap in view.cap_add
        if cap not in DANGEROUS_CAPABILITIES
    ]


def _root(view: CellView) -> list[Violation]:
    if view.user == 0:
        shown = view.user_text or "the image default, root"
        return [Violation(message=f"runs as root (user {shown})", fact="user")]
    if view.user is None and not view.user_allocated:
        return [
            Violation(
                message=f"runs as user {view.user_text!r}, a name whose uid cannot be checked "
                "without the image; it may be root",
                fact="user",
                fix="set a numeric uid other than 0",
                severity="warning",
            )
        ]
    return []


def _new_privileges(view: CellView) -> list[Violation]:
    if view.no_new_privileges:
        return []
    return [
        Violation(
            message="may gain privileges through setuid binaries and file capabilities "
            "(no-new-privileges is off)",
            fact="no_new_privileges",
        )
    ]


def _writable_rootfs(view: CellView) -> list[Violation]:
    if view.read_only_rootfs:
        return []
    return [Violation(message="root filesystem is writable", fact="read_only_rootfs")]


def _seccomp_off(view: CellView) -> list[Violation]:
    if view.seccomp != "unconfined" and not view.privileged:
        return []
    why = "privileged mode turns it off" if view.privileged else "seccomp=unconfined"
    return [
        Violation(
            message=f"no seccomp filter: every syscall reaches the host kernel ({why})",
            fact="privileged" if view.privileged else "seccomp",
        )
    ]


def _io_uring(view: CellView) -> list[Violation]:
    if view.seccomp == "unconfined" or view.privileged or view.seccomp_blocks_io_uring:
        return []  # no filter at all is AC-008's business
    if view.runtime == "runsc":
        return []  # gVisor serves syscalls itself; io_uring never reaches the host kernel
    if view.seccomp_blocks_io_uring is None:
        return [
            Violation(
                message="cannot tell whether seccomp profile "
                f"{view.seccomp.removeprefix('custom:')} blocks io_uring_setup, io_uring_enter "
                "and io_uring_register",
                fact="seccomp",
                fix="make sure the profile returns an error for the io_uring_* syscalls",
                severity="info",
            )
        ]
    if view.seccomp == "default":
        message = (
            "the engine default seccomp profile allows io_uring_* on Docker 20.10, a large "
            "kernel attack surface that bypasses most syscall filtering"
        )
    else:
        message = "the seccomp profile allows io_uring_setup/io_uring_enter/io_uring_register"
    return [Violation(message=message, fact="seccomp")]


def _apparmor(view: CellView) -> list[Violation]:
    if view.privileged:
        return []  # AC-001 already says everything
    if view.apparmor == "unconfined":
        return [
            Violation(message="AppArmor is explicitly turned off (unconfined)", fact="apparmor")
        ]
    if view.apparmor == "":
        return [
            Violation(
                message="no AppArmor profile applied (AppArmor may be inactive on this host)",
                fact="apparmor",
                severity="info",
            )
        ]
    return []


def _memory(view: CellView) -> list[Violation]:
    if view.memory is not None:
        return []
    return [Violation(message="no memory limit", fact="memory")]


def _swap(view: CellView) -> list[Violation]:
    if view.memory is None:
        return []  # unlimited memory is AC-011's business
    if view.memory_swap is None:
        return [
            Violation(message="may use unlimited swap on top of its memory", fact="memory_swap")
        ]
    if view.memory_swap > view.memory:
        extra = format_bytes(view.memory_swap - view.memory)
        return [
            Violation(message=f"may use {extra} of swap on top of its memory", fact="memory_swap")
        ]
    return []


def _cpu(view: CellView) -> list[Violation]:
    if view.cpu_nanos is not None:
        return []
    return [Violation(message="no CPU limit (CPU shares only set a priority)", fact="cpu_nanos")]


def _pids(view: CellView) -> list[Violation]:
    if view.pids_limit is not None:
        return []
    return [Violation(message="no limit on processes and threads (fork bomb)", fact="pids_limit")]


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


def _namespace(flag: str, what: str) -> Check:
    def check(view: CellView) -> list[Violation]:
        if not getattr(view, flag):
            return []
        return [Violation(message=f"shares the host's {what} namespace", fact=flag)]

    return check


def _devices(view: CellView) -> list[Violation]:
    return [
        Violation(
            message=f"host device {device.host_path} is passed in as {device.container_path}",
            fact="devices",
            item=device.field,
        )
        for device in view.devices
    ]


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


def _digest_pinned(image: str) -> bool:
    return "@sha256:" in image or re.fullmatch(r"(sha256:)?[0-9a-f]{64}", image) is not None


def _tag(view: CellView) -> list[Violation]:
    if _digest_pinned(view.image):
        return []
    return [
        Violation(
            message=f"image {view.image} is referenced by tag; the tag can move to other content",
            fact="image",
            fix=f"pin it by digest: {view.image.split('@')[0]}@sha256:<digest>",
        )
    ]


def _healthcheck(view: CellView) -> list[Violation]:
    if view.healthcheck:
        return []
    if view.healthcheck is None:
        return [
            Violation(
                message="no healthcheck in the spec; the image's HEALTHCHECK, if any, applies",
                fact="healthcheck",
                severity="info",
            )
        ]
    return [Violation(message="no healthcheck", fact="healthcheck")]


def _restart(view: CellView) -> list[Violation]:
    if view.restart_policy in ("always", "unless-stopped"):
        return [
            Violation(
                message=f"restart policy {view.restart_policy} restarts a crashing cell forever",
                fact="restart_policy",
            )
        ]
    if view.restart_policy == "on-failure" and view.restart_max_retries is None:
        return [
            Violation(
                message="restart policy on-failure without a retry limit restarts forever "
                "(Docker reads 0 retries as unlimited)",
                fact="restart_max_retries",
                fix="set restart.max_retries between 1 and 5, or policy 'no'",
            )
        ]
    if view.restart_policy == "on-failure" and (view.restart_max_retries or 0) > 5:
        return [
            Violation(
                message=f"restart policy allows {view.restart_max_retries} retries; CIS 5.15 "
                "recommends at most 5",
                fact="restart_max_retries",
                severity="info",
            )
        ]
    return []


# Host addresses that mean "every interface" in a port binding (not a bind made here).
_WILDCARD_ADDRESSES = frozenset({"", "0.0.0.0", "::"})  # noqa: S104


def _wildcard_ports(view: CellView) -> list[Violation]:
    return [
        Violation(
            message=f"port {port.container_port} is published on every host interface",
            fact="ports",
            item=port.field,
            fix="bind it to one address, e.g. -p 127.0.0.1:8080:8080",
        )
        for port in view.ports
        if port.host_ip in _WILDCARD_ADDRESSES
    ]


def _privileged_ports(view: CellView) -> list[Violation]:
    return [
        Violation(
            message=f"port {port.container_port} is published on privileged host port "
            f"{port.host_port}",
            fact="ports",
            item=port.field,
        )
        for port in view.ports
        if port.host_port is not None and 0 < port.host_port < 1024
    ]


def _default_bridge(view: CellView) -> list[Violation]:
    if not view.default_bridge:
        return []
    return [
        Violation(
            message="attached to the default bridge, where every such container reaches "
            "every other",
            fact="network",
        )
    ]


def requires_runtime(required: str | None) -> Check:
    """The check behind AC-035 for a tenant whose isolation level requires ``required``."""

    def check(view: CellView) -> list[Violation]:
        if required is None or view.runtime == required:
            return []
        return [
            Violation(
                message=f"runs under {view.runtime or 'the engine default runtime'}, but its "
                f"tenant's isolation level requires {required}",
                fact="runtime",
                fix=f"set security.runtime: {required}",
            )
        ]

    return check


def _pinned_uid(view: CellView) -> list[Violation]:
    if view.user_allocated or view.user in (None, 0):
        return []  # root is AC-003's finding
    return [
        Violation(
            message=f"pins host uid {view.user_text}: every cell with that uid can read this "
            "one's processes, files and memory through a host /proc, and shares its per-uid "
            "kernel limits; a cell of another tenant holding it refuses the launch",
            fact="user",
            fix="omit security.user so agentcell gives the cell a host uid of its own",
        )
    ]


def _image_agentcell_labels(view: CellView) -> list[Violation]:
    if not view.image_agentcell_labels:
        return []
    return [
        Violation(
            message=f"image {view.image} carries agentcell's own labels "
            f"({', '.join(view.image_agentcell_labels)}): it claims to be a cell, with "
            "exceptions no spec granted; the container is judged as not agentcell's",
            fact="image_agentcell_labels",
            fix="rebuild the image without org.agentcell.* labels",
        )
    ]


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


def _known_exceptions(view: CellView) -> list[Violation]:
    return [
        Violation(
            message=f"exception names rule {exception.rule}, which does not exist",
            fact="exceptions",
            item=exception.field,
            fix="`agentcell rules` lists the rule ids; fix the id or drop the exception",
        )
        for exception in view.exceptions
        if exception.rule not in RULE_IDS
    ]


def _nothing(view: CellView) -> list[Violation]:
    return []


def _never(view: CellView) -> bool:
    return False


# gVisor under the ptrace platform, measured on a 2-CPU Debian 12 host with runsc 20221219
# (bench/verify.py --gvisor-pids): the sandbox's sentry and gofer threads count against the
# container's pids limit, ~39 idle and ~60 after the first exec; every process in the cell adds
# ~9 more (its ptrace stub and the sentry threads serving it). More CPUs mean more sentry threads.
GVISOR_SANDBOX_PIDS = 64
GVISOR_PIDS_PER_PROCESS = 9
GVISOR_MIN_CELL_PROCESSES = 16
GVISOR_MIN_PIDS = GVISOR_SANDBOX_PIDS + GVISOR_MIN_CELL_PROCESSES * GVISOR_PIDS_PER_PROCESS


def _gvisor_pids(view: CellView) -> list[Violation]:
    limit = view.pids_limit
    if view.runtime != "runsc" or limit is None or limit >= GVISOR_MIN_PIDS:
        return []
    room = max(0, (limit - GVISOR_SANDBOX_PIDS) // GVISOR_PIDS_PER_PROCESS)
    return [
        Violation(
            message=f"pids: {limit} under runsc leaves ~{room} for the cell's own processes; "
            f"gVisor's own threads take ~{GVISOR_SANDBOX_PIDS} and each process ~"
            f"{GVISOR_PIDS_PER_PROCESS} more",
            fact="pids_limit",
            fix=f"set pids >= {GVISOR_MIN_PIDS} (room for {GVISOR_MIN_CELL_PROCESSES} processes)",
        )
    ]


# -- the catalogue -----------------------------------------------------------------------------

CATALOGUE: tuple[Rule, ...] = (
    Rule(
        id="AC-000",
        severity="error",
        title="Policy admits nothing",
        rationale="An all-of or any-of policy built from an empty list would otherwise admit "
        "everything, or nothing, by accident. It fails closed and says so.",
        remediation="Configure at least one policy in the combination.",
        security_severity=0.0,
        check=_nothing,
        applies=_never,
    ),
    Rule(
        id="AC-001",
        severity="error",
        title="Privileged mode",
        rationale="A privileged container has every capability, every host device, no seccomp "
        "filter and no AppArmor profile: root in it is root on the host.",
        remediation="Do not use --privileged. Add the one capability the agent needs instead.",
        cis=("5.5",),
        pss="baseline",
        security_severity=10.0,
        check=_privileged,
    ),
    Rule(
        id="AC-002",
        severity="error",
        title="Capabilities not all dropped",
        rationale="The engine grants 14 capabilities by default (NET_RAW, DAC_OVERRIDE, SETUID, "
        "...). Docker-bench only looks for added ones; the default set is already enough for "
        "ARP spoofing and for abusing files owned by other users.",
        remediation="Drop ALL capabilities (--cap-drop ALL) and add back only those the agent "
        "needs.",
        cis=("5.4",),
        pss="restricted",
        security_severity=7.0,
        check=_caps_not_dropped,
    ),
    Rule(
        id="AC-003",
        severity="error",
        title="Dangerous capability added",
        rationale="Capabilities such as SYS_ADMIN, SYS_PTRACE, SYS_MODULE, DAC_READ_SEARCH or "
        "NET_RAW are known ways out of a container or onto its neighbours.",
        remediation="Remove the capability. If the agent cannot work without it, run it under "
        "gVisor (runsc) and write a reasoned exception.",
        cis=("5.4",),
        pss="baseline",
        security_severity=9.0,
        check=_dangerous_caps,
    ),
    Rule(
        id="AC-004",
        severity="warning",
        title="Capability added",
        rationale="Every capability added back widens what a compromised agent can do; each "
        "one should be needed and written down.",
        remediation="Remove the capability unless the agent needs it (NET_BIND_SERVICE is "
        "rarely needed: listen on a port above 1023).",
        cis=("5.4",),
        pss="restricted",
        security_severity=4.0,
        check=_added_caps,
    ),
    Rule(
        id="AC-005",
        severity="error",
        title="Runs as root",
        rationale="uid 0 in a container is uid 0 on the host unless user namespaces remap it: "
        "any escape, writable mount or leaked file descriptor is then root's.",
        remediation="Run as a numeric non-root uid (security.user, --user 1001:1001).",
        cis=("4.1",),
        pss="restricted",
        security_severity=7.5,
        check=_root,
    ),
    Rule(
        id="AC-006",
        severity="error",
        title="Privilege escalation allowed",
        rationale="Without no-new-privileges a setuid binary or a file capability in the image "
        "can raise the agent's privileges after it starts.",
        remediation="Keep security.no_new_privileges true (--security-opt no-new-privileges:true).",
        cis=("5.26",),
        pss="restricted",
        security_severity=7.0,
        check=_new_privileges,
    ),
    Rule(
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
    ),
    Rule(
        id="AC-008",
        severity="error",
        title="Seccomp disabled",
        rationale="Without a seccomp filter every syscall, including the rarely used ones that "
        "most kernel exploits go through, reaches the host kernel.",
        remediation="Use security.seccomp: strict (or default); never unconfined.",
        cis=("5.22",),
        pss="restricted",
        security_severity=8.0,
        check=_seccomp_off,
    ),
    Rule(
        id="AC-009",
        severity="warning",
        title="Seccomp profile allows io_uring",
        rationale="io_uring performs I/O without the syscalls that seccomp filters see and has "
        "been the source of many kernel privilege escalations. Docker 20.10's default profile "
        "allows it; docker-bench passes that profile.",
        remediation="Use security.seccomp: strict (agentcell's profile) or a custom profile that "
        "refuses io_uring_setup, io_uring_enter and io_uring_register.",
        security_severity=6.0,
        check=_io_uring,
    ),
    Rule(
        id="AC-010",
        severity="warning",
        title="AppArmor turned off",
        rationale="AppArmor confines file and mount access beyond what capabilities do; "
        "turning it off removes a layer the engine adds by default where AppArmor is active.",
        remediation="Do not pass apparmor=unconfined; keep the engine default profile or use "
        "the profile agentcell generates for the agent.",
        cis=("5.2",),
        pss="baseline",
        security_severity=5.0,
        check=_apparmor,
    ),
    Rule(
        id="AC-011",
        severity="error",
        title="No memory limit",
        rationale="A cell without a memory limit can push the host into the OOM killer, which "
        "may pick another tenant's cell or a host service.",
        remediation="Set resources.memory (--memory).",
        cis=("5.11",),
        security_severity=6.0,
        check=_memory,
    ),
    Rule(
        id="AC-012",
        severity="warning",
        title="Swap beyond the memory limit",
        rationale="Swap stretches a memory limit into slow disk I/O that hurts every tenant; "
        "memory plus swap equal to memory means no swap.",
        remediation="Set resources.memory_swap equal to resources.memory (--memory-swap equal "
        "to --memory).",
        security_severity=3.0,
        check=_swap,
    ),
    Rule(
        id="AC-013",
        severity="error",
        title="No CPU limit",
        rationale="Without a CPU quota one cell can take every core; CPU shares only set a "
        "priority that applies when the host is busy.",
        remediation="Set resources.cpus (--cpus).",
        cis=("5.12",),
        security_severity=5.0,
        check=_cpu,
    ),
    Rule(
        id="AC-014",
        severity="error",
        title="No PIDs limit",
        rationale="Without a PIDs limit a fork bomb in one cell exhausts the host's process table.",
        remediation="Set resources.pids (--pids-limit).",
        cis=("5.29",),
        security_severity=6.0,
        check=_pids,
    ),
    Rule(
        id="AC-015",
        severity="warning",
        title="tmpfs without a size",
        rationale="An unsized tmpfs may grow to half of the host's RAM.",
        remediation="Give every tmpfs a size (--tmpfs /tmp:size=64m).",
        security_severity=3.0,
        check=_tmpfs,
    ),
    Rule(
        id="AC-016",
        severity="error",
        title="Host network namespace",
        rationale="A cell in the host's network namespace reaches every host service on "
        "loopback, every interface and every tenant network, and bypasses egress control.",
        remediation="Drop host.network (--network host); use a tenant network.",
        cis=("5.10",),
        pss="baseline",
        security_severity=8.0,
        check=_namespace("host_network", "network"),
    ),
    Rule(
        id="AC-017",
        severity="error",
        title="Host PID namespace",
        rationale="A cell in the host's PID namespace sees every process on the host and, with "
        "the wrong capability, can signal or trace them.",
        remediation="Drop host.pid (--pid host). A monitoring agent can read processes from a "
        "read-only /proc mount instead.",
        cis=("5.16",),
        pss="baseline",
        security_severity=7.0,
        check=_namespace("host_pid", "PID"),
    ),
    Rule(
        id="AC-018",
        severity="error",
        title="Host IPC namespace",
        rationale="The host's IPC namespace exposes host processes' shared memory and message "
        "queues.",
        remediation="Do not pass --ipc host.",
        cis=("5.17",),
        pss="baseline",
        security_severity=7.0,
        check=_namespace("host_ipc", "IPC"),
    ),
    Rule(
        id="AC-019",
        severity="error",
        title="Host UTS namespace",
        rationale="In the host's UTS namespace the cell sees the host's hostname and, with "
        "SYS_ADMIN, can change it for everyone on the host.",
        remediation="Do not pass --uts host.",
        cis=("5.21",),
        security_severity=4.0,
        check=_namespace("host_uts", "UTS"),
    ),
    Rule(
        id="AC-020",
        severity="error",
        title="Host user namespace",
        rationale="On an engine that remaps users, --userns host turns the cell's root back "
        "into the host's root.",
        remediation="Do not pass --userns host.",
        cis=("5.31",),
        security_severity=7.0,
        check=_namespace("host_userns", "user"),
    ),
    Rule(
        id="AC-021",
        severity="error",
        title="Host device exposed",
        rationale="A host device node gives the cell direct access to hardware or kernel "
        "interfaces (disks, /dev/mem, GPUs) beyond any container boundary.",
        remediation="Do not pass --device. If hardware access is the point, write a reasoned "
        "exception naming the device.",
        cis=("5.18",),
        security_severity=8.0,
        check=_devices,
    ),
    Rule(
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
    ),
    Rule(
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
    ),
    Rule(
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
    ),
    Rule(
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
    ),
    Rule(
        id="AC-026",
        severity="warning",
        title="Host path mounted writable",
        rationale="A writable host mount lets a compromised agent plant files the host or "
        "other cells later trust.",
        remediation="Mount it read-only unless the agent must write there.",
        pss="baseline",
        security_severity=5.0,
        check=_other_mounts(writable=True),
    ),
    Rule(
        id="AC-027",
        severity="warning",
        title="Host path mounted read-only",
        rationale="Each host mount widens what the cell can see of the host; every one should "
        "be intended.",
        remediation="Remove the mount unless the agent needs it.",
        pss="baseline",
        security_severity=2.0,
        check=_other_mounts(writable=False),
    ),
    Rule(
        id="AC-028",
        severity="warning",
        title="Shared mount propagation",
        rationale="With shared propagation, mounts made inside the cell appear on the host.",
        remediation="Use the default rprivate propagation.",
        cis=("5.20",),
        security_severity=5.0,
        check=_propagation,
    ),
    Rule(
        id="AC-029",
        severity="warning",
        title="Image referenced by tag",
        rationale="A tag can be moved to other content; only a digest names exactly the image "
        "that was reviewed and signed.",
        remediation="Reference the image by digest (repo@sha256:...).",
        cis=("5.28",),
        security_severity=4.0,
        check=_tag,
    ),
    Rule(
        id="AC-030",
        severity="warning",
        title="No healthcheck",
        rationale="Without a healthcheck the engine reports a hung agent as running.",
        remediation="Add spec.healthcheck (or a HEALTHCHECK in the image).",
        cis=("4.6", "5.27"),
        security_severity=1.0,
        check=_healthcheck,
    ),
    Rule(
        id="AC-031",
        severity="warning",
        title="Unbounded restart policy",
        rationale="A crashing cell that restarts forever hides the failure and spends host "
        "resources; a bounded on-failure policy gives up and shows it.",
        remediation="Use restart.policy: on-failure with max_retries 5 or fewer.",
        cis=("5.15",),
        security_severity=3.0,
        check=_restart,
    ),
    Rule(
        id="AC-032",
        severity="warning",
        title="Port published on every interface",
        rationale="A port bound to 0.0.0.0 is reachable from every network the host is on.",
        remediation="Publish the port on one address (-p 127.0.0.1:PORT:PORT).",
        cis=("5.14",),
        security_severity=4.0,
        check=_wildcard_ports,
    ),
    Rule(
        id="AC-033",
        severity="warning",
        title="Privileged host port published",
        rationale="Host ports below 1024 are reserved for services the host trusts.",
        remediation="Publish on a host port above 1023.",
        cis=("5.8",),
        security_severity=3.0,
        check=_privileged_ports,
    ),
    Rule(
        id="AC-034",
        severity="warning",
        title="Default bridge network",
        rationale="Containers on docker0 can reach each other, whoever owns them; tenant "
        "networks keep tenants apart.",
        remediation="Attach the container to a user-defined (tenant) network, or none.",
        cis=("5.30",),
        security_severity=4.0,
        check=_default_bridge,
    ),
    Rule(
        id="AC-035",
        severity="error",
        title="Runtime required by tenant not used",
        rationale="A tenant whose isolation level requires gVisor (runsc) or another runtime "
        "must not get a cell that shares the host kernel directly.",
        remediation="Set security.runtime to the runtime the tenant requires.",
        security_severity=8.0,
        check=requires_runtime(None),
        applies=_never,
    ),
    Rule(
        id="AC-036",
        severity="warning",
        title="Exception names an unknown rule",
        rationale="An exception for a rule that does not exist is usually a typo, and the "
        "finding it meant to accept is still refused.",
        remediation="Fix the rule id (see `agentcell rules`) or drop the exception.",
        security_severity=0.0,
        check=_known_exceptions,
        applies=lambda view: bool(view.exceptions),
    ),
    Rule(
        id="AC-037",
        severity="error",
        title="pids limit too low for gVisor",
        rationale="Under runsc the host's pids limit also counts gVisor's own sentry and gofer "
        "threads and a stub per cell process; a limit sized for runc leaves room for a handful "
        "of processes, and reaching it ends the whole sandbox, which then fails to restart.",
        remediation=f"Set resources.pids to {GVISOR_MIN_PIDS} or more for runsc cells.",
        security_severity=3.0,
        check=_gvisor_pids,
        applies=lambda view: view.runtime == "runsc",
    ),
    Rule(
        id="AC-038",
        severity="warning",
        title="Host uid pinned by the spec",
        rationale="Without user namespaces a cell's uid is a host uid. Cells that share one "
        "can open each other's /proc/<pid>/root, environ, mem and fd through a host /proc "
        "mount, signal each other in a host PID namespace, and exhaust each other's per-uid "
        "limits (inotify instances, processes).",
        remediation="Omit security.user and security.group; agentcell allocates each cell a "
        "host uid of its own.",
        security_severity=5.0,
        check=_pinned_uid,
        applies=lambda view: view.kind == "spec",
    ),
    Rule(
        id="AC-039",
        severity="error",
        title="Image carries agentcell labels",
        rationale="The engine copies an image's labels into its containers. An image labelled "
        "org.agentcell.managed or org.agentcell.exceptions would make any container from it "
        "look like an admitted cell with exceptions that no spec granted.",
        remediation="Rebuild the image without org.agentcell.* labels; only agentcell sets "
        "them, when it creates a cell.",
        security_severity=7.0,
        check=_image_agentcell_labels,
    ),
    Rule(
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
    ),
)

RULE_IDS = frozenset(rule.id for rule in CATALOGUE)
_BY_ID = {rule.id: rule for rule in CATALOGUE}


def rule(rule_id: str) -> Rule:
    """The catalogue's rule ``rule_id``.

    Raises:
        KeyError: no rule has that id.
    """
    return _BY_ID[rule_id]
