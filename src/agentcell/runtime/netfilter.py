"""A tenant network's host firewall rules, in nftables, through the ``nft`` tool's JSON.

Docker 20.10's internal networks filter forwarding only: a cell still reaches every address of
the host (its bridge's gateway, other bridges' gateways, services bound there). The tenant's
table ``inet agentcell_<tenant>`` closes that:

* chain ``input`` (hook input, priority -10): from the tenant's bridge, only replies and what
  agentcell serves the tenant on the gateway address (its resolver on udp and tcp 53, its
  egress gateway on tcp 3128 and 443) reach the host; everything else from the bridge is
  dropped;
* chain ``forward`` (hook forward, priority -10): nothing is routed into or out of the bridge.
  Bridged traffic between the tenant's own cells passes this hook too where br_netfilter is on
  (``iifname`` and ``oifname`` are then both the bridge), so only traffic that changes
  interface is dropped.

Without intra-tenant traffic, table ``bridge agentcell_<tenant>`` drops frames the bridge
forwards between the tenant's cells. It matches the tenant network's subnets, not the bridge
name: ``meta ibrname`` needs the kernel's nft_meta_bridge, which some kernels lack (this
host's refuses it with "Operation not supported"), while a subnet belongs to one engine
network on a host.

:func:`ruleset` is pure (unit-tested); :func:`install` replaces the tenant's tables in one
transaction (``nft -j -f -``), :func:`read_tables` reads them back from the kernel, and
:func:`differences` compares what the kernel holds with what is expected.
"""

from __future__ import annotations

import ipaddress
import json
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from agentcell.cell.network import (
    NFT_TABLE_PREFIX,
    RESOLVER_PORT,
    SERVED_TCP_PORTS,
    nft_table,
    tenant_bridge,
)
from agentcell.errors import HostError

__all__ = [
    "NFT_TIMEOUT_S",
    "Chain",
    "Family",
    "HostRules",
    "Rule",
    "TenantRules",
    "agentcell_tables",
    "differences",
    "install",
    "parse_listing",
    "read_tables",
    "remove",
    "ruleset",
    "transaction",
]

Family = Literal["inet", "bridge"]
NFT_TIMEOUT_S = 10.0
PRIORITY = -10
"""Before the engine's own iptables-nft chains (priority 0): a drop here is final."""


@dataclass(frozen=True, kw_only=True)
class TenantRules:
    """What a tenant's rules depend on: its network's gateway address and subnets, and
    whether its cells may reach each other."""

    tenant: str
    gateway: str
    subnets: tuple[str, ...]
    intra_tenant: bool = True

    @property
    def bridge(self) -> str:
        """The tenant's Linux bridge, ``ac-<tenant>``."""
        return tenant_bridge(self.tenant)

    @property
    def table(self) -> str:
        """The tables' name, ``agentcell_<tenant>``."""
        return nft_table(self.tenant)


@dataclass(frozen=True, kw_only=True)
class Chain:
    """A base chain, as the kernel lists it."""

    family: Family
    name: str
    hook: str
    priority: int
    policy: str

    def describe(self) -> str:
        """``inet input (hook input, priority -10, policy accept)``."""
        return (
            f"{self.family} {self.name} (hook {self.hook}, priority {self.priority}, "
            f"policy {self.policy})"
        )


@dataclass(frozen=True, kw_only=True)
class Rule:
    """One rule: its chain and its expression in the kernel's own JSON form."""

    family: Family
    chain: str
    expr: tuple[Mapping[str, Any], ...]

    def describe(self) -> str:
        """The rule in nft's text form, e.g. ``inet input: iifname "ac-t" drop``."""
        expr = _canonical(list(self.expr))
        return f"{self.family} {self.chain}: " + " ".join(_text(item) for item in expr)

    def key(self) -> str:
        """A canonical form for comparison (sets sorted, keys sorted)."""
        return json.dumps(
            [self.family, self.chain, _canonical(list(self.expr))],
            sort_keys=True,
            separators=(",", ":"),
        )


