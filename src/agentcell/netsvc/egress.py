"""The egress allow-list matcher: may a tenant's cell reach this name or address on this port?

Pure. :class:`EgressPolicy` is built from a tenant's :class:`~agentcell.spec.tenant.TenantNetwork`
and answers with a :class:`Verdict` naming the rule that decided:

- ``deny`` wins over ``allow``;
- a name rule ``*.pypi.org`` matches names strictly below ``pypi.org`` (one or more labels),
  ``*`` matches every name, any other name rule matches that name only; names are compared in
  lowercase without a trailing dot;
- an address is judged by the CIDR rules only: a name rule never allows an address, and an
  address rule never allows a name;
- some addresses are *protected*: loopback, link-local, unspecified, multicast and the tenant's
  own subnets. One is allowed only by a CIDR rule that lies inside the protected range it falls
  in (``127.0.0.0/8`` opens loopback, ``0.0.0.0/0`` does not), and the cloud metadata
  addresses (``169.254.169.254``, ``fd00:ec2::254``) never. The same holds for the address an
  allowed name resolves to, so an upstream answer cannot point the gateway at the host.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from agentcell.spec.tenant import EgressRule, TenantNetwork

__all__ = [
    "METADATA_ADDRESSES",
    "Address",
    "Decision",
    "EgressPolicy",
    "Network",
    "Verdict",
    "normalize_name",
    "parse_address",
]

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Decision = Literal["allow", "deny"]

METADATA_ADDRESSES: frozenset[Address] = frozenset(
    {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
)
"""Cloud instance metadata services: never reachable, whatever the rules say."""

_ALWAYS_PROTECTED: tuple[tuple[Network, str], ...] = tuple(
    (ipaddress.ip_network(cidr), what)
    for cidr, what in (
        ("127.0.0.0/8", "loopback"),
        ("::1/128", "loopback"),
        ("169.254.0.0/16", "link-local"),
        ("fe80::/10", "link-local"),
        ("0.0.0.0/8", "unspecified"),
        ("::/128", "unspecified"),
        ("224.0.0.0/4", "multicast"),
        ("ff00::/8", "multicast"),
        ("::ffff:0:0/96", "IPv4-mapped"),
    )
)


@dataclass(frozen=True, kw_only=True)
class Verdict:
    """Whether a destination is allowed, the rule that decided (None when no rule did), and
    why, in words for the decision log."""

    decision: Decision
    reason: str
    rule: EgressRule | None = None

    @property
    def allowed(self) -> bool:
        """Whether the destination may be reached."""
        return self.decision == "allow"


def normalize_name(name: str) -> str:
    """``Example.COM.`` -> ``example.com``: the one spelling names are compared in."""
    return name.strip().rstrip(".").lower()


def parse_address(text: str) -> Address | None:
    """The address ``text`` spells (``[::1]`` too), or None when it is not an IP literal."""
    try:
        return ipaddress.ip_address(text.strip().removeprefix("[").removesuffix("]"))
    except ValueError:
        return None


def _name_matches(pattern: str, name: str) -> bool:
    if pattern == "*":
        return True
    if pattern.startswith("*."):
        return name.endswith(pattern[1:]) and len(name) > len(pattern) - 1
    return name == pattern


def _network(rule: EgressRule) -> Network | None:
    return ipaddress.ip_network(rule.cidr) if rule.cidr is not None else None


class EgressPolicy:
    """A tenant's egress rules, ready to judge destinations.

    ``private`` are the tenant's own subnets (its network's address ranges): protected like
    loopback, since the gateway must not become a way around intra-tenant isolation.
    """

    def __init__(self, network: TenantNetwork, *, private: Iterable[Network] = ()) -> None:
        self.allow = network.allow
        self.deny = network.deny
        self._allow_cidrs = [(rule, net) for rule in self.allow if (net := _network(rule))]
        self._deny_cidrs = [(rule, net) for rule in self.deny if (net := _network(rule))]
        self._protected = (
            *_ALWAYS_PROTECTED,
            *((net, "the tenant's own network") for net in private),
        )

    @property
    def empty(self) -> bool:
        """Whether nothing at all is allowed (``egress: none``)."""
        return not self.allow

    def check_name(self, name: str, port: int) -> Verdict:
        """Judge a connection to ``name`` on ``port`` by the name rules alone."""
        name = normalize_name(name)
        for rule in self.deny:
            if rule.name is not None and _name_matches(rule.name, name) and port in rule.ports:
                return Verdict(decision="deny", reason=f"denied by {rule.describe()}", rule=rule)
        for rule in self.allow:
            if rule.name is not None and _name_matches(rule.name, name) and port in rule.ports:
                return Verdict(decision="allow", reason=f"allowed by {rule.describe()}", rule=rule)
        return Verdict(decision="deny", reason=self._unlisted(f"{name}:{port}"))

    def name_resolvable(self, name: str) -> Verdict:
        """Whether the resolver may look ``name`` up: some port exists on which a connection to
        it would be allowed."""
        normalized = normalize_name(name)
        last: Verdict | None = None
        for rule in self.allow:
            if rule.name is None or not _name_matches(rule.name, normalized):
                continue
            for port in rule.ports:
                verdict = self.check_name(normalized, port)
                if verdict.allowed:
                    return verdict
                last = verdict
        return last or Verdict(decision="deny", reason=self._unlisted(normalized))

    def check_address(self, address: Address, port: int) -> Verdict:
        """Judge a connection to an IP literal on ``port`` by the CIDR rules alone."""
        return self._judge_address(address, port, by_name=None)

    def check_resolved(self, name: str, address: Address, port: int) -> Verdict:
        """Judge the address an allowed ``name`` resolved to: deny rules and protected ranges
        still apply (an answer pointing at loopback is refused unless a CIDR rule opens it)."""
        return self._judge_address(address, port, by_name=normalize_name(name))

    def _judge_address(self, address: Address, port: int, *, by_name: str | None) -> Verdict:
        if address in METADATA_ADDRESSES:
            return Verdict(decision="deny", reason=f"{address} is a metadata service: never")
        for rule, net in self._deny_cidrs:
            if address.version == net.version and address in net and port in rule.ports:
                return Verdict(decision="deny", reason=f"denied by {rule.describe()}", rule=rule)
        protected = self._protection(address)
        for rule, net in self._allow_cidrs:
            if address.version != net.version or address not in net or port not in rule.ports:
                continue
            if protected is not None and not net.subnet_of(protected[0]):  # type: ignore[arg-type]
                continue  # a wide rule does not open loopback, link-local, the tenant's net
            return Verdict(decision="allow", reason=f"allowed by {rule.describe()}", rule=rule)
        if protected is not None:
            return Verdict(
                decision="deny",
                reason=f"{address} is {protected[1]} ({protected[0]}); only a CIDR rule "
                "inside that range allows it",
            )
        if by_name is not None:
            return Verdict(decision="allow", reason=f"{by_name} resolved to {address}")
        return Verdict(decision="deny", reason=self._unlisted(f"{address}:{port}"))

    def _protection(self, address: Address) -> tuple[Network, str] | None:
        for net, what in self._protected:
            if address.version == net.version and address in net:
                return net, what
        return None

    def _unlisted(self, what: str) -> str:
        if self.empty:
            return f"{what}: egress is none"
        return f"{what} is not on the allow-list"
