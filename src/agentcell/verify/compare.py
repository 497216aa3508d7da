"""Compare what the kernel enforces on a cell with what its spec asks for.

Every check ends in one of six states:

``verified``      the kernel (or gVisor's kernel, asked from the host) shows the spec's value,
                  or stricter
``configured``    only a record shows it (the engine's, or the OCI spec the runtime was handed);
                  the kernel does not expose the fact
``reported``      only the image's own binaries said so, inside the cell: untrusted, since a
                  hostile image prints what it likes (gVisor's in-sandbox view)
``mismatch``      the kernel, a record or even the image shows something weaker than the spec
``not-enforced``  this host cannot enforce or show it (with why: no AppArmor here, ...)
``unknown``       the fact could not be read (with why)

Only ``mismatch`` fails verification: a host that cannot do something is reported, not hidden,
but it is not the cell's fault. A reading from the image can make a check a mismatch (failing
closed), never verified or configured: under runsc every check the image read is judged again
by what the host side shows (:func:`_judge_image_readings`).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from agentcell.cell.paths import CELL_RUN_DIR, DOCKER_SOCKET, ENGINE_SOCKET_NAMES
from agentcell.cell.seccomp import strict_profile
from agentcell.spec.model import AgentDocument, AgentSpec
from agentcell.spec.units import format_bytes
from agentcell.verify.cgroups import CgroupLimits
from agentcell.verify.facts import Basis, CellTarget, HostPaths, Observation, Reading, observe
from agentcell.verify.procfs import MountEntry, ProcStatus, capability_names, parse_size

__all__ = [
    "DOCKER_MASKED_PATHS",
    "DOCKER_READONLY_PATHS",
    "Check",
    "CheckStatus",
    "VerifyReport",
    "compare",
    "counts",
    "mismatch_ids",
    "verify",
]

CheckStatus = Literal["verified", "configured", "reported", "mismatch", "not-enforced", "unknown"]

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
_UNREADABLE = object()
UNTRUSTED = "reported by the image (untrusted): its own python3 read gVisor's /proc"
# Upstream gVisor: processes started by `runsc exec` (docker exec) do not get the container's
# OCI seccomp profile; runsc 20221219 on this kind of host shows Seccomp 0 for them.
GVISOR_EXEC_SECCOMP_ISSUE = "https://github.com/google/gvisor/issues/12693"


@dataclass(frozen=True, kw_only=True)
class Check:
    """One fact of the cell compared with the spec."""

    id: str
    title: str
    status: CheckStatus
    expected: str
    observed: str
    source: str
    """The file (or record) the observed value was read from."""
    basis: Basis
    why: str = ""


@dataclass(frozen=True, kw_only=True)
class VerifyReport:
    """Every check of one cell."""

    cell: str
    container: str
    runtime: str
    spec_source: str
    checks: tuple[Check, ...]
    elapsed_ms: float

    @property
    def mismatches(self) -> tuple[Check, ...]:
        """The checks that failed."""
        return tuple(check for check in self.checks if check.status == "mismatch")

    @property
    def ok(self) -> bool:
        """No check failed."""
        return not self.mismatches

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready mapping (``agentcell verify --json``)."""
        data = asdict(self)
        data["ok"] = self.ok
        return data


def verify(
    document: AgentDocument,
    target: CellTarget,
    *,
    spec_source: str,
    paths: HostPaths | None = None,
) -> VerifyReport:
    """Read the cell's state from the kernel and compare it with ``document``."""
    started = time.perf_counter()
    observation = observe(target, paths)
    checks = compare(document, observation)
    return VerifyReport(
        cell=target.name,
        container=target.container,
        runtime=target.engine.runtime,
        spec_source=spec_source,
        checks=checks,
        elapsed_ms=(time.perf_counter() - started) * 1000,
    )


def compare(document: AgentDocument, observation: Observation) -> tuple[Check, ...]:
    """Every check of ``observation`` against ``document``, in a stable order."""
    spec = document.spec
    checks: list[Check] = []
    checks += _identity(spec, observation)
    checks += _capabilities(spec, observation)
    checks.append(_no_new_privs(spec, observation))
    checks += _seccomp(spec, observation)
    checks += _mounts(spec, observation)
    checks += _cgroup_checks(spec, observation.limits)
    checks += _namespaces(spec, observation)
    checks += _network(spec, observation)
    checks.append(_runtime(spec, observation))
    checks.append(_lsm(observation))
    if observation.target.sandboxed:
        checks = _judge_image_readings(spec, observation, checks)
    return tuple(checks)