@dataclass(frozen=True, kw_only=True)
class HostRules:
    """A tenant's tables: their base chains and rules, in order."""

    chains: tuple[Chain, ...]
    rules: tuple[Rule, ...]

    def lines(self) -> tuple[str, ...]:
        """Every chain and rule as one readable line, in order (what verify compares)."""
        return tuple(chain.describe() for chain in self.chains) + tuple(
            rule.describe() for rule in self.rules
        )


# -- the expected rules (pure) ---------------------------------------------------------------


def _match(left: Mapping[str, Any], right: Any, op: str = "==") -> dict[str, Any]:
    return {"match": {"op": op, "left": dict(left), "right": right}}


def _meta(key: str) -> dict[str, Any]:
    return {"meta": {"key": key}}


def _payload(protocol: str, field: str) -> dict[str, Any]:
    return {"payload": {"protocol": protocol, "field": field}}


def _prefix(subnet: str) -> dict[str, Any]:
    network = ipaddress.ip_network(subnet, strict=False)
    return {"prefix": {"addr": str(network.network_address), "len": network.prefixlen}}


_ACCEPT: dict[str, Any] = {"accept": None}
_DROP: dict[str, Any] = {"drop": None}


def ruleset(spec: TenantRules) -> HostRules:
    """The chains and rules the tenant's network needs on the host, in the form the kernel
    lists them (``nft -j list table``), so the two compare equal.

    Raises:
        ValueError: the gateway is not an IPv4 address or a subnet is malformed.
    """
    gateway = ipaddress.ip_address(spec.gateway)
    if gateway.version != 4:
        raise ValueError(f"the tenant network's gateway {spec.gateway} is not an IPv4 address")
    bridge = spec.bridge
    from_bridge = _match(_meta("iifname"), bridge)
    to_gateway = _match(_payload("ip", "daddr"), str(gateway))
    chains = [
        Chain(family="inet", name="input", hook="input", priority=PRIORITY, policy="accept"),
        Chain(family="inet", name="forward", hook="forward", priority=PRIORITY, policy="accept"),
    ]
    rules = [
        Rule(
            family="inet",
            chain="input",
            expr=(
                from_bridge,
                _match({"ct": {"key": "state"}}, ["established", "related"], "in"),
                _ACCEPT,
            ),
        ),
        Rule(
            family="inet",
            chain="input",
            expr=(
                from_bridge,
                to_gateway,
                _match(_payload("udp", "dport"), RESOLVER_PORT),
                _ACCEPT,
            ),
        ),
        Rule(
            family="inet",
            chain="input",
            expr=(
                from_bridge,
                to_gateway,
                _match(_payload("tcp", "dport"), {"set": sorted(SERVED_TCP_PORTS)}),
                _ACCEPT,
            ),
        ),
        Rule(family="inet", chain="input", expr=(from_bridge, _DROP)),
        Rule(
            family="inet",
            chain="forward",
            expr=(from_bridge, _match(_meta("oifname"), bridge, "!="), _DROP),
        ),
        Rule(
            family="inet",
            chain="forward",
            expr=(_match(_meta("oifname"), bridge), _match(_meta("iifname"), bridge, "!="), _DROP),
        ),
    ]
    if not spec.intra_tenant:
        chains.append(
            Chain(
                family="bridge", name="forward", hook="forward", priority=PRIORITY, policy="accept"
            )
        )
        for subnet in spec.subnets:
            protocol = "ip" if ipaddress.ip_network(subnet, strict=False).version == 4 else "ip6"
            for field in ("saddr", "daddr"):
                rules.append(
                    Rule(
                        family="bridge",
                        chain="forward",
                        expr=(_match(_payload(protocol, field), _prefix(subnet)), _DROP),
                    )
                )
    return HostRules(chains=tuple(chains), rules=tuple(rules))


