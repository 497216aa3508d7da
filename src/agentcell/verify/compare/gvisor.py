"""Under runsc: what the host side shows, and what the image only says."""

from __future__ import annotations

import dataclasses

from agentcell.spec.model import AgentSpec
from agentcell.verify.compare.check import Check, CheckStatus
from agentcell.verify.compare.mounts import mount_checks
from agentcell.verify.compare.process import CAP_SETS, caps_text, expected_id
from agentcell.verify.facts import Observation, Reading

__all__ = [
    "UNTRUSTED",
    "judge_image_readings",
]

# Why a check read from the OCI spec runsc keeps is "configured", not verified.
_RECORDED = "the OCI spec runsc was handed and enforces; gVisor does not show it to the host"
UNTRUSTED = "reported by the image (untrusted): its own python3 read gVisor's /proc"


def judge_image_readings(
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
        _, uid_ok = expected_id(spec.security.user)
        bad = [f"pid {p.pid} ({p.command}): {p.uid}" for p in ps.value if not uid_ok(p.uid)]
        shown = sorted({str(p.uid) for p in ps.value})
        checks.append(
            Check.judged(
                id="identity.uid",
                title="uid (gVisor's process table)",
                ok=bool(ps.value) and not bad,
                expected=expected_id(spec.security.user)[0],
                observed="; ".join(bad) or f"{' | '.join(shown)} ({len(ps.value)} processes)",
                source=ps.source,
                basis="sandbox",
                why="runsc ps asks the sentry, not the image; it shows one uid per process",
            )
        )
    if record is None or record_reading is None:
        return checks
    source = record_reading.source

    if not any(check.id == "identity.uid" for check in checks):
        uid_text, uid_ok = expected_id(spec.security.user)
        checks.append(
            Check.judged(
                id="identity.uid",
                title="uid",
                ok=uid_ok(record.uid),
                expected=uid_text,
                observed=f"process.user.uid {record.uid}",
                source=source,
                basis="host",
                why=_RECORDED,
                holds="configured",
            )
        )
    gid_text, gid_ok = expected_id(spec.security.group)
    checks.append(
        Check.judged(
            id="identity.gid",
            title="gid",
            ok=gid_ok(record.gid),
            expected=gid_text,
            observed=f"process.user.gid {record.gid}",
            source=source,
            basis="host",
            why=_RECORDED,
            holds="configured",
        )
    )
    groups = record.additional_gids
    checks.append(
        Check.judged(
            id="identity.groups",
            title="supplementary groups",
            ok=spec.security.group == 0 or 0 not in groups,
            expected="no supplementary root group (0)" if spec.security.group != 0 else "any",
            observed="additionalGids " + (",".join(map(str, groups)) or "none"),
            source=source,
            basis="host",
            why=_RECORDED,
            holds="configured",
        )
    )
    allowed = frozenset(spec.security.capabilities)
    for check_id, line, _ in CAP_SETS:
        kind = check_id.removeprefix("caps.")
        held = record.capabilities.get(kind, frozenset())
        checks.append(
            Check.judged(
                id=check_id,
                title=f"capabilities {line}",
                ok=held <= allowed,
                expected=f"within {{{caps_text(allowed)}}}",
                observed=f"process.capabilities.{kind}: {caps_text(held)}",
                source=source,
                basis="host",
                why=_RECORDED,
                holds="configured",
            )
        )
    wanted = spec.security.no_new_privileges
    checks.append(
        Check.judged(
            id="nnp",
            title="no_new_privs",
            ok=record.no_new_privileges or not wanted,
            expected="1" if wanted else "any (spec allows privilege gain)",
            observed=f"process.noNewPrivileges {str(record.no_new_privileges).lower()}",
            source=source,
            basis="host",
            why=_RECORDED,
            holds="configured",
        )
    )
    mounts = mount_checks(
        spec, observation, Reading(value=record.mounts, source=source, basis="host")
    )
    for check in mounts:
        status: CheckStatus = "configured" if check.status == "verified" else check.status
        checks.append(dataclasses.replace(check, status=status))
    return checks
