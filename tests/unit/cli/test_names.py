"""Names typed on the command line: what names a cell, a certificate or a metric, and the one
error everything else gets."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentcell.cli.names import (
    InvalidInput,
    agent_filter,
    cell_ref,
    metric_name,
    revoke_target,
    tenant_filter,
)


@pytest.mark.parametrize(
    "name", ["demo/sandbox", "sandbox", "a", "agentcell_demo_sandbox", "web.1", "x" * 40]
)
def test_cell_names_that_can_name_a_cell_pass(name: str) -> None:
    assert cell_ref(name) == name


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("", "NAME is empty"),
        ("ux/", "the agent part is empty"),
        ("/x", "the tenant part is empty"),
        ("a/b/c", "at most one '/'"),
        ("UX/rep", "the tenant part may hold only"),
        ("averylongtenant/x", "the tenant part is 15 characters long"),
        ("a b", "not an agent or container name"),
        ("-x", "not an agent or container name"),
    ],
)
def test_malformed_cell_names_are_refused_saying_why(name: str, why: str) -> None:
    with pytest.raises(InvalidInput) as raised:
        cell_ref(name)
    assert why in raised.value.what
    assert raised.value.exit_code == 2
    assert raised.value.fix and "TENANT/AGENT" in raised.value.fix


def test_a_hostile_name_is_quoted_with_its_controls_escaped() -> None:
    with pytest.raises(InvalidInput) as raised:
        cell_ref("\x1b]0;owned\x07")
    assert "\x1b" not in raised.value.what and "\\x1b" in raised.value.what


def test_revoke_takes_a_serial_or_tenant_agent() -> None:
    assert revoke_target("0a1B") == "0a1B"
    assert revoke_target("demo/reporter") == ("demo", "reporter")
    for bad in ("not a serial", "ux/", "/x", "a/b/c", ""):
        with pytest.raises(InvalidInput):
            revoke_target(bad)


def test_filters_and_metric_names() -> None:
    assert tenant_filter("demo") == "demo" and agent_filter("rep") == "rep"
    assert metric_name("load.1m") == "load.1m"
    for check, bad in (
        (tenant_filter, "toolongtenantname"),
        (agent_filter, "ux/rep"),
        (agent_filter, ""),
        (metric_name, "Load"),
        (metric_name, "x/y"),
    ):
        with pytest.raises(InvalidInput):
            check(bad)


@given(st.text(max_size=300))
def test_any_text_is_a_name_or_one_invalid_input(text: str) -> None:
    refusals: list[InvalidInput] = []
    for check in (cell_ref, revoke_target, tenant_filter, agent_filter, metric_name):
        try:
            check(text)
        except InvalidInput as exc:  # anything else fails the test
            refusals.append(exc)
    assert all("\n" not in refusal.what for refusal in refusals)
