"""Rules about the policy and the spec rather than one setting: empty policies, exceptions,
the tenant's runtime, a pinned host uid."""

from __future__ import annotations

from agentcell.policy.rules.base import Check, Rule, Violation
from agentcell.policy.view import CellView

__all__ = [
    "PINNED_UID",
    "POLICY_ADMITS_NOTHING",
    "REQUIRED_RUNTIME",
    "RULES",
    "STRICT_ISOLATION",
    "UNKNOWN_EXCEPTION_ID",
    "requires_runtime",
    "unknown_exception_rule",
]


def _nothing(view: CellView) -> list[Violation]:
    return []


def _never(view: CellView) -> bool:
    return False


POLICY_ADMITS_NOTHING = Rule(
    id="AC-000",
    severity="error",
    title="Policy admits nothing",
    rationale="An all-of or any-of policy built from an empty list would otherwise admit "
    "everything, or nothing, by accident. It fails closed and says so.",
    remediation="Configure at least one policy in the combination.",
    security_severity=0.0,
    check=_nothing,
    applies=_never,
)


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


REQUIRED_RUNTIME = Rule(
    id="AC-035",
    severity="error",
    title="Runtime required by tenant not used",
    rationale="A tenant whose isolation level requires gVisor (runsc) or another runtime "
    "must not get a cell that shares the host kernel directly.",
    remediation="Set security.runtime to the runtime the tenant requires.",
    security_severity=8.0,
    check=requires_runtime(None),
    applies=_never,
)


UNKNOWN_EXCEPTION_ID = "AC-036"


def unknown_exception_rule(rule_ids: frozenset[str]) -> Rule:
    """AC-036, judging each exception a spec writes against ``rule_ids``.

    The ids are the whole catalogue's, which is assembled from every theme module including
    this one, so the catalogue hands them in rather than this module importing it.
    """

    def check(view: CellView) -> list[Violation]:
        return [
            Violation(
                message=f"exception names rule {exception.rule}, which does not exist",
                fact="exceptions",
                item=exception.field,
                fix="`agentcell rules` lists the rule ids; fix the id or drop the exception",
            )
            for exception in view.exceptions
            if exception.rule not in rule_ids
        ]

    return Rule(
        id=UNKNOWN_EXCEPTION_ID,
        severity="warning",
        title="Exception names an unknown rule",
        rationale="An exception for a rule that does not exist is usually a typo, and the "
        "finding it meant to accept is still refused.",
        remediation="Fix the rule id (see `agentcell rules`) or drop the exception.",
        security_severity=0.0,
        check=check,
        applies=lambda view: bool(view.exceptions),
    )


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


PINNED_UID = Rule(
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
)


def _strict_isolation(view: CellView) -> list[Violation]:
    why = "its tenant's isolation level is strict"
    found = []
    if view.seccomp != "strict":
        found.append(
            Violation(
                message=f"seccomp is {view.seccomp}, but {why} (the strict profile only)",
                fact="seccomp",
                fix="drop security.seccomp (strict is the default)",
            )
        )
    for mount in view.host_mounts:
        if not (mount.provided and mount.read_only):
            found.append(
                Violation(
                    message=f"mounts host path {mount.host_path} at {mount.target}, but {why} "
                    "(no host mounts)",
                    fact="host_mounts",
                    item=mount.field,
                    fix="remove the host mount",
                )
            )
    shared = [
        name
        for name, on in (
            ("PID", view.host_pid),
            ("network", view.host_network),
            ("IPC", view.host_ipc),
            ("UTS", view.host_uts),
        )
        if on
    ]
    if shared:
        found.append(
            Violation(
                message=f"shares the host's {', '.join(shared)} namespace, but {why}",
                fact="host_pid" if view.host_pid else "host_network",
                fix="drop host.pid and host.network",
            )
        )
    return found


STRICT_ISOLATION = Rule(
    id="AC-041",
    severity="error",
    title="Tenant isolation level strict not met",
    rationale="A strict tenant runs untrusted code: every cell must be on gVisor with the "
    "strict seccomp profile and see nothing of the host. The level is the tenant's, so no "
    "spec can except it.",
    remediation="Run the cell on runsc with seccomp strict and no host mounts or namespaces, "
    "or put it in a standard tenant.",
    security_severity=8.0,
    check=_strict_isolation,
    applies=_never,
)


# AC-036 is made by the catalogue, with every id (unknown_exception_rule).
RULES: tuple[Rule, ...] = (
    POLICY_ADMITS_NOTHING,
    REQUIRED_RUNTIME,
    PINNED_UID,
    STRICT_ISOLATION,
)
