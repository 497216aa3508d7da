"""SPIFFE agent identities: one exact shape, one trust domain."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentcell.identity.errors import IdentityError
from agentcell.identity.spiffe import SpiffeId, parse_spiffe_id

labels = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,8}[a-z0-9])?", fullmatch=True)


@given(tenant=labels, agent=labels)
def test_uri_round_trips(tenant: str, agent: str) -> None:
    identity = SpiffeId("agentcell.local", tenant, agent)
    assert parse_spiffe_id(identity.uri, trust_domain="agentcell.local") == identity
    assert identity.uri == f"spiffe://agentcell.local/tenant/{tenant}/agent/{agent}"


@pytest.mark.parametrize(
    "uri",
    [
        "https://agentcell.local/tenant/a/agent/b",
        "spiffe://agentcell.local/tenant/a/agent",
        "spiffe://agentcell.local/tenant/a/agent/b/extra",
        "spiffe://agentcell.local/agent/b/tenant/a",
        "spiffe://agentcell.local/tenant/A/agent/b",
        "spiffe://agentcell.local/tenant/a/agent/b%2F..",
        "spiffe://agentcell.local/tenant//agent/b",
        "spiffe:///tenant/a/agent/b",
        "spiffe://agentcell.local/tenant/much-too-long-tenant/agent/b",
    ],
)
def test_malformed_identities_are_refused(uri: str) -> None:
    with pytest.raises(IdentityError):
        parse_spiffe_id(uri)


def test_another_trust_domain_is_refused() -> None:
    with pytest.raises(IdentityError, match="trust domain"):
        parse_spiffe_id("spiffe://evil.example/tenant/a/agent/b", trust_domain="agentcell.local")


@given(st.text(max_size=80))
def test_parser_never_crashes_on_text(text: str) -> None:
    with contextlib.suppress(IdentityError):
        parse_spiffe_id(text)
