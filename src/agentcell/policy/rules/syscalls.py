"""Syscall and LSM confinement: seccomp on or off, io_uring through it, AppArmor."""

from __future__ import annotations

from agentcell.policy.rules.base import Rule, Violation
from agentcell.policy.view import CellView

__all__ = [
    "APPARMOR_OFF",
    "RULES",
    "SECCOMP_ALLOWS_IO_URING",
    "SECCOMP_DISABLED",
]


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


SECCOMP_DISABLED = Rule(
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
)


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


SECCOMP_ALLOWS_IO_URING = Rule(
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
)


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


APPARMOR_OFF = Rule(
    id="AC-010",
    severity="warning",
    title="AppArmor turned off",
    rationale="AppArmor confines file and mount access beyond what capabilities do; "
    "turning it off removes a layer the engine adds by default where AppArmor is active.",
    remediation="Do not pass apparmor=unconfined; keep the engine's default profile, or load a "
    "profile written for the agent (apparmor_parser) and name it with apparmor=PROFILE.",
    cis=("5.2",),
    pss="baseline",
    security_severity=5.0,
    check=_apparmor,
)


RULES: tuple[Rule, ...] = (
    SECCOMP_DISABLED,
    SECCOMP_ALLOWS_IO_URING,
    APPARMOR_OFF,
)
