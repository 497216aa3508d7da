"""The checks of what confines the cell beyond its processes' own state: the OCI runtime that
runs it and the LSM label it carries."""

from __future__ import annotations

from agentcell.spec.model import AgentSpec
from agentcell.verify.compare.check import Check
from agentcell.verify.facts import Observation

__all__ = [
    "lsm_check",
    "runtime_check",
]


def runtime_check(spec: AgentSpec, observation: Observation) -> Check:
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
    return Check.judged(
        id="runtime",
        title="OCI runtime",
        ok=seen.value == wanted,
        expected=wanted,
        observed=seen.value,
        source=seen.source,
        basis="host",
        why="read from the runtime's own state on the host, not from the engine",
    )


def lsm_check(observation: Observation) -> Check:
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
    return Check.judged(
        id="lsm",
        title="LSM label",
        ok=ok,
        expected=f"a confining {'/'.join(confining)} label",
        observed=label or "none",
        source=source,
        basis="kernel",
    )
