"""The checks of the cell's namespaces against the host's, and of its interfaces and routes."""

from __future__ import annotations

from agentcell.spec.model import AgentSpec
from agentcell.verify.compare.check import Check, CheckStatus
from agentcell.verify.facts import Observation

__all__ = [
    "namespace_checks",
    "network_checks",
]


def namespace_checks(spec: AgentSpec, observation: Observation) -> list[Check]:
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


def network_checks(spec: AgentSpec, observation: Observation) -> list[Check]:
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
        checks.append(
            Check.unknown(
                id="net.interfaces", title="network interfaces", expected="lo", reading=interfaces
            )
        )
    else:
        others = [name for name in interfaces.value if name != "lo"]
        if spec.network == "none":
            ok, expected = not others, "lo only (network: none)"
        else:
            ok, expected = len(others) == 1, f"lo + one interface on {spec.network}"
        checks.append(
            Check.judged(
                id="net.interfaces",
                title="network interfaces",
                ok=ok,
                expected=expected,
                observed=", ".join(interfaces.value) or "none",
                source=interfaces.source,
                basis=interfaces.basis,
            )
        )
    if routes.value is None:
        checks.append(
            Check.unknown(
                id="net.default-route", title="default route", expected="none", reading=routes
            )
        )
    else:
        defaults = [
            f"{r.destination}/{r.prefix} via {r.gateway} dev {r.interface}"
            for r in routes.value
            if r.default
        ]
        checks.append(
            Check.judged(
                id="net.default-route",
                title="default route",
                ok=not defaults,
                expected="none (the spec allows no egress)",
                observed="; ".join(defaults) or "none",
                source=routes.source,
                basis=routes.basis,
            )
        )
    return checks
