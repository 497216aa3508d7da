"""The egress gateway on loopback: CONNECT to an allowed name reaches the test's TLS canary
(its upstream maps the name to 127.0.0.1, opened by an explicit loopback CIDR rule); a denied
name is 403 and logged without a look-up; TLS by server name is judged and spliced; a changed
allow-list applies to the next connection."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agentcell.netsvc.decisions import DecisionLog, read_decisions
from agentcell.netsvc.gateway import Gateway, read_server_name
from agentcell.netsvc.upstream import UpstreamResolver, parse_upstreams
from agentcell.netsvc.view import LiveView, TenantNetView
from agentcell.spec.tenant import TenantNetwork
from tests.netsvc_support import CANARY_GREETING, LoggingUpstream, TlsCanary, self_signed

CANARY_NAME = "canary.test"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def canary(tmp_path: Path) -> Iterator[tuple[TlsCanary, Path]]:
    cert, key = self_signed(CANARY_NAME, tmp_path)
    with TlsCanary(cert, key) as server:
        yield server, cert


def view(allow: list[dict[str, Any]], deny: list[dict[str, Any]] | None = None) -> TenantNetView:
    network = TenantNetwork.model_validate({"egress": {"allow": allow, "deny": deny or []}})
    return TenantNetView(tenant="acme", gateway=ipaddress.ip_address("127.0.0.1"), network=network)


def canary_rules(port: int) -> list[dict[str, Any]]:
    # The name, and loopback opened explicitly: the test's canary lives there.
    return [{"name": CANARY_NAME, "ports": [port]}, {"cidr": "127.0.0.0/8", "ports": [port]}]


Body = Callable[[Gateway, int, int], Awaitable[None]]


def run(tmp_path: Path, live: LiveView, upstream: str, body: Body, tls_port: int = 443) -> Path:
    log = DecisionLog(tmp_path / "decisions.jsonl")

    async def main() -> None:
        gateway = Gateway(live, upstream=UpstreamResolver(parse_upstreams(upstream), timeout=1.0),
                          log=log, tls_port=tls_port)  # fmt: skip
        proxy_port, sni_port = free_port(), free_port()
        await gateway.start("127.0.0.1", proxy_port, sni_port)
        try:
            await body(gateway, proxy_port, sni_port)
        finally:
            await gateway.close()

    asyncio.run(main())
    log.close()
    return log.path


async def connect_via_proxy(proxy_port: int, target: str) -> tuple[bytes, Any, Any]:
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy_port)
    writer.write(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    return head, reader, writer


async def tls_greeting(reader: Any, writer: Any, cert: Path) -> bytes:
    context = ssl.create_default_context(cafile=str(cert))
    await writer.start_tls(context, server_hostname=CANARY_NAME)
    greeting: bytes = await asyncio.wait_for(reader.readline(), 5)
    writer.write(b"ping\n")
    echoed = await asyncio.wait_for(reader.readline(), 5)
    writer.close()
    assert echoed == b"ping\n"
    return greeting


def test_connect_to_an_allowed_name_reaches_the_canary(
    tmp_path: Path, canary: tuple[TlsCanary, Path]
) -> None:
    server, cert = canary
    live = LiveView(view(canary_rules(server.port)))
    with LoggingUpstream({CANARY_NAME: "127.0.0.1"}) as upstream:

        async def body(gateway: Gateway, proxy_port: int, sni_port: int) -> None:
            head, reader, writer = await connect_via_proxy(
                proxy_port, f"{CANARY_NAME}:{server.port}"
            )
            assert head.startswith(b"HTTP/1.1 200")
            assert await tls_greeting(reader, writer, cert) == CANARY_GREETING

        log = run(tmp_path, live, upstream.address, body)
        assert upstream.seen == [CANARY_NAME, CANARY_NAME]  # A, then AAAA
    (entry,) = read_decisions(log)
    assert (entry.kind, entry.name, entry.address, entry.port, entry.decision) == (
        "connect", CANARY_NAME, "127.0.0.1", server.port, "allow",
    )  # fmt: skip


def test_a_denied_name_is_403_logged_and_not_looked_up(
    tmp_path: Path, canary: tuple[TlsCanary, Path]
) -> None:
    server, _ = canary
    live = LiveView(view(canary_rules(server.port)))
    with LoggingUpstream({"evil.test": "127.0.0.1"}) as upstream:

        async def body(gateway: Gateway, proxy_port: int, sni_port: int) -> None:
            head, _, writer = await connect_via_proxy(proxy_port, f"evil.test:{server.port}")
            writer.close()
            assert head.startswith(b"HTTP/1.1 403")

        log = run(tmp_path, live, upstream.address, body)
        assert upstream.seen == []
    (entry,) = read_decisions(log, denied_only=True)
    assert (entry.name, entry.decision) == ("evil.test", "deny")
    assert server.connections == 0


def test_an_allowed_name_resolving_to_loopback_is_refused_without_a_cidr_rule(
    tmp_path: Path, canary: tuple[TlsCanary, Path]
) -> None:
    server, _ = canary
    live = LiveView(view([{"name": CANARY_NAME, "ports": [server.port]}, {"cidr": "0.0.0.0/0"}]))
    with LoggingUpstream({CANARY_NAME: "127.0.0.1"}) as upstream:

        async def body(gateway: Gateway, proxy_port: int, sni_port: int) -> None:
            head, _, writer = await connect_via_proxy(proxy_port, f"{CANARY_NAME}:{server.port}")
            writer.close()
            assert head.startswith(b"HTTP/1.1 403")
            head, _, writer = await connect_via_proxy(proxy_port, "169.254.169.254:443")
            writer.close()
            assert head.startswith(b"HTTP/1.1 403")

        log = run(tmp_path, live, upstream.address, body)
    reasons = [entry.reason for entry in read_decisions(log, denied_only=True)]
    assert "loopback" in reasons[0] and "metadata" in reasons[1]
    assert server.connections == 0


def test_other_methods_are_405(tmp_path: Path) -> None:
    live = LiveView(view([]))

    async def body(gateway: Gateway, proxy_port: int, sni_port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy_port)
        writer.write(b"GET http://example.test/ HTTP/1.1\r\nHost: example.test\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        writer.close()
        assert head.startswith(b"HTTP/1.1 405")

    run(tmp_path, live, "", body)


def test_tls_by_server_name_is_judged_and_spliced(
    tmp_path: Path, canary: tuple[TlsCanary, Path]
) -> None:
    server, cert = canary
    live = LiveView(view(canary_rules(server.port)))
    with LoggingUpstream({CANARY_NAME: "127.0.0.1", "other.test": "127.0.0.1"}) as upstream:

        async def body(gateway: Gateway, proxy_port: int, sni_port: int) -> None:
            reader, writer = await asyncio.open_connection("127.0.0.1", sni_port)
            assert await tls_greeting(reader, writer, cert) == CANARY_GREETING
            reader, writer = await asyncio.open_connection("127.0.0.1", sni_port)
            context = ssl.create_default_context(cafile=str(cert))
            with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
                await asyncio.wait_for(writer.start_tls(context, server_hostname="other.test"), 5)
            writer.close()

        log = run(tmp_path, live, upstream.address, body, tls_port=server.port)
        assert "other.test" not in upstream.seen
    entries = [(e.kind, e.name, e.decision) for e in read_decisions(log)]
    assert entries == [("sni", CANARY_NAME, "allow"), ("sni", "other.test", "deny")]
    assert server.connections == 1


def test_an_allow_list_change_applies_to_the_next_connection(
    tmp_path: Path, canary: tuple[TlsCanary, Path]
) -> None:
    server, _ = canary
    live = LiveView(view(canary_rules(server.port)))
    with LoggingUpstream({CANARY_NAME: "127.0.0.1"}) as upstream:

        async def body(gateway: Gateway, proxy_port: int, sni_port: int) -> None:
            target = f"{CANARY_NAME}:{server.port}"
            head, _, writer = await connect_via_proxy(proxy_port, target)
            writer.close()
            assert head.startswith(b"HTTP/1.1 200")
            denied = [{"name": CANARY_NAME, "ports": [server.port]}]
            live.update(view(canary_rules(server.port), deny=denied))
            head, _, writer = await connect_via_proxy(proxy_port, target)
            writer.close()
            assert head.startswith(b"HTTP/1.1 403")

        log = run(tmp_path, live, upstream.address, body)
    assert [e.decision for e in read_decisions(log)] == ["allow", "deny"]


def test_server_name_reader() -> None:
    client = ssl.create_default_context()
    outgoing = ssl.MemoryBIO()
    tls = client.wrap_bio(ssl.MemoryBIO(), outgoing, server_hostname="Files.PyPI.org")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    hello = outgoing.read()
    assert read_server_name(hello[:40]) is None  # more bytes needed
    assert read_server_name(hello) == "Files.PyPI.org"
    with pytest.raises(Exception, match="not TLS"):
        read_server_name(b"GET / HTTP/1.1\r\n\r\n")


def test_a_malformed_name_under_a_wide_rule_is_refused_not_crashed(tmp_path: Path) -> None:
    live = LiveView(view([{"name": "*", "ports": [443]}]))
    with LoggingUpstream({}) as upstream:

        async def body(gateway: Gateway, proxy_port: int, sni_port: int) -> None:
            head, _, writer = await connect_via_proxy(proxy_port, "a..b:443")
            writer.close()
            assert head.startswith(b"HTTP/1.1 403")

        log = run(tmp_path, live, upstream.address, body)
        assert upstream.seen == []
    (entry,) = read_decisions(log)
    assert entry.decision == "deny" and "not a DNS name" in entry.reason
