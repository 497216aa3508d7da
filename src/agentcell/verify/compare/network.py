"""The checks of the cell's namespaces against the host's, of its interfaces and routes, and
of the host side of its tenant network (rules, resolver, DNS)."""

from __future__ import annotations

from dataclasses import dataclass

from agentcell.cell.network import TENANT_NETWORK, nft_table, tenant_network
from agentcell.spec.model import AgentSpec
from agentcell.verify.compare.check import Check, CheckStatus
from agentcell.verify.facts import Observation

__all__ = [
    "TenantNetworkFacts",
    "namespace_checks",
    "network_checks",
    "tenant_network_checks",
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
            ok, expected = len(others) == 1, "lo + one interface on the tenant network"
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


@dataclass(frozen=True, kw_only=True)
class TenantNetworkFacts:
    """What the runtime read about a networked cell's tenant network, for
    :func:`tenant_network_checks`: the host rules the kernel holds and those expected, the
    cell's resolv.conf as the host sees it, and the engine's DNS setting."""

    tenant: str
    gateway: str | None
    """The tenant network's gateway address; None when the cell is not on its tenant's
    network (or that network is gone)."""
    expected_rules: tuple[str, ...] = ()
    kernel_rules: tuple[str, ...] | None = None
    """The kernel's chains and rules of the tenant's tables, in order; None when unread."""
    rules_source: str = ""
    rules_error: str | None = None
    resolv_conf: str | None = None
    """The cell's /etc/resolv.conf, read through /proc/<pid>/root; None when unread."""
    resolv_source: str = ""
    resolv_error: str | None = None
    engine_dns: tuple[str, ...] = ()
    """The engine's record of the cell's DNS servers (HostConfig.Dns)."""


def tenant_network_checks(spec: AgentSpec, facts: TenantNetworkFacts | None) -> list[Check]:
    """The host side of a networked cell: its tenant's host rules as the kernel holds them
    (``net.host-rules``), the resolver its resolv.conf names (``net.resolver``) and where the
    engine's embedded DNS forwards (``net.dns``)."""
    if spec.network != TENANT_NETWORK or spec.host.network or facts is None:
        return []
    if facts.gateway is None:
        return [
            Check(
                id="net.host-rules",
                title="tenant network host rules",
                status="mismatch",
                expected=f"the cell on network {tenant_network(facts.tenant)}",
                observed="the cell is not on its tenant's network, or the network is gone",
                source="the engine's record of the cell's networks",
                basis="engine",
            )
        ]
    return [_rules_check(facts), _resolver_check(facts), _dns_check(facts)]


def _rules_check(facts: TenantNetworkFacts) -> Check:
    title = "tenant network host rules"
    expected = f"{len(facts.expected_rules)} chains and rules of table {nft_table(facts.tenant)}"
    if facts.kernel_rules is None:
        return Check(
            id="net.host-rules",
            title=title,
            status="unknown",
            expected=expected,
            observed="not read",
            source=facts.rules_source,
            basis="kernel",
            why=facts.rules_error or "the kernel's tables were not read",
        )
    held = facts.kernel_rules
    problems = [f"missing: {line}" for line in facts.expected_rules if line not in held]
    problems += [f"unexpected: {line}" for line in held if line not in facts.expected_rules]
    if not problems and held != facts.expected_rules:
        problems.append("the rules are in another order")
    return Check.judged(
        id="net.host-rules",
        title=title,
        ok=not problems,
        expected=expected,
        observed="; ".join(problems) or "as expected",
        source=facts.rules_source,
        basis="kernel",
    )


def _resolver_check(facts: TenantNetworkFacts) -> Check:
    title = "resolver"
    expected = f"nameserver {facts.gateway} only (the tenant's resolver)"
    if facts.resolv_conf is None:
        return Check(
            id="net.resolver",
            title=title,
            status="unknown",
            expected=expected,
            observed="not read",
            source=facts.resolv_source,
            basis="kernel",
            why=facts.resolv_error or "the cell's resolv.conf was not read",
        )
    servers = tuple(
        parts[1]
        for parts in (line.split() for line in facts.resolv_conf.splitlines())
        if len(parts) >= 2 and parts[0] == "nameserver"
    )
    return Check.judged(
        id="net.resolver",
        title=title,
        ok=servers == (facts.gateway,),
        expected=expected,
        observed=", ".join(servers) or "no nameserver",
        source=facts.resolv_source,
        basis="kernel",
    )


def _dns_check(facts: TenantNetworkFacts) -> Check:
    ok = facts.engine_dns == (facts.gateway,)
    return Check(
        id="net.dns",
        title="embedded DNS forwards to",
        status="configured" if ok else "mismatch",
        expected=f"{facts.gateway} only (the engine's 127.0.0.11 forwards nowhere else)",
        observed=", ".join(facts.engine_dns) or "the host's resolvers (no DNS set)",
        source="the engine's record (HostConfig.Dns)",
        basis="engine",
    )
