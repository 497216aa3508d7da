"""The tenant's host rules: what is built, the transaction that installs it, and the comparison
with what the kernel lists (recorded from ``nft -j list table`` on nft 1.0.6)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agentcell.runtime import netfilter
from agentcell.runtime.netfilter import HostRules, TenantRules

RECORDED = json.loads((Path(__file__).parent / "data" / "nft_list_rec.json").read_text())
SPEC = TenantRules(tenant="rec", gateway="10.250.0.1", subnets=("10.250.0.0/24",))


def kernel(listing: dict[str, Any]) -> HostRules:
    chains, rules = [], []
    for family in ("inet", "bridge"):
        if family in listing:
            found_chains, found_rules = netfilter.parse_listing(listing[family])
            chains += found_chains
            rules += found_rules
    return HostRules(chains=tuple(chains), rules=tuple(rules))


def test_the_bridge_reaches_only_the_resolver_and_gateway_ports_on_the_host() -> None:
    assert netfilter.ruleset(SPEC).lines() == (
        "inet input (hook input, priority -10, policy accept)",
        "inet forward (hook forward, priority -10, policy accept)",
        'inet input: iifname "ac-rec" ct state established,related accept',
        'inet input: iifname "ac-rec" ip daddr 10.250.0.1 udp dport 53 accept',
        'inet input: iifname "ac-rec" ip daddr 10.250.0.1 tcp dport { 53, 443, 3128 } accept',
        'inet input: iifname "ac-rec" drop',
        'inet forward: iifname "ac-rec" oifname != "ac-rec" drop',
        'inet forward: oifname "ac-rec" iifname != "ac-rec" drop',
    )


def test_without_intra_tenant_traffic_the_bridge_drops_frames_between_cells() -> None:
    lines = netfilter.ruleset(
        TenantRules(tenant="rec", gateway="10.250.0.1", subnets=SPEC.subnets, intra_tenant=False)
    ).lines()
    assert "bridge forward (hook forward, priority -10, policy accept)" in lines
    assert lines[-2:] == (
        "bridge forward: ip saddr 10.250.0.0/24 drop",
        "bridge forward: ip daddr 10.250.0.0/24 drop",
    )


def test_the_recorded_kernel_listing_equals_the_expected_rules() -> None:
    spec = TenantRules(tenant="rec", gateway="10.250.0.1", subnets=SPEC.subnets, intra_tenant=False)
    assert netfilter.differences(netfilter.ruleset(spec), kernel(RECORDED)) == ()
    # Intra-tenant on: the bridge table is one the kernel should not hold.
    problems = netfilter.differences(netfilter.ruleset(SPEC), kernel(RECORDED))
    assert "unexpected chain bridge forward (hook forward, priority -10, policy accept)" in problems


def test_a_deleted_or_reordered_rule_is_a_difference() -> None:
    spec = TenantRules(tenant="rec", gateway="10.250.0.1", subnets=SPEC.subnets, intra_tenant=False)
    listing = json.loads(json.dumps(RECORDED))
    items = listing["inet"]["nftables"]
    udp = next(i for i, item in enumerate(items) if "udp" in json.dumps(item))
    del items[udp]
    assert netfilter.differences(netfilter.ruleset(spec), kernel(listing)) == (
        'missing rule inet input: iifname "ac-rec" ip daddr 10.250.0.1 udp dport 53 accept',
    )
    listing = json.loads(json.dumps(RECORDED))
    items = listing["inet"]["nftables"]
    rules = [i for i, item in enumerate(items) if "rule" in item]
    items[rules[0]], items[rules[3]] = items[rules[3]], items[rules[0]]
    assert netfilter.differences(netfilter.ruleset(spec), kernel(listing)) == (
        "the rules are in another order",
    )
    listing = json.loads(json.dumps(RECORDED))
    chain = next(item for item in listing["inet"]["nftables"] if "chain" in item)
    chain["chain"]["policy"] = "drop"
    assert any(p.startswith("missing chain inet") for p in netfilter.differences(
        netfilter.ruleset(spec), kernel(listing)
    ))  # fmt: skip


def test_the_transaction_replaces_the_tables_whatever_they_held() -> None:
    commands = netfilter.transaction(SPEC)["nftables"]
    table = {"family": "inet", "name": "agentcell_rec"}
    assert commands[:3] == [
        {"add": {"table": table}},
        {"delete": {"table": table}},
        {"add": {"table": table}},
    ]
    # With intra-tenant traffic on, a bridge table left from before is removed.
    bridge = {"family": "bridge", "name": "agentcell_rec"}
    assert commands[-2:] == [{"add": {"table": bridge}}, {"delete": {"table": bridge}}]
    rules = [c["add"]["rule"] for c in commands if "rule" in c.get("add", {})]
    assert len(rules) == len(netfilter.ruleset(SPEC).rules)


def test_a_gateway_that_is_not_ipv4_is_refused() -> None:
    with pytest.raises(ValueError, match="not an IPv4"):
        netfilter.ruleset(TenantRules(tenant="rec", gateway="fd00::1", subnets=()))
