"""The host files of a tenant network and the reading of a cell's routes (pure parts)."""

from __future__ import annotations

from pathlib import Path

from agentcell.runtime.docker.networks import has_default_route, resolv_conf_text, tenant_net_dir

# /proc/<pid>/net/route of a cell on an internal network, as Docker 20.10 leaves it, and after.
ROUTE_WITH_DEFAULT = (
    "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
    "eth0\t00000000\t010014AC\t0003\t0\t0\t0\t00000000\t0\t0\t0\n"
    "eth0\t000014AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n"
)
ROUTE_WITHOUT = ROUTE_WITH_DEFAULT.splitlines(keepends=True)[0] + (
    "eth0\t000014AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n"
)
# ipv6_route: the kernel's unreachable default on lo is not a way out.
IPV6_LO_ONLY = (
    "00000000000000000000000000000000 00 00000000000000000000000000000000 00 "
    "00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo\n"
)
IPV6_DEFAULT = (
    "00000000000000000000000000000000 00 00000000000000000000000000000000 00 "
    "fd000000000000000000000000000001 00000400 00000001 00000000 00000003     eth0\n"
)


def test_a_default_route_is_found_and_its_absence_too(tmp_path: Path) -> None:
    route = tmp_path / "route"
    route.write_text(ROUTE_WITH_DEFAULT)
    assert has_default_route(route, ipv6=False)
    route.write_text(ROUTE_WITHOUT)
    assert not has_default_route(route, ipv6=False)
    assert not has_default_route(tmp_path / "missing", ipv6=False)
    route.write_text(IPV6_LO_ONLY)
    assert not has_default_route(route, ipv6=True)
    route.write_text(IPV6_DEFAULT)
    assert has_default_route(route, ipv6=True)


def test_the_resolv_conf_names_the_gateway_alone() -> None:
    text = resolv_conf_text("172.20.0.1")
    assert [line for line in text.splitlines() if line.startswith("nameserver")] == [
        "nameserver 172.20.0.1"
    ]
    assert "ndots:0" in text


def test_the_files_live_under_the_run_directory() -> None:
    assert tenant_net_dir("acme", {"AGENTCELL_HOME": "/h"}) == Path("/h/run/net/acme")
    assert tenant_net_dir("acme", {}) == Path("/run/agentcell/net/acme")