def transaction(spec: TenantRules) -> dict[str, Any]:
    """One ``nft -j -f -`` transaction that makes the kernel hold exactly :func:`ruleset`.

    Each table is added (a no-op when it exists), deleted and added again before its chains
    and rules, so whatever the kernel held (an altered chain policy, a rule added or deleted)
    is replaced and running it twice gives the same tables; a bridge table no longer wanted is
    added and deleted, which removes it whether it existed or not. The kernel applies the
    whole transaction or none of it.
    """
    expected = ruleset(spec)
    table = spec.table
    commands: list[dict[str, Any]] = []
    families: tuple[Family, ...] = ("inet",) if spec.intra_tenant else ("inet", "bridge")
    for family in families:
        commands.append({"add": {"table": {"family": family, "name": table}}})
        commands.append({"delete": {"table": {"family": family, "name": table}}})
        commands.append({"add": {"table": {"family": family, "name": table}}})
        for chain in expected.chains:
            if chain.family != family:
                continue
            commands.append(
                {
                    "add": {
                        "chain": {
                            "family": family,
                            "table": table,
                            "name": chain.name,
                            "type": "filter",
                            "hook": chain.hook,
                            "prio": chain.priority,
                            "policy": chain.policy,
                        }
                    }
                }
            )
        for rule in expected.rules:
            if rule.family == family:
                commands.append(
                    {
                        "add": {
                            "rule": {
                                "family": family,
                                "table": table,
                                "chain": rule.chain,
                                "expr": [dict(item) for item in rule.expr],
                            }
                        }
                    }
                )
    if spec.intra_tenant:
        commands.append({"add": {"table": {"family": "bridge", "name": table}}})
        commands.append({"delete": {"table": {"family": "bridge", "name": table}}})
    return {"nftables": commands}


# -- the kernel --------------------------------------------------------------------------------