# -- helpers ----------------------------------------------------------------------------------


def _unknown(check_id: str, title: str, expected: str, reading: Reading[Any]) -> Check:
    return Check(
        id=check_id,
        title=title,
        status="unknown",
        expected=expected,
        observed="not read",
        source=reading.source,
        basis=reading.basis,
        why=reading.error or "not read",
    )


def _caps_text(names: Iterable[str]) -> str:
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
        return _unknown(check_id, title, expected, reading)
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


# -- identity, capabilities, no_new_privs, seccomp --------------------------------------------


def _identity(spec: AgentSpec, observation: Observation) -> list[Check]:
    processes = observation.processes

    def ids(values: tuple[int, ...]) -> str:
        return "/".join(map(str, values))

    user_text, user_ok = _expected_id(spec.security.user)
    group_text, group_ok = _expected_id(spec.security.group)
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


def _expected_id(wanted: int | None) -> tuple[str, Callable[[int], bool]]:
    """(the expected uid or gid as text, whether an observed id meets it). A spec without one
    gets an id allocated by agentcell: any non-root id, the same in every field."""
    if wanted is None:
        return "non-root (allocated by agentcell)", lambda seen: seen != 0
    return str(wanted), lambda seen: seen == wanted


_CAP_SETS: tuple[tuple[str, str, str], ...] = (
    ("caps.effective", "CapEff", "cap_effective"),
    ("caps.permitted", "CapPrm", "cap_permitted"),
    ("caps.inheritable", "CapInh", "cap_inheritable"),
    ("caps.bounding", "CapBnd", "cap_bounding"),
    ("caps.ambient", "CapAmb", "cap_ambient"),
)


def _capabilities(spec: AgentSpec, observation: Observation) -> list[Check]:
    allowed = frozenset(spec.security.capabilities)
    expected = f"within {{{_caps_text(allowed)}}}"
    checks = []
    for check_id, line, attribute in _CAP_SETS:

        def mask_of(status: ProcStatus, attribute: str = attribute) -> int | None:
            value: int | None = getattr(status, attribute)
            return value

        def shown(status: ProcStatus, mask_of: Callable[[ProcStatus], int | None] = mask_of) -> str:
            mask = mask_of(status)
            return "not shown" if mask is None else _caps_text(capability_names(mask))

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


