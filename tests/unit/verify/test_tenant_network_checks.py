"""The host side of a networked cell, judged from recorded facts."""

from __future__ import annotations

import dataclasses

from agentcell.spec.load import load_text
from agentcell.spec.model import AgentSpec
from agentcell.verify.compare.network import TenantNetworkFacts, tenant_network_checks

RULES = (
    "inet input (hook input, priority -10, policy accept)",
    'inet input: iifname "ac-acme" ip daddr 172.20.0.1 udp dport 53 accept',
    'inet input: iifname "ac-acme" drop',
)
FACTS = TenantNetworkFacts(
    tenant="acme",
    gateway="172.20.0.1",
    expected_rules=RULES,
    kernel_rules=RULES,
    rules_source="nft",
    resolv_conf="nameserver 172.20.0.1\noptions ndots:0 timeout:1 attempts:2\n",
    resolv_source="/proc/1/root/etc/resolv.conf",
    engine_dns=("172.20.0.1",),
)


def spec(network: str) -> AgentSpec:
    (doc,) = load_text(
        "apiVersion: agentcell/v1\nkind: Agent\nmetadata:\n  name: a\n  tenant: acme\n"
        f"spec:\n  image: agentcell/sandbox:0.1.0\n  network: {network}\n",
        file="a.yaml",
    )
    return doc.document.spec


def statuses(facts: TenantNetworkFacts | None, network: str = "tenant") -> dict[str, str]:
    return {check.id: check.status for check in tenant_network_checks(spec(network), facts)}


def test_rules_resolver_and_dns_in_place_are_verified_and_configured() -> None:
    assert statuses(FACTS) == {
        "net.host-rules": "verified",
        "net.resolver": "verified",
        "net.dns": "configured",
    }


def test_a_cell_without_a_network_has_no_such_checks() -> None:
    assert statuses(FACTS, network="none") == {}


def test_a_deleted_rule_is_a_mismatch_naming_it() -> None:
    facts = dataclasses.replace(FACTS, kernel_rules=RULES[:1] + RULES[2:])
    (rules,) = [c for c in tenant_network_checks(spec("tenant"), facts) if c.id == "net.host-rules"]
    assert rules.status == "mismatch"
    assert "missing: " + RULES[1] in rules.observed


def test_an_added_rule_or_another_order_is_a_mismatch() -> None:
    assert (
        statuses(dataclasses.replace(FACTS, kernel_rules=(*RULES, "inet input: accept")))[
            "net.host-rules"
        ]
        == "mismatch"
    )
    assert (
        statuses(dataclasses.replace(FACTS, kernel_rules=(RULES[0], RULES[2], RULES[1])))[
            "net.host-rules"
        ]
        == "mismatch"
    )


def test_unread_rules_are_unknown_not_verified() -> None:
    facts = dataclasses.replace(FACTS, kernel_rules=None, rules_error="nft is not installed")
    assert statuses(facts)["net.host-rules"] == "unknown"


def test_a_resolver_other_than_the_gateway_is_a_mismatch() -> None:
    leaky = dataclasses.replace(FACTS, resolv_conf="nameserver 172.20.0.1\nnameserver 8.8.8.8\n")
    assert statuses(leaky)["net.resolver"] == "mismatch"
    assert statuses(dataclasses.replace(FACTS, engine_dns=()))["net.dns"] == "mismatch"


def test_a_cell_off_its_tenant_network_is_a_mismatch() -> None:
    assert statuses(TenantNetworkFacts(tenant="acme", gateway=None)) == {
        "net.host-rules": "mismatch"
    }
