"""A tenant's resolver: UDP and TCP DNS on the bridge's gateway address.

It answers, for a query from one of the tenant's cells:

1. a cell's agent name (one label, ``web``) with that cell's address on the tenant network,
   when the tenant allows intra-tenant traffic;
2. a name the egress allow-list permits: looked up in the configured upstream (never the host's
   resolver); an ``A``/``AAAA`` answer becomes the *gateway's* address, so the cell's TLS to that
   name lands on the egress gateway's server-name listener, which judges it again; ``NXDOMAIN``
   passes through; without an upstream, ``SERVFAIL``;
3. anything else: ``NXDOMAIN`` (``REFUSED`` for another class or opcode), never forwarded.

Every answer is a line in the decision log, with the cell, the name and the query type. Bounded:
a query is at most :data:`MAX_QUERY_BYTES`, each source has a token bucket, TTLs are capped at
:data:`MAX_TTL_S`, and only so many upstream look-ups and TCP connections run at once.
Messages are parsed and built by dnspython only.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import cast

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from agentcell.netsvc.decisions import DecisionLog
from agentcell.netsvc.upstream import NoUpstream, UpstreamFailed, UpstreamResolver
from agentcell.netsvc.view import LiveView, TenantNetView

__all__ = ["MAX_QUERY_BYTES", "MAX_TTL_S", "Resolver", "ResolverLimits"]

MAX_QUERY_BYTES = 4096
MAX_TTL_S = 30
CELL_TTL_S = 5
"""Cells come and go: their names are cached briefly."""
_ADDRESS_TYPES = (dns.rdatatype.A, dns.rdatatype.AAAA)


@dataclass(frozen=True, kw_only=True)
class ResolverLimits:
    """What one source, and everyone together, may cost the resolver."""

    queries_per_second: float = 200.0
    burst: int = 400
    max_pending_lookups: int = 256
    max_tcp_connections: int = 64
    tcp_idle_timeout: float = 10.0
    max_sources: int = 4096


class _Buckets:
    """A token bucket per source address; the oldest sources are forgotten first."""

    def __init__(self, rate: float, burst: int, max_sources: int) -> None:
        self.rate, self.burst, self.max_sources = rate, burst, max_sources
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, source: str) -> bool:
        now = time.monotonic()
        tokens, last = self._buckets.pop(source, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate)
        allowed = tokens >= 1.0
        self._buckets[source] = (tokens - 1.0 if allowed else tokens, now)
        while len(self._buckets) > self.max_sources:
            self._buckets.popitem(last=False)
        return allowed


class Resolver:
    """The DNS server of one tenant network. ``start`` binds it; ``close`` stops it."""

    def __init__(
        self,
        live: LiveView,
        *,
        upstream: UpstreamResolver,
        log: DecisionLog,
        limits: ResolverLimits | None = None,
    ) -> None:
        self.live = live
        self.upstream = upstream
        self.log = log
        self.limits = limits or ResolverLimits()
        self._buckets = _Buckets(
            self.limits.queries_per_second, self.limits.burst, self.limits.max_sources
        )
        self._transport: asyncio.DatagramTransport | None = None
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._tcp_open = 0
        self.dropped = 0
        """Queries dropped: rate limited, too large, unparseable, or too many pending."""

    # -- serving ------------------------------------------------------------------------------

    async def start(self, host: str, port: int) -> None:
        """Listen on ``host:port``, UDP and TCP.

        Raises:
            OSError: the address cannot be bound.
        """
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Datagrams(self), local_addr=(host, port)
        )
        self._transport = transport
        try:
            self._server = await asyncio.start_server(self._tcp, host, port, reuse_address=True)
        except OSError:
            transport.close()
            raise

    async def close(self) -> None:
        """Stop listening and cancel the look-ups still running."""
        if self._transport is not None:
            self._transport.close()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _datagram(
        self, data: bytes, peer: tuple[str, int], reply: asyncio.DatagramTransport
    ) -> None:
        if len(data) > MAX_QUERY_BYTES or not self._buckets.take(peer[0]):
            self.dropped += 1
            return
        if len(self._tasks) >= self.limits.max_pending_lookups:
            self.dropped += 1
            return
        task = asyncio.create_task(self._answer_datagram(data, peer, reply))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer_datagram(
        self, data: bytes, peer: tuple[str, int], reply: asyncio.DatagramTransport
    ) -> None:
        try:
            answer = await self.answer(data, peer[0], udp=True)
        except dns.exception.DNSException:
            self.dropped += 1  # a query dnspython parsed but cannot answer (e.g. odd EDNS)
            return
        if answer is not None and not reply.is_closing():
            reply.sendto(answer, peer)

    async def _tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        source = str(peer[0]) if peer else "?"
        if self._tcp_open >= self.limits.max_tcp_connections:
            writer.close()
            return
        self._tcp_open += 1
        try:
            while True:
                head = await asyncio.wait_for(reader.readexactly(2), self.limits.tcp_idle_timeout)
                size = int.from_bytes(head, "big")
                if size > MAX_QUERY_BYTES or not self._buckets.take(source):
                    self.dropped += 1
                    return
                data = await asyncio.wait_for(
                    reader.readexactly(size), self.limits.tcp_idle_timeout
                )
                answer = await self.answer(data, source)
                if answer is None:
                    return
                writer.write(len(answer).to_bytes(2, "big") + answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, TimeoutError, OSError, dns.exception.DNSException):
            return
        finally:
            self._tcp_open -= 1
            writer.close()

    # -- answering ----------------------------------------------------------------------------

    async def answer(self, wire: bytes, source: str, *, udp: bool = False) -> bytes | None:
        """The wire answer to the query ``wire`` from ``source`` (None: drop it); ``udp``
        bounds it by the size the query can take (512 bytes, or its EDNS payload)."""
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            self.dropped += 1
            return None
        if query.flags & dns.flags.QR:
            self.dropped += 1  # a response sent to us: never answer one (reflection loops)
            return None
        view = self.live.current
        response = dns.message.make_response(query)
        response.flags |= dns.flags.RA
        response.flags &= ~dns.flags.AA
        if query.opcode() != dns.opcode.QUERY:
            response.set_rcode(dns.rcode.REFUSED)
            return self._wire(response, udp)
        if len(query.question) != 1:
            response.set_rcode(dns.rcode.FORMERR)
            return self._wire(response, udp)
        question = query.question[0]
        qtype = dns.rdatatype.to_text(question.rdtype)
        name = question.name.to_text(omit_final_dot=True).lower()
        cell = view.cell_of(source)

        def note(decision: str, reason: str) -> None:
            self.log.record(
                tenant=view.tenant, cell=cell, kind="dns", name=name, qtype=qtype,
                decision=decision, reason=reason,  # type: ignore[arg-type]
            )  # fmt: skip

        if question.rdclass != dns.rdataclass.IN:
            response.set_rcode(dns.rcode.REFUSED)
            note("deny", f"class {dns.rdataclass.to_text(question.rdclass)} is refused")
            return self._wire(response, udp)
        if len(question.name.labels) == 2 and name in view.cells:  # one label + the root
            if view.network.intra_tenant:
                self._cell_answer(response, question.name, question.rdtype, view, name)
                note("allow", "a cell of the tenant")
                return self._wire(response, udp)
            response.set_rcode(dns.rcode.NXDOMAIN)
            note("deny", "a cell of the tenant, but intra-tenant traffic is off")
            return self._wire(response, udp)
        verdict = view.policy.name_resolvable(name) if name else None
        if verdict is None or not verdict.allowed:
            response.set_rcode(dns.rcode.NXDOMAIN)
            note("deny", verdict.reason if verdict else "the root is not a name")
            return self._wire(response, udp)
        if question.rdtype not in _ADDRESS_TYPES:
            note("allow", f"{verdict.reason}; only A and AAAA are answered for external names")
            return self._wire(response, udp)  # NOERROR, no data
        try:
            upstream = await self.upstream.query(question.name, question.rdtype)
        except (NoUpstream, UpstreamFailed) as exc:
            response.set_rcode(dns.rcode.SERVFAIL)
            note("allow", f"{verdict.reason}; {exc.what}")
            return self._wire(response, udp)
        if upstream.rcode() == dns.rcode.NXDOMAIN:
            response.set_rcode(dns.rcode.NXDOMAIN)
            note("allow", f"{verdict.reason}; upstream: NXDOMAIN")
            return self._wire(response, udp)
        ttls = [rrset.ttl for rrset in upstream.answer if rrset.rdtype == question.rdtype]
        if ttls and self._gateway_type(view) == question.rdtype:
            response.answer.append(
                dns.rrset.from_text(
                    question.name,
                    min(min(ttls), MAX_TTL_S),
                    "IN",
                    dns.rdatatype.to_text(question.rdtype),
                    str(view.gateway),
                )
            )
            note("allow", f"{verdict.reason}; answered with the gateway {view.gateway}")
        else:
            note("allow", f"{verdict.reason}; no {qtype} answer to give")
        return self._wire(response, udp)

    @staticmethod
    def _gateway_type(view: TenantNetView) -> dns.rdatatype.RdataType:
        return dns.rdatatype.A if view.gateway.version == 4 else dns.rdatatype.AAAA

    @staticmethod
    def _cell_answer(
        response: dns.message.Message,
        qname: dns.name.Name,
        rdtype: dns.rdatatype.RdataType,
        view: TenantNetView,
        name: str,
    ) -> None:
        address = view.cells[name]
        wanted = dns.rdatatype.A if address.version == 4 else dns.rdatatype.AAAA
        if rdtype in (wanted, dns.rdatatype.ANY):
            response.answer.append(
                dns.rrset.from_text(
                    qname, CELL_TTL_S, "IN", dns.rdatatype.to_text(wanted), str(address)
                )
            )

    @staticmethod
    def _wire(response: dns.message.Message, udp: bool) -> bytes:
        limit = 65535
        if udp:
            limit = max(512, min(response.payload, MAX_QUERY_BYTES)) if response.edns >= 0 else 512
        try:
            return response.to_wire(max_size=limit)
        except dns.exception.TooBig:
            response.answer.clear()
            response.flags |= dns.flags.TC
            return response.to_wire(max_size=limit)


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, resolver: Resolver) -> None:
        self.resolver = resolver
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast("asyncio.DatagramTransport", transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        if self.transport is not None:
            self.resolver._datagram(data, (str(addr[0]), int(addr[1])), self.transport)