def _no_new_privs(spec: AgentSpec, observation: Observation) -> Check:
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
        return Check(
            id="nnp",
            title="no_new_privs",
            status="verified" if ok else "mismatch",
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


def _seccomp(spec: AgentSpec, observation: Observation) -> list[Check]:
    mode = spec.security.seccomp
    target = observation.target
    name, expected_profile = _expected_profile(mode)
    held, same = _profile_name(target.engine.seccomp_profile, expected_profile)
    profile_source = "docker inspect: HostConfig.SecurityOpt"

    if target.sandboxed:
        host = observation.sandbox_process
        mode_check: Check
        if host.value is None:
            mode_check = _unknown("seccomp.mode", "seccomp filter (gVisor sentry)", "2", host)
        else:
            filter_mode = host.value.seccomp_mode
            mode_check = Check(
                id="seccomp.mode",
                title="seccomp filter (gVisor sentry on the host)",
                status="verified" if filter_mode == 2 else "mismatch",
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
    profile_check = Check(
        id="seccomp.profile",
        title="seccomp profile",
        status="configured" if same else "mismatch",
        expected=name,
        observed=held,
        source=profile_source,
        basis="engine",
        why="the kernel shows that a filter is loaded, not which one; "
        "`agentcell probe` tests what it blocks",
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
        return _unknown("seccomp.exec", title, expected, reading)
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
    return Check(
        id="seccomp.exec",
        title=title,
        status="verified" if ok else "mismatch",
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


# -- gVisor: what the host side shows, and what the image only says ----------------------------


def _judge_image_readings(
    spec: AgentSpec, observation: Observation, checks: list[Check]
) -> list[Check]:
    """Under runsc, judge each check the image read again by the host side's own reading.

    The host side is ``runsc ps`` (gVisor's process table: verified) and the OCI spec runsc was
    handed (configured). A check with no host-side counterpart keeps the image's word as
    "reported"; an image reading weaker than the spec stays a mismatch either way.
    """
    host = {check.id: check for check in _host_side_checks(spec, observation)}
    judged = []
    for check in checks:
        if check.basis == "image":
            judged.append(_judged(host.pop(check.id, None), check))
        else:
            judged.append(check)
    # A host-side fact the image did not read at all (its snapshot failed) still counts.
    judged += host.values()
    return judged


def _judged(host: Check | None, image: Check) -> Check:
    if image.status == "unknown":
        told = f"image's reading: none ({image.why or 'not read'})"
    else:
        told = f"image reports: {image.observed}"
    if host is None:
        if image.status in ("verified", "configured"):
            why = f"{UNTRUSTED}; {image.why}" if image.why else UNTRUSTED
            return dataclasses.replace(image, status="reported", why=why)
        return image
    if image.status == "mismatch" and host.status != "mismatch":
        # The record looks right but the cell shows less: fail closed, whoever is lying.
        return dataclasses.replace(
            image,
            observed=f"{image.observed}; host side: {host.observed} ({host.status})",
            why="the host side shows the spec's value, the image's own reading a weaker one",
        )
    return dataclasses.replace(host, observed=f"{host.observed}; {told}")


def _host_side_checks(spec: AgentSpec, observation: Observation) -> list[Check]:
    """What runsc's own state shows for the checks the image also reads."""
    checks: list[Check] = []
    ps = observation.sandbox_ps
    record_reading = observation.record
    record = record_reading.value if record_reading is not None else None
    if ps is not None and ps.value is not None:
        _, uid_ok = _expected_id(spec.security.user)
        bad = [f"pid {p.pid} ({p.command}): {p.uid}" for p in ps.value if not uid_ok(p.uid)]
        shown = sorted({str(p.uid) for p in ps.value})
        checks.append(
            Check(
                id="identity.uid",
                title="uid (gVisor's process table)",
                status="mismatch" if bad or not ps.value else "verified",
                expected=_expected_id(spec.security.user)[0],
                observed="; ".join(bad) or f"{' | '.join(shown)} ({len(ps.value)} processes)",
                source=ps.source,
                basis="sandbox",
                why="runsc ps asks the sentry, not the image; it shows one uid per process",
            )
        )
    if record is None or record_reading is None:
        return checks
    source = record_reading.source

    def recorded(check_id: str, title: str, ok: bool, expected: str, observed: str) -> Check:
        return Check(
            id=check_id,
            title=title,
            status="configured" if ok else "mismatch",
            expected=expected,
            observed=observed,
            source=source,
            basis="host",
            why="the OCI spec runsc was handed and enforces; gVisor does not show it to the host",
        )

    if not any(check.id == "identity.uid" for check in checks):
        uid_text, uid_ok = _expected_id(spec.security.user)
        checks.append(
            recorded(
                "identity.uid",
                "uid",
                uid_ok(record.uid),
                uid_text,
                f"process.user.uid {record.uid}",
            )
        )
    gid_text, gid_ok = _expected_id(spec.security.group)
    checks.append(
        recorded(
            "identity.gid", "gid", gid_ok(record.gid), gid_text, f"process.user.gid {record.gid}"
        )
    )
    groups = record.additional_gids
    checks.append(
        recorded(
            "identity.groups",
            "supplementary groups",
            spec.security.group == 0 or 0 not in groups,
            "no supplementary root group (0)" if spec.security.group != 0 else "any",
            "additionalGids " + (",".join(map(str, groups)) or "none"),
        )
    )
    allowed = frozenset(spec.security.capabilities)
    for check_id, line, _ in _CAP_SETS:
        kind = check_id.removeprefix("caps.")
        held = record.capabilities.get(kind, frozenset())
        checks.append(
            recorded(
                check_id,
                f"capabilities {line}",
                held <= allowed,
                f"within {{{_caps_text(allowed)}}}",
                f"process.capabilities.{kind}: {_caps_text(held)}",
            )
        )
    wanted = spec.security.no_new_privileges
    checks.append(
        recorded(
            "nnp",
            "no_new_privs",
            record.no_new_privileges or not wanted,
            "1" if wanted else "any (spec allows privilege gain)",
            f"process.noNewPrivileges {str(record.no_new_privileges).lower()}",
        )
    )
    mounts = _mounts(spec, observation, Reading(value=record.mounts, source=source, basis="host"))
    for check in mounts:
        status: CheckStatus = "configured" if check.status == "verified" else check.status
        checks.append(dataclasses.replace(check, status=status))
    return checks


# -- mounts -----------------------------------------------------------------------------------


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


def _mounts(
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
        return [_unknown("mounts", "mounts", expected, reading)]

    def check(
        check_id: str, title: str, ok: bool, expected: str, observed: str, why: str = ""
    ) -> Check:
        return Check(
            id=check_id,
            title=title,
            status="verified" if ok else "mismatch",
            expected=expected,
            observed=observed,
            source=source,
            basis=basis,
            why=why,
        )

    checks: list[Check] = []
    root = _topmost(entries, "/")
    want_ro = spec.security.read_only_rootfs
    checks.append(
        check(
            "mounts.rootfs",
            "root filesystem",
            root is not None and (root.read_only or not want_ro),
            "ro" if want_ro else "rw allowed",
            _describe(root) if root is not None else "no / mount",
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
                check(
                    f"mounts.tmpfs:{tmpfs.path}", f"tmpfs {tmpfs.path}", False, expected, "absent"
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
            check(
                f"mounts.tmpfs:{tmpfs.path}", f"tmpfs {tmpfs.path}", ok, expected, _describe(entry)
            )
        )
    for mount in spec.host.mounts:
        entry = _topmost(entries, mount.target)
        expected = f"{mount.source} {'ro' if mount.read_only else 'rw'}"
        if entry is None:
            checks.append(
                check(
                    f"mounts.host:{mount.target}",
                    f"host mount {mount.target}",
                    False,
                    expected,
                    "absent",
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
            check(
                f"mounts.host:{mount.target}",
                f"host mount {mount.target}",
                not mount.read_only or (entry.read_only and not writable),
                expected + (" (submounts too)" if mount.read_only else ""),
                observed,
                why=(
                    "a recursive bind keeps the host's submounts, and the engine made only the "
                    "top one read-only; bind it non-recursively"
                    if writable and mount.read_only
                    else "a bind mount shows its filesystem, not its host path"
                ),
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
            check(
                "mounts.docker-socket",
                "engine socket",
                entry is not None and entry.read_only,
                f"{DOCKER_SOCKET} ro (spec: host.docker_socket)",
                _describe(entry) if entry is not None else "absent",
                why="read-only does not stop API calls over the socket; prefer a filtering proxy",
            )
        )
    else:
        checks.append(
            check(
                "mounts.docker-socket",
                "engine socket",
                not sockets,
                "absent",
                ", ".join(entry.mount_point for entry in sockets) or "absent",
            )
        )
    own = [entry for entry in entries if entry.mount_point.startswith(AGENTCELL_MOUNT_PREFIX)]
    if own:
        writable = [entry.mount_point for entry in own if not entry.read_only]
        checks.append(
            check(
                "mounts.agentcell",
                "mounts agentcell adds (identity, control-plane socket)",
                not writable,
                f"read-only, under {AGENTCELL_MOUNT_PREFIX}",
                "rw: " + ", ".join(writable)
                if writable
                else ", ".join(entry.mount_point for entry in own) + " (ro)",
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
        check(
            "mounts.unexpected",
            "mounts the spec does not ask for",
            not unexpected,
            "none",
            ", ".join(unexpected) or "none",
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
            return _unknown("mounts.masks", title, expected, present)
        shown = sorted(path for path, exists in present.value.items() if exists)
        return Check(
            id="mounts.masks",
            title=title,
            status="verified" if not shown else "mismatch",
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
    return Check(
        id="mounts.masks",
        title=title,
        status="mismatch" if problems else "verified",
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


# -- cgroups ----------------------------------------------------------------------------------


def _bytes_text(value: int | None) -> str:
    return "unlimited" if value is None else format_bytes(value)


def _cgroup_checks(spec: AgentSpec, reading: Reading[CgroupLimits]) -> list[Check]:
    resources = spec.resources
    limits = reading.value
    if limits is None:
        return [
            _unknown("cgroup.cpu", "cpu limit", f"{resources.cpus:g}", reading),
            _unknown("cgroup.memory", "memory limit", format_bytes(resources.memory), reading),
            _unknown(
                "cgroup.memory-swap",
                "memory+swap limit",
                format_bytes(resources.memory_swap),
                reading,
            ),
            _unknown("cgroup.pids", "pids limit", str(resources.pids), reading),
        ]
    version = f"cgroup v{limits.version}"

    def check(check_id: str, title: str, ok: bool, expected: str, observed: str, key: str) -> Check:
        return Check(
            id=check_id,
            title=title,
            status="verified" if ok else "mismatch",
            expected=expected,
            observed=f"{observed} ({version})",
            source=limits.sources.get(key, reading.source),
            basis="kernel",
        )

    cpus = limits.cpus
    quota_text = (
        "unlimited"
        if cpus is None
        else f"{cpus:g} ({limits.cpu_quota_us}/{limits.cpu_period_us} us)"
    )
    checks = [
        check(
            "cgroup.cpu",
            "cpu limit (quota/period)",
            cpus is not None and abs(cpus - resources.cpus) < 0.001,
            f"{resources.cpus:g}",
            quota_text,
            "cpu",
        ),
        check(
            "cgroup.memory",
            "memory limit",
            limits.memory_bytes == resources.memory,
            format_bytes(resources.memory),
            _bytes_text(limits.memory_bytes),
            "memory",
        ),
    ]
    if not limits.swap_accounting:
        checks.append(
            Check(
                id="cgroup.memory-swap",
                title="memory+swap limit",
                status="not-enforced",
                expected=format_bytes(resources.memory_swap),
                observed="no swap accounting",
                source=limits.sources.get("memory-swap", reading.source),
                basis="kernel",
                why="this kernel does not account swap per cgroup (boot with swapaccount=1 on v1)",
            )
        )
    else:
        checks.append(
            check(
                "cgroup.memory-swap",
                "memory+swap limit",
                limits.memory_swap_bytes == resources.memory_swap,
                format_bytes(resources.memory_swap),
                _bytes_text(limits.memory_swap_bytes),
                "memory-swap",
            )
        )
    checks.append(
        check(
            "cgroup.pids",
            "pids limit",
            limits.pids_max == resources.pids,
            str(resources.pids),
            "unlimited" if limits.pids_max is None else str(limits.pids_max),
            "pids",
        )
    )
    return checks


# -- namespaces, network, runtime, LSM --------------------------------------------------------


def _namespaces(spec: AgentSpec, observation: Observation) -> list[Check]:
    cell = observation.namespaces.value or {}
    host = observation.host_namespaces
    source = f"{observation.namespaces.source} vs /proc/self/ns (the host)"
    sandboxed = observation.target.sandboxed
    limits = observation.limits.value
    checks = []
    shared_by_spec = {"pid": spec.host.pid, "net": spec.host.network}
    for kind in ("pid", "net", "ipc", "uts", "mnt", "user", "cgroup"):
        title = f"{kind} namespace"
        mine, theirs = cell.get(kind), host.get(kind)
        if mine is None or theirs is None:
            checks.append(
                Check(
                    id=f"ns.{kind}",
                    title=title,
                    status="unknown",
                    expected="own",
                    observed="not read",
                    source=source,
                    basis="kernel",
                    why=f"cannot read the {'cell' if mine is None else 'host'} namespace link",
                )
            )
            continue
        shared = mine == theirs
        observed = f"{'shared with the host' if shared else 'own'} ({mine})"
        status: CheckStatus
        why = ""
        if shared_by_spec.get(kind):
            expected = "shared (spec: host." + ("pid" if kind == "pid" else "network") + ")"
            status = "verified"
        else:
            expected = "own"
            status = "mismatch" if shared else "verified"
            if kind == "user" and shared:
                status = "not-enforced"
                why = (
                    "the engine runs cells in the host user namespace (no userns-remap): "
                    f"uid {spec.security.user} in the cell is uid {spec.security.user} on the host"
                )
            elif kind == "cgroup" and shared:
                status = "not-enforced"
                v1 = limits is not None and limits.version == "1"
                why = (
                    "on cgroup v1 hosts Docker 20.10 shares the host cgroup namespace; the cell "
                    "sees its cgroup path, read-only"
                    if v1
                    else "the engine did not give the cell a cgroup namespace"
                )
            elif kind == "pid" and shared and sandboxed:
                status = "verified"
                observed = f"sandbox process in the host pid namespace ({mine})"
                why = (
                    "the cell's processes live in gVisor's own process table; the host-side "
                    "sandbox process is confined by its seccomp filter and user namespace"
                )
        checks.append(
            Check(
                id=f"ns.{kind}",
                title=title,
                status=status,
                expected=expected,
                observed=observed,
                source=source,
                basis="kernel",
                why=why,
            )
        )
    return checks


def _network(spec: AgentSpec, observation: Observation) -> list[Check]:
    interfaces, routes = observation.interfaces, observation.routes
    if spec.host.network:
        return [
            Check(
                id="net.interfaces",
                title="network interfaces",
                status="verified",
                expected="the host's (spec: host.network)",
                observed="shares the host network namespace",
                source=interfaces.source,
                basis="kernel",
            )
        ]
    checks = []
    if interfaces.value is None:
        checks.append(_unknown("net.interfaces", "network interfaces", "lo", interfaces))
    else:
        others = [name for name in interfaces.value if name != "lo"]
        if spec.network == "none":
            ok, expected = not others, "lo only (network: none)"
        else:
            ok, expected = len(others) == 1, f"lo + one interface on {spec.network}"
        checks.append(
            Check(
                id="net.interfaces",
                title="network interfaces",
                status="verified" if ok else "mismatch",
                expected=expected,
                observed=", ".join(interfaces.value) or "none",
                source=interfaces.source,
                basis=interfaces.basis,
            )
        )
    if routes.value is None:
        checks.append(_unknown("net.default-route", "default route", "none", routes))
    else:
        defaults = [
            f"{r.destination}/{r.prefix} via {r.gateway} dev {r.interface}"
            for r in routes.value
            if r.default
        ]
        checks.append(
            Check(
                id="net.default-route",
                title="default route",
                status="mismatch" if defaults else "verified",
                expected="none (the spec allows no egress)",
                observed="; ".join(defaults) or "none",
                source=routes.source,
                basis=routes.basis,
            )
        )
    return checks


def _runtime(spec: AgentSpec, observation: Observation) -> Check:
    wanted = spec.security.runtime
    seen = observation.runtime
    if seen.value is None:
        return Check(
            id="runtime",
            title="OCI runtime",
            status="unknown",
            expected=wanted,
            observed=f"engine record: {observation.target.engine.runtime}",
            source=seen.source,
            basis="host",
            why=seen.error or "",
        )
    return Check(
        id="runtime",
        title="OCI runtime",
        status="verified" if seen.value == wanted else "mismatch",
        expected=wanted,
        observed=seen.value,
        source=seen.source,
        basis="host",
        why="read from the runtime's own state on the host, not from the engine",
    )


def _lsm(observation: Observation) -> Check:
    lsms = observation.lsms
    label = observation.lsm_label
    source = f"/proc/{observation.target.host_pid}/attr/current; {observation.lsm_source}"
    confining = [name for name in lsms if name in ("apparmor", "selinux", "smack", "tomoyo")]
    if not confining:
        active = ", ".join(lsms) if lsms else "securityfs not mounted, none detected"
        return Check(
            id="lsm",
            title="LSM label",
            status="not-enforced",
            expected="confined by AppArmor or SELinux",
            observed=f"label: {label or 'none'}",
            source=source,
            basis="kernel",
            why=f"no AppArmor or SELinux active on this host ({active}); Landlock is opt-in per "
            "process and the engine does not use it",
        )
    ok = label is not None and "unconfined" not in label
    return Check(
        id="lsm",
        title="LSM label",
        status="verified" if ok else "mismatch",
        expected=f"a confining {'/'.join(confining)} label",
        observed=label or "none",
        source=source,
        basis="kernel",
    )


def mismatch_ids(checks: Iterable[Check]) -> set[str]:
    """The ids of the failed checks (for tests and summaries)."""
    return {check.id for check in checks if check.status == "mismatch"}


def counts(checks: Iterable[Check]) -> Mapping[str, int]:
    """How many checks ended in each state."""
    tally: dict[str, int] = {}
    for check in checks:
        tally[check.status] = tally.get(check.status, 0) + 1
    return tally
