"""Privilege: the user a cell runs as, its capabilities, no-new-privileges, privileged mode."""

from __future__ import annotations

from agentcell.policy.rules.base import Rule, Violation
from agentcell.policy.view import CellView

__all__ = [
    "CAPABILITIES_NOT_DROPPED",
    "CAPABILITY_ADDED",
    "DANGEROUS_CAPABILITIES",
    "DANGEROUS_CAPABILITY",
    "PRIVILEGED_MODE",
    "PRIVILEGE_ESCALATION",
    "RULES",
    "RUNS_AS_ROOT",
]


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


PRIVILEGED_MODE = Rule(
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
)


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


CAPABILITIES_NOT_DROPPED = Rule(
    id="AC-002",
    severity="error",
    title="Capabilities not all dropped",
    rationale="The engine grants 14 capabilities by default (NET_RAW, DAC_OVERRIDE, SETUID, "
    "...). Docker-bench only looks for added ones; the default set is already enough for "
    "ARP spoofing and for abusing files owned by other users.",
    remediation="Drop ALL capabilities (--cap-drop ALL) and add back only those the agent needs.",
    cis=("5.4",),
    pss="restricted",
    security_severity=7.0,
    check=_caps_not_dropped,
)


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


DANGEROUS_CAPABILITY = Rule(
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
)


def _added_caps(view: CellView) -> list[Violation]:
    return [
        Violation(message=f"adds capability {cap}", fact="cap_add")
        for cap in view.cap_add
        if cap not in DANGEROUS_CAPABILITIES
    ]


CAPABILITY_ADDED = Rule(
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
)


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


RUNS_AS_ROOT = Rule(
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
)


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


PRIVILEGE_ESCALATION = Rule(
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
)


RULES: tuple[Rule, ...] = (
    PRIVILEGED_MODE,
    CAPABILITIES_NOT_DROPPED,
    DANGEROUS_CAPABILITY,
    CAPABILITY_ADDED,
    RUNS_AS_ROOT,
    PRIVILEGE_ESCALATION,
)
