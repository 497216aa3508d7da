"""The checks of the cell's processes: uids and gids, capabilities, no_new_privs, seccomp."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from agentcell.cell.seccomp import strict_profile
from agentcell.spec.model import AgentSpec
from agentcell.verify.compare.check import Check
from agentcell.verify.facts import Observation, Reading
from agentcell.verify.procfs import ProcStatus, capability_names

__all__ = [
    "CAP_SETS",
    "GVISOR_EXEC_SECCOMP_ISSUE",
    "capability_checks",
    "caps_text",
    "expected_id",
    "identity_checks",
    "no_new_privs_check",
    "seccomp_checks",
]

_UNREADABLE = object()

# Upstream gVisor: processes started by `runsc exec` (docker exec) do not get the container's
# OCI seccomp profile; runsc 20221219 on this kind of host shows Seccomp 0 for them.
GVISOR_EXEC_SECCOMP_ISSUE = "https://github.com/google/gvisor/issues/12693"


def caps_text(names: Iterable[str]) -> str:
    ordered = sorted(names)
    return ", ".join(ordered) if ordered else "none"


def _per_process(
    check_id: str,
    title: str,
    expected: str,
    reading: Reading[tuple[ProcStatus, ...]],
    observed_of: Callable[[ProcStatus], str | None],
    good: Callable[[ProcStatus], bool | None],
    *,
    why_unknown: str = "",
    note: str = "",
) -> Check:
    """One check over every process of the cell: it holds only if it holds for each."""
    if reading.value is None:
        return Check.unknown(id=check_id, title=title, expected=expected, reading=reading)
    bad, unknown, seen = [], [], set()
    for status in reading.value:
        verdict = good(status)
        shown = observed_of(status)
        if shown is not None:
            seen.add(shown)
        if verdict is None:
            unknown.append(status)
        elif not verdict:
            bad.append(f"pid {status.pid} ({status.name}): {shown}")
    if bad:
        return Check(
            id=check_id,
            title=title,
            status="mismatch",
            expected=expected,
            observed="; ".join(bad),
            source=reading.source,
            basis=reading.basis,
            why=note,
        )
    if unknown and len(unknown) == len(reading.value):
        return Check(
            id=check_id,
            title=title,
            status="unknown",
            expected=expected,
            observed="not shown",
            source=reading.source,
            basis=reading.basis,
            why=why_unknown,
        )
    count = len(reading.value)
    return Check(
        id=check_id,
        title=title,
        status="verified",
        expected=expected,
        observed=" | ".join(sorted(seen)) + f" ({count} process{'es' if count > 1 else ''})",
        source=reading.source,
        basis=reading.basis,
        why=note,
    )


def identity_checks(spec: AgentSpec, observation: Observation) -> list[Check]:
    processes = observation.processes

    def ids(values: tuple[int, ...]) -> str:
        return "/".join(map(str, values))

    user_text, user_ok = expected_id(spec.security.user)
    group_text, group_ok = expected_id(spec.security.group)
    groups_expected = "no supplementary root group (0)" if spec.security.group != 0 else "any"
    return [
        _per_process(
            "identity.uid",
            "uid (real/effective/saved/fs)",
            user_text,
            processes,
            lambda status: ids(status.uids),
            lambda status: all(user_ok(uid) for uid in status.uids),
        ),
        _per_process(
            "identity.gid",
            "gid (real/effective/saved/fs)",
            group_text,
            processes,
            lambda status: ids(status.gids),
            lambda status: all(group_ok(gid) for gid in status.gids),
        ),
        _per_process(
            "identity.groups",
            "supplementary groups",
            groups_expected,
            processes,
            lambda status: ",".join(map(str, status.groups)) or "none",
            lambda status: spec.security.group == 0 or 0 not in status.groups,
        ),
    ]


def expected_id(wanted: int | None) -> tuple[str, Callable[[int], bool]]:
    """(the expected uid or gid as text, whether an observed id meets it). A spec without one
    gets an id allocated by agentcell: any non-root id, the same in every field."""
    if wanted is None:
        return "non-root (allocated by agentcell)", lambda seen: seen != 0
    return str(wanted), lambda seen: seen == wanted


CAP_SETS: tuple[tuple[str, str, str], ...] = (
    ("caps.effective", "CapEff", "cap_effective"),
    ("caps.permitted", "CapPrm", "cap_permitted"),
    ("caps.inheritable", "CapInh", "cap_inheritable"),
    ("caps.bounding", "CapBnd", "cap_bounding"),
    ("caps.ambient", "CapAmb", "cap_ambient"),
)


def capability_checks(spec: AgentSpec, observation: Observation) -> list[Check]:
    allowed = frozenset(spec.security.capabilities)
    expected = f"within {{{caps_text(allowed)}}}"
    checks = []
    for check_id, line, attribute in CAP_SETS:

        def mask_of(status: ProcStatus, attribute: str = attribute) -> int | None:
            value: int | None = getattr(status, attribute)
            return value

        def shown(status: ProcStatus, mask_of: Callable[[ProcStatus], int | None] = mask_of) -> str:
            mask = mask_of(status)
            return "not shown" if mask is None else caps_text(capability_names(mask))

        def good(
            status: ProcStatus, mask_of: Callable[[ProcStatus], int | None] = mask_of
        ) -> bool | None:
            mask = mask_of(status)
            return None if mask is None else capability_names(mask) <= allowed

        checks.append(
            _per_process(
                check_id,
                f"capabilities {line}",
                expected,
                observation.processes,
                shown,
                good,
                why_unknown=f"this kernel's /proc does not print {line}",
            )
        )
    return checks


def no_new_privs_check(spec: AgentSpec, observation: Observation) -> Check:
    wanted = spec.security.no_new_privileges
    expected = "1" if wanted else "any (spec allows privilege gain)"
    target = observation.target
    if target.sandboxed:
        view = target.sandbox
        host = observation.sandbox_process.value
        host_text = (
            f"; sandbox process on the host: NoNewPrivs {int(bool(host.no_new_privs))}"
            if host is not None and host.no_new_privs is not None
            else ""
        )
        if view is None or view.no_new_privs is None:
            return Check(
                id="nnp",
                title="no_new_privs",
                status="unknown",
                expected=expected,
                observed="not shown" + host_text,
                source="prctl(PR_GET_NO_NEW_PRIVS) inside the gVisor sandbox",
                basis="image",
                why=target.sandbox_error or "gVisor's /proc does not print NoNewPrivs",
            )
        ok = view.no_new_privs or not wanted
        return Check.judged(
            id="nnp",
            title="no_new_privs",
            ok=ok,
            expected=expected,
            observed=f"{int(view.no_new_privs)} (prctl in an exec'd process){host_text}",
            source="prctl(PR_GET_NO_NEW_PRIVS) inside the gVisor sandbox",
            basis="image",
            why="gVisor's /proc does not print NoNewPrivs; an exec'd process runs with the "
            "cell's process settings",
        )
    return _per_process(
        "nnp",
        "no_new_privs",
        expected,
        observation.processes,
        lambda status: (
            "not shown" if status.no_new_privs is None else str(int(status.no_new_privs))
        ),
        lambda status: None if status.no_new_privs is None else (status.no_new_privs or not wanted),
        why_unknown="this kernel's /proc does not print NoNewPrivs",
    )


def _expected_profile(mode: str) -> tuple[str, Any]:
    """(a name for the spec's seccomp setting, the profile the engine should hold)."""
    if mode == "default":
        return "the engine's default profile", None
    if mode == "unconfined":
        return "unconfined", "unconfined"
    if mode == "strict":
        return "agentcell strict profile", strict_profile()
    path = Path(mode)
    try:
        return f"custom profile {path}", json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        return f"custom profile {path} (unreadable: {exc})", _UNREADABLE


def _profile_name(record: str | None, expected: Any) -> tuple[str, bool]:
    """(what the engine holds, whether it is the expected profile)."""
    if record is None:
        return "the engine's default profile", expected is None
    if record == "unconfined":
        return "unconfined", expected == "unconfined"
    try:
        held = json.loads(record)
    except json.JSONDecodeError:
        return "an unreadable profile", False
    if held == expected:
        return "the expected profile", True
    comment = held.get("comment") if isinstance(held, dict) else None
    return (f"another profile ({comment[:40]}...)" if comment else "another profile"), False


def seccomp_checks(spec: AgentSpec, observation: Observation) -> list[Check]:
    mode = spec.security.seccomp
    target = observation.target
    name, expected_profile = _expected_profile(mode)
    held, same = _profile_name(target.engine.seccomp_profile, expected_profile)
    profile_source = "docker inspect: HostConfig.SecurityOpt"

    if target.sandboxed:
        host = observation.sandbox_process
        mode_check: Check
        if host.value is None:
            mode_check = Check.unknown(
                id="seccomp.mode",
                title="seccomp filter (gVisor sentry)",
                expected="2",
                reading=host,
            )
        else:
            filter_mode = host.value.seccomp_mode
            mode_check = Check.judged(
                id="seccomp.mode",
                title="seccomp filter (gVisor sentry on the host)",
                ok=filter_mode == 2,
                expected="2 (the sentry's own filter)",
                observed=f"{filter_mode} ({host.value.seccomp_filters} filters), "
                f"pid {host.value.pid} {host.value.name}",
                source=host.source,
                basis="kernel",
                why="runsc confines its sentry with its own filter; the cell's syscalls are "
                "served by the sentry, not by the host kernel",
            )
        oci_seccomp = "--oci-seccomp" in target.engine.runtime_args
        args = " ".join(target.engine.runtime_args) or "no arguments"
        profile_check = Check(
            id="seccomp.profile",
            title="seccomp profile of the spec",
            status=("configured" if same else "mismatch") if oci_seccomp else "not-enforced",
            expected=name,
            observed=held if oci_seccomp else f"{held}, ignored by runsc",
            source=f"{profile_source}; runsc arguments: {args}",
            basis="engine",
            why=(
                "gVisor applies it inside the sandbox; its /proc does not show the filter"
                if oci_seccomp
                else "runsc applies an OCI seccomp profile only with --oci-seccomp, and this "
                f"engine registers runsc with {args}; gVisor's sentry serves every syscall"
            ),
        )
        if mode == "unconfined":
            profile_check = Check(**{**asdict(profile_check), "status": "verified"})
        return [mode_check, profile_check, _exec_seccomp_gvisor(mode, observation)]

    want_filter = mode != "unconfined"
    mode_check = _per_process(
        "seccomp.mode",
        "seccomp filter mode",
        "2 (filter)" if want_filter else "any (spec: unconfined)",
        observation.processes,
        lambda status: f"{status.seccomp_mode} ({status.seccomp_filters} filters)",
        lambda status: (
            None
            if status.seccomp_mode is None
            else (status.seccomp_mode == 2 and (status.seccomp_filters or 1) >= 1)
            or not want_filter
        ),
        why_unknown="this kernel's /proc does not print Seccomp",
    )
    profile_check = Check.judged(
        id="seccomp.profile",
        title="seccomp profile",
        ok=same,
        expected=name,
        observed=held,
        source=profile_source,
        basis="engine",
        why="the kernel shows that a filter is loaded, not which one; "
        "`agentcell probe` tests what it blocks",
        holds="configured",
    )
    return [mode_check, profile_check, _exec_seccomp(mode, observation)]


def _exec_seccomp(mode: str, observation: Observation) -> Check:
    """runc and crun apply the container's profile to a process started by exec too; the host's
    /proc of one such process, started by verify, shows whether it did."""
    title = "seccomp filter of a process started by exec"
    want_filter = mode != "unconfined"
    expected = "2 (filter)" if want_filter else "any (spec: unconfined)"
    reading = observation.exec_process
    if reading.value is None:
        return Check.unknown(id="seccomp.exec", title=title, expected=expected, reading=reading)
    status = reading.value
    if status.seccomp_mode is None:
        return Check(
            id="seccomp.exec",
            title=title,
            status="unknown",
            expected=expected,
            observed="not shown",
            source=reading.source,
            basis="kernel",
            why="this kernel's /proc does not print Seccomp",
        )
    ok = status.seccomp_mode == 2 or not want_filter
    return Check.judged(
        id="seccomp.exec",
        title=title,
        ok=ok,
        expected=expected,
        observed=f"{status.seccomp_mode} ({status.seccomp_filters} filters), "
        f"pid {status.pid} ({status.name})",
        source=reading.source,
        basis="kernel",
        why="" if ok else "a command run with docker exec is not confined by the cell's profile",
    )


def _exec_seccomp_gvisor(mode: str, observation: Observation) -> Check:
    """runsc leaves processes started by exec outside the OCI profile: say so, never verify."""
    title = "seccomp filter of a process started by exec"
    if mode == "unconfined":
        return Check(
            id="seccomp.exec",
            title=title,
            status="verified",
            expected="any (spec: unconfined)",
            observed="nothing to apply",
            source="spec",
            basis="engine",
        )
    reading = observation.exec_process
    told = (
        f"the image reports Seccomp {reading.value.seccomp_mode} for its exec'd reader"
        if reading.value is not None and reading.value.seccomp_mode is not None
        else f"no in-sandbox reading ({reading.error or 'not shown'})"
    )
    return Check(
        id="seccomp.exec",
        title=title,
        status="not-enforced",
        expected="the cell's profile (2, filter)",
        observed=f"not applied by runsc; {told}",
        source=f"runsc's exec path; {reading.source}",
        basis="image" if reading.value is not None else "host",
        why="this runsc applies the OCI seccomp profile to the container's init process only: "
        "a command run with docker exec can call io_uring_setup and unshare(CLONE_NEWUSER) "
        f"(gVisor issue 12693, {GVISOR_EXEC_SECCOMP_ISSUE}); the sentry's own filter still "
        "confines what reaches the host kernel",
    )
