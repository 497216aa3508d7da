"""The egress matcher: deny wins, wildcards match strictly below, names and addresses never
stand in for each other, and protected addresses need a rule inside their own range."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentcell.netsvc.egress import EgressPolicy, normalize_name, parse_address
from agentcell.spec.tenant import TenantNetwork


def policy(
    allow: list[dict[str, Any]], deny: list[dict[str, Any]] | None = None, **kw: Any
) -> EgressPolicy:
    network = TenantNetwork.model_validate({"egress": {"allow": allow, "deny": deny or []}})
    return EgressPolicy(network, **kw)


def ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


def test_egress_none_allows_nothing() -> None:
    none = EgressPolicy(TenantNetwork.model_validate({"egress": "none"}))
    verdict = none.check_name("pypi.org", 443)
    assert not verdict.allowed and "egress is none" in verdict.reason
    assert not none.check_address(ip("10.1.2.3"), 443).allowed
    assert not none.name_resolvable("pypi.org").allowed


def test_exact_name_and_port() -> None:
    rules = policy([{"name": "pypi.org"}])
    verdict = rules.check_name("PyPI.org.", 443)
    assert verdict.allowed and verdict.rule is not None and verdict.rule.name == "pypi.org"
    assert "pypi.org:443" in verdict.reason
    assert not rules.check_name("pypi.org", 80).allowed
    assert not rules.check_name("files.pypi.org", 443).allowed
    assert not rules.check_name("evilpypi.org", 443).allowed


def test_wildcard_matches_strictly_below() -> None:
    rules = policy([{"name": "*.pypi.org", "ports": [443, 8443]}])
    assert rules.check_name("files.pypi.org", 443).allowed
    assert rules.check_name("a.b.pypi.org", 8443).allowed
    assert not rules.check_name("pypi.org", 443).allowed
    assert not rules.check_name("xpypi.org", 443).allowed
    assert not rules.check_name("pypi.org.evil.com", 443).allowed


def test_deny_wins_over_allow() -> None:
    rules = policy([{"name": "*.example.com"}], deny=[{"name": "secret.example.com"}])
    assert rules.check_name("www.example.com", 443).allowed
    verdict = rules.check_name("secret.example.com", 443)
    assert not verdict.allowed and verdict.rule is not None and "denied by" in verdict.reason
    assert not rules.name_resolvable("secret.example.com").allowed
    assert rules.name_resolvable("www.example.com").allowed


def test_deny_on_one_port_leaves_another_resolvable() -> None:
    rules = policy([{"name": "api.example.com", "ports": [443, 8443]}],
                   deny=[{"name": "api.example.com", "ports": [443]}])  # fmt: skip
    assert not rules.check_name("api.example.com", 443).allowed
    assert rules.check_name("api.example.com", 8443).allowed
    assert rules.name_resolvable("api.example.com").allowed


def test_a_name_is_never_allowed_by_an_address_rule_nor_the_reverse() -> None:
    rules = policy([{"cidr": "10.0.0.0/8"}, {"name": "example.com"}])
    assert not rules.check_name("10.1.2.3", 443).allowed  # a name spelled like an address
    assert not rules.name_resolvable("anything.test").allowed
    assert rules.check_address(ip("10.1.2.3"), 443).allowed
    assert not rules.check_address(ip("93.184.216.34"), 443).allowed  # example.com's rule


def test_cidr_deny_wins() -> None:
    rules = policy([{"cidr": "10.0.0.0/8", "ports": [443, 22]}], deny=[{"cidr": "10.9.0.0/16"}])
    assert rules.check_address(ip("10.1.0.1"), 443).allowed
    assert not rules.check_address(ip("10.9.0.1"), 443).allowed
    assert rules.check_address(ip("10.9.0.1"), 22).allowed  # the deny rule names 443 only


@pytest.mark.parametrize(
    "address", ["127.0.0.1", "::1", "169.254.1.1", "fe80::1", "0.0.0.0", "224.0.0.1", "172.30.0.5"]
)
def test_wide_rules_do_not_open_protected_addresses(address: str) -> None:
    rules = policy([{"cidr": "0.0.0.0/0"}, {"cidr": "::/0"}, {"name": "*"}],
                   private=[ipaddress.ip_network("172.30.0.0/24")])  # fmt: skip
    assert not rules.check_address(ip(address), 443).allowed
    assert not rules.check_resolved("anything.example", ip(address), 443).allowed


def test_a_rule_inside_a_protected_range_opens_it() -> None:
    rules = policy(
        [{"cidr": "127.0.0.0/8", "ports": [8443]}, {"name": "canary.test", "ports": [8443]}]
    )
    assert rules.check_address(ip("127.0.0.1"), 8443).allowed
    assert rules.check_resolved("canary.test", ip("127.0.0.1"), 8443).allowed
    assert not rules.check_resolved("canary.test", ip("127.0.0.1"), 443).allowed


def test_metadata_service_is_never_reachable() -> None:
    rules = policy([{"cidr": "169.254.169.254/32"}, {"cidr": "169.254.0.0/16"}])
    verdict = rules.check_address(ip("169.254.169.254"), 443)
    assert not verdict.allowed and "metadata" in verdict.reason
    assert rules.check_address(ip("169.254.1.1"), 443).allowed
    assert not rules.check_resolved("x.test", ip("fd00:ec2::254"), 443).allowed


def test_resolved_public_address_of_an_allowed_name_is_allowed() -> None:
    rules = policy([{"name": "example.com"}], deny=[{"cidr": "203.0.113.0/24"}])
    assert rules.check_resolved("example.com", ip("198.51.100.7"), 443).allowed
    assert not rules.check_resolved("example.com", ip("203.0.113.9"), 443).allowed


def test_address_literals_parse() -> None:
    assert parse_address("[::1]") == ip("::1")
    assert parse_address("10.0.0.1") == ip("10.0.0.1")
    assert parse_address("example.com") is None
    assert normalize_name(" Example.COM. ") == "example.com"


labels = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True)
names = st.lists(labels, min_size=1, max_size=4).map(".".join)
ports = st.integers(min_value=1, max_value=65535)


@settings(max_examples=300, deadline=None)
@given(base=names, below=st.lists(labels, min_size=0, max_size=3), port=ports)
def test_wildcard_is_exactly_the_names_below(base: str, below: list[str], port: int) -> None:
    rules = policy([{"name": f"*.{base}", "ports": [port]}])
    name = ".".join([*below, base])
    assert rules.check_name(name, port).allowed == bool(below)
    assert rules.check_name(name.upper() + ".", port).allowed == bool(below)


@settings(max_examples=300, deadline=None)
@given(allowed=names, denied=names, query=names, port=ports)
def test_deny_always_wins(allowed: str, denied: str, query: str, port: int) -> None:
    rules = policy([{"name": allowed, "ports": [port]}, {"name": "*", "ports": [port]}],
                   deny=[{"name": denied, "ports": [port]}])  # fmt: skip
    verdict = rules.check_name(query, port)
    assert verdict.allowed == (query != denied)


@settings(max_examples=300, deadline=None)
@given(address=st.ip_addresses(), port=ports, name=names)
def test_name_rules_never_allow_addresses(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int, name: str
) -> None:
    rules = policy([{"name": "*", "ports": [port]}, {"name": name, "ports": [port]}])
    assert not rules.check_address(address, port).allowed