def _nft(arguments: Sequence[str], *, stdin: str | None = None, what: str) -> str:
    """Run ``nft`` and return its output.

    Raises:
        HostError: nft is missing, or it failed.
    """
    binary = shutil.which("nft")
    if binary is None:
        raise HostError(
            f"cannot {what}: the nft tool is not installed",
            fix="install nftables (apt-get install nftables); scripts/setup.sh does",
        )
    try:
        done = subprocess.run(
            [binary, *arguments],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=NFT_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise HostError(f"cannot {what}: nft failed: {exc}", fix="run as root") from exc
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no output"])[0]
        raise HostError(
            f"cannot {what}: nft exited {done.returncode}: {tail[:300]}",
            fix="run as root on a host whose kernel has nf_tables",
        )
    return done.stdout


def install(spec: TenantRules) -> None:
    """Make the kernel hold the tenant's rules, in one atomic transaction.

    Raises:
        HostError: nft is missing or refused the transaction (then nothing changed).
    """
    _nft(
        ["-j", "-f", "-"],
        stdin=json.dumps(transaction(spec)),
        what=f"install the host rules of tenant {spec.tenant}",
    )


def remove(tenant: str) -> None:
    """Remove the tenant's tables (both families), whether they exist or not.

    Raises:
        HostError: nft is missing or failed.
    """
    table = nft_table(tenant)
    commands = []
    for family in ("inet", "bridge"):
        commands.append({"add": {"table": {"family": family, "name": table}}})
        commands.append({"delete": {"table": {"family": family, "name": table}}})
    _nft(
        ["-j", "-f", "-"],
        stdin=json.dumps({"nftables": commands}),
        what=f"remove the host rules of tenant {tenant}",
    )


def agentcell_tables() -> list[tuple[str, str]]:
    """(family, name) of every ``agentcell_*`` table in the kernel.

    Raises:
        HostError: nft is missing or failed.
    """
    listed = json.loads(_nft(["-j", "list", "tables"], what="list the nftables tables") or "{}")
    found = []
    for item in listed.get("nftables", []):
        table = item.get("table")
        if isinstance(table, dict) and str(table.get("name", "")).startswith(NFT_TABLE_PREFIX):
            found.append((str(table.get("family")), str(table["name"])))
    return sorted(found)


def read_tables(tenant: str) -> HostRules:
    """The tenant's chains and rules as the kernel holds them (absent tables hold nothing).

    Raises:
        HostError: nft is missing or failed.
    """
    table = nft_table(tenant)
    present = {family for family, name in agentcell_tables() if name == table}
    chains: list[Chain] = []
    rules: list[Rule] = []
    for family in ("inet", "bridge"):
        if family not in present:
            continue
        listed = json.loads(
            _nft(["-j", "list", "table", family, table], what=f"read table {family} {table}")
        )
        parsed_chains, parsed_rules = parse_listing(listed)
        chains += parsed_chains
        rules += parsed_rules
    return HostRules(chains=tuple(chains), rules=tuple(rules))


def parse_listing(listed: Mapping[str, Any]) -> tuple[list[Chain], list[Rule]]:
    """The chains and rules of one ``nft -j list table`` answer, in the kernel's order."""
    chains: list[Chain] = []
    rules: list[Rule] = []
    for item in listed.get("nftables", []):
        if "chain" in item:
            chain = item["chain"]
            chains.append(
                Chain(
                    family=chain.get("family"),
                    name=str(chain.get("name")),
                    hook=str(chain.get("hook", "-")),
                    priority=int(chain.get("prio", 0)),
                    policy=str(chain.get("policy", "-")),
                )
            )
        elif "rule" in item:
            rule = item["rule"]
            rules.append(
                Rule(
                    family=rule.get("family"),
                    chain=str(rule.get("chain")),
                    expr=tuple(rule.get("expr") or ()),
                )
            )
    return chains, rules


def differences(expected: HostRules, found: HostRules) -> tuple[str, ...]:
    """What the kernel lacks or holds beyond the expected rules, one line each; empty when
    they are the same (chain settings, rules, and the rules' order in each chain)."""
    problems: list[str] = []
    for chain in expected.chains:
        if chain not in found.chains:
            problems.append(f"missing chain {chain.describe()}")
    for chain in found.chains:
        if chain not in expected.chains:
            problems.append(f"unexpected chain {chain.describe()}")
    wanted = [rule.key() for rule in expected.rules]
    held = [rule.key() for rule in found.rules]
    for rule in expected.rules:
        if rule.key() not in held:
            problems.append(f"missing rule {rule.describe()}")
    for rule in found.rules:
        if rule.key() not in wanted:
            problems.append(f"unexpected rule {rule.describe()}")
    if not problems and wanted != held:
        problems.append("the rules are in another order")
    return tuple(problems)


# -- rendering ---------------------------------------------------------------------------------


def _canonical(value: Any) -> Any:
    """Sets and ``in`` lists sorted, so the kernel's order of a set's elements is no change."""
    if isinstance(value, dict):
        return {
            key: sorted(map(_canonical, item), key=_order)
            if key == "set" and isinstance(item, list)
            else _canonical(item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_canonical(item) for item in value]
    return value


def _order(value: Any) -> tuple[int, int, str]:
    """Numbers first, by value (as nft lists a set of ports), then anything else by its JSON."""
    if isinstance(value, int) and not isinstance(value, bool):
        return (0, value, "")
    return (1, 0, json.dumps(value, sort_keys=True))


def _text(item: Mapping[str, Any]) -> str:
    if "match" in item:
        match = item["match"]
        op = {"==": "", "in": ""}.get(str(match.get("op")), f"{match.get('op')} ")
        return f"{_operand(match.get('left'))} {op}{_operand(match.get('right'))}"
    if len(item) == 1:
        return str(next(iter(item)))
    return json.dumps(item, sort_keys=True)


def _operand(value: Any) -> str:
    if isinstance(value, dict):
        if "meta" in value:
            return str(value["meta"].get("key"))
        if "payload" in value:
            return f"{value['payload'].get('protocol')} {value['payload'].get('field')}"
        if "ct" in value:
            return f"ct {value['ct'].get('key')}"
        if "prefix" in value:
            return f"{value['prefix'].get('addr')}/{value['prefix'].get('len')}"
        if "set" in value:
            return "{ " + ", ".join(_operand(v) for v in value["set"]) + " }"
        return json.dumps(value, sort_keys=True)
    if isinstance(value, list):
        return ",".join(_operand(v) for v in value)
    if isinstance(value, str):
        return f'"{value}"' if value.startswith(("ac-",)) else value
    return str(value)
