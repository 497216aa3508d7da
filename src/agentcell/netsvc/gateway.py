"""A tenant's egress gateway, on the bridge's gateway address. Two listeners:

- :data:`~agentcell.cell.network.PROXY_PORT`: HTTP ``CONNECT host:port`` (parsed by h11; any
  other method is answered 405). A name is judged by the name rules, an IP literal by the CIDR
  rules;
- :data:`~agentcell.cell.network.SNI_PORT`: TLS, judged by the server name in its ClientHello
  (port 443). The name is read by feeding the ClientHello to a server-side
  :class:`ssl.SSLObject` whose ``sni_callback`` records it; that handshake is then abandoned and
  the original bytes are sent on to the real server, so the cell's TLS session is end to end.

An allowed name is resolved through the configured upstream (never the host's resolver) and
the first address the rules also allow is connected to; the address must pass the same
protected-range checks as a literal, so an answer pointing at loopback, link-local, the
metadata service or the tenant's own subnet is refused. Then bytes are copied both ways, in
bounded chunks with back-pressure, until both sides close or nothing moves for the idle
timeout. Every decision is a line in the decision log; a refusal is a 403 (CONNECT) or a
closed connection (TLS).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import h11

from agentcell.netsvc.decisions import DecisionKind, DecisionLog
from agentcell.netsvc.egress import Address, Verdict, normalize_name, parse_address
from agentcell.netsvc.upstream import NoUpstream, UpstreamFailed, UpstreamResolver
from agentcell.netsvc.view import LiveView, TenantNetView

__all__ = ["Gateway", "GatewayLimits", "read_server_name"]

CHUNK_BYTES = 64 * 1024
MAX_HEAD_BYTES = 16 * 1024


@dataclass(frozen=True, kw_only=True)
class GatewayLimits:
    """What the gateway holds open, and for how long."""

    max_connections: int = 512
    max_connections_per_source: int = 64
    head_timeout: float = 10.0
    """From accept to a complete CONNECT request or ClientHello."""
    connect_timeout: float = 10.0
    idle_timeout: float = 300.0


_Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, str], Awaitable[None]]


class _NoServerName(Exception):
    """The bytes are not a TLS ClientHello with a server name."""


def read_server_name(hello: bytes) -> str | None:
    """The server name in the TLS ClientHello ``hello``; None while more bytes are needed.

    Raises:
        _NoServerName: the bytes are not a ClientHello, or it names no server.
    """
    seen: list[str | None] = []

    def record(obj: ssl.SSLObject, name: str | None, context: ssl.SSLContext) -> int:
        seen.append(name)
        return ssl.ALERT_DESCRIPTION_HANDSHAKE_FAILURE  # abandon this handshake here

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.sni_callback = record
    incoming = ssl.MemoryBIO()
    server = context.wrap_bio(incoming, ssl.MemoryBIO(), server_side=True)
    incoming.write(hello)
    try:
        server.do_handshake()
    except ssl.SSLWantReadError:
        return None
    except ssl.SSLError:
        pass
    if not seen or not seen[0]:
        raise _NoServerName("no server name in the ClientHello" if seen else "not TLS")
    return seen[0]


class Gateway:
    """The egress gateway of one tenant network."""

    def __init__(
        self,
        live: LiveView,
        *,
        upstream: UpstreamResolver,
        log: DecisionLog,
        limits: GatewayLimits | None = None,
        tls_port: int = 443,
    ) -> None:
        """``tls_port`` is the port TLS by server name is judged on and forwarded to (443;
        tests point it at their own canary's port)."""
        self.live = live
        self.tls_port = tls_port
        self.upstream = upstream
        self.log = log
        self.limits = limits or GatewayLimits()
        self._servers: list[asyncio.Server] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._open: Counter[str] = Counter()
        self.sni_port = 443

    async def start(self, host: str, proxy_port: int, sni_port: int) -> None:
        """Listen for CONNECT on ``proxy_port`` and TLS on ``sni_port``.

        Raises:
            OSError: an address cannot be bound.
        """
        self.sni_port = sni_port
        try:
            for port, handler in ((proxy_port, self._proxy), (sni_port, self._sni)):
                server = await asyncio.start_server(
                    self._guarded(handler), host, port, reuse_address=True
                )
                self._servers.append(server)
        except OSError:
            await self.close()
            raise

    async def close(self) -> None:
        """Stop listening and end every connection."""
        for server in self._servers:
            server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for server in self._servers:
            with contextlib.suppress(Exception):
                await server.wait_closed()
        self._servers.clear()

    def _guarded(
        self, handler: _Handler
    ) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            peer = writer.get_extra_info("peername")
            source = str(peer[0]) if peer else "?"
            if (
                sum(self._open.values()) >= self.limits.max_connections
                or self._open[source] >= self.limits.max_connections_per_source
            ):
                writer.close()
                return
            task = asyncio.current_task()
            assert task is not None
            self._tasks.add(task)
            self._open[source] += 1
            try:
                await handler(reader, writer, source)
            except (OSError, TimeoutError, asyncio.IncompleteReadError, h11.ProtocolError):
                pass  # the peer went away or spoke nonsense: nothing more to do for it
            finally:
                self._open[source] -= 1
                if not self._open[source]:
                    del self._open[source]
                self._tasks.discard(task)
                writer.close()

        return accept

    # -- HTTP CONNECT -------------------------------------------------------------------------

    async def _proxy(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, source: str
    ) -> None:
        http = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
        request = await asyncio.wait_for(self._request(http, reader), self.limits.head_timeout)
        if request is None:
            return
        view = self.live.current
        cell = view.cell_of(source)
        if request.method != b"CONNECT":
            await self._refuse(http, writer, 405, "only CONNECT is served here\n")
            return
        target = request.target.decode("ascii", "replace")
        host, port = _split_target(target)
        if port is None:
            await self._refuse(http, writer, 400, "CONNECT needs host:port\n")
            return
        verdict, address, name = await self._judge(view, host, port)
        self._note(view, cell, "connect", name, address, port, verdict)
        if not verdict.allowed or address is None:
            await self._refuse(http, writer, 403, f"egress refused: {verdict.reason}\n")
            return
        upstream = await self._dial(address, port)
        if upstream is None:
            await self._refuse(http, writer, 502, f"cannot connect to {address}:{port}\n")
            return
        writer.write(http.send(h11.Response(status_code=200, headers=[])))
        await writer.drain()
        early, _ = http.trailing_data
        up_reader, up_writer = upstream
        if early:
            up_writer.write(early)
        await _splice(reader, writer, up_reader, up_writer, self.limits.idle_timeout)

    @staticmethod
    async def _request(http: h11.Connection, reader: asyncio.StreamReader) -> h11.Request | None:
        while True:
            try:
                event = http.next_event()
            except h11.RemoteProtocolError:
                return None
            if isinstance(event, h11.Request):
                return event
            if event is h11.NEED_DATA:
                data = await reader.read(CHUNK_BYTES)
                http.receive_data(data)
                if not data:
                    return None
                continue
            return None

    @staticmethod
    async def _refuse(
        http: h11.Connection, writer: asyncio.StreamWriter, status: int, text: str
    ) -> None:
        body = text.encode()
        headers = [
            ("content-type", "text/plain"),
            ("content-length", str(len(body))),
            ("connection", "close"),
        ]
        with contextlib.suppress(h11.LocalProtocolError):
            writer.write(http.send(h11.Response(status_code=status, headers=headers)))
            writer.write(http.send(h11.Data(data=body)))
            writer.write(http.send(h11.EndOfMessage()))
            await writer.drain()

    # -- TLS by server name -------------------------------------------------------------------

    async def _sni(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, source: str
    ) -> None:
        view = self.live.current
        cell = view.cell_of(source)
        try:
            hello, server_name = await asyncio.wait_for(
                self._hello(reader), self.limits.head_timeout
            )
        except _NoServerName as exc:
            self._note(view, cell, "sni", None, None, self.sni_port,
                       Verdict(decision="deny", reason=str(exc)))  # fmt: skip
            return
        port = self.tls_port
        verdict, address, name = await self._judge(view, server_name, port, literal_allowed=False)
        self._note(view, cell, "sni", name, address, port, verdict)
        if not verdict.allowed or address is None:
            return
        upstream = await self._dial(address, port)
        if upstream is None:
            return
        up_reader, up_writer = upstream
        up_writer.write(hello)
        await _splice(reader, writer, up_reader, up_writer, self.limits.idle_timeout)

    @staticmethod
    async def _hello(reader: asyncio.StreamReader) -> tuple[bytes, str]:
        hello = b""
        while len(hello) < MAX_HEAD_BYTES:
            data = await reader.read(MAX_HEAD_BYTES - len(hello))
            if not data:
                raise _NoServerName("closed before a complete ClientHello")
            hello += data
            name = read_server_name(hello)
            if name is not None:
                return hello, name
        raise _NoServerName(f"no ClientHello within {MAX_HEAD_BYTES} bytes")

    # -- judging and connecting ---------------------------------------------------------------

    async def _judge(
        self, view: TenantNetView, host: str, port: int, *, literal_allowed: bool = True
    ) -> tuple[Verdict, Address | None, str | None]:
        """The verdict on ``host:port``, the address to connect to, and the name asked for."""
        literal = parse_address(host)
        if literal is not None:
            if not literal_allowed:
                return Verdict(decision="deny", reason="a server name is an address"), None, host
            return view.policy.check_address(literal, port), literal, None
        name = normalize_name(host)
        verdict = view.policy.check_name(name, port)
        if not verdict.allowed:
            return verdict, None, name
        try:
            addresses = await self.upstream.addresses(name)
        except (NoUpstream, UpstreamFailed) as exc:
            return Verdict(decision="deny", reason=f"cannot resolve {name}: {exc.what}"), None, name
        if not addresses:
            return Verdict(decision="deny", reason=f"{name} has no address upstream"), None, name
        first: Verdict | None = None
        for address in addresses:
            resolved = view.policy.check_resolved(name, address, port)
            if resolved.allowed:
                return (
                    Verdict(
                        decision="allow",
                        reason=f"{verdict.reason}; {resolved.reason}",
                        rule=verdict.rule,
                    ),
                    address,
                    name,
                )
            first = first or resolved
        assert first is not None
        return first, addresses[0], name

    async def _dial(
        self, address: Address, port: int
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        try:
            return await asyncio.wait_for(
                asyncio.open_connection(str(address), port), self.limits.connect_timeout
            )
        except (OSError, TimeoutError):
            return None

    def _note(
        self,
        view: TenantNetView,
        cell: str,
        kind: DecisionKind,
        name: str | None,
        address: Address | None,
        port: int,
        verdict: Verdict,
    ) -> None:
        self.log.record(
            tenant=view.tenant, cell=cell, kind=kind, name=name,
            address=None if address is None else str(address), port=port,
            decision=verdict.decision, reason=verdict.reason,
        )  # fmt: skip


def _split_target(target: str) -> tuple[str, int | None]:
    """``host:port`` or ``[v6]:port`` into its parts (port None when absent or invalid)."""
    if target.startswith("["):
        host, _, rest = target[1:].partition("]")
        port_text = rest.removeprefix(":")
    else:
        host, _, port_text = target.rpartition(":")
    if not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        return target, None
    return host, int(port_text)


async def _splice(
    a_reader: asyncio.StreamReader,
    a_writer: asyncio.StreamWriter,
    b_reader: asyncio.StreamReader,
    b_writer: asyncio.StreamWriter,
    idle_timeout: float,
) -> None:
    """Copy both ways until both sides have closed, or nothing moved for ``idle_timeout``."""
    last = [time.monotonic()]

    async def pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> bool:
        """Copy one way; True when the source closed cleanly (the sink is half-closed)."""
        try:
            while True:
                try:
                    data = await asyncio.wait_for(source.read(CHUNK_BYTES), idle_timeout)
                except TimeoutError:
                    if time.monotonic() - last[0] >= idle_timeout:
                        return False
                    continue
                if not data:
                    if sink.can_write_eof():
                        sink.write_eof()
                    return True
                last[0] = time.monotonic()
                sink.write(data)
                await sink.drain()  # back-pressure: at most a chunk and the kernel's buffers
        except (ConnectionError, OSError):
            return False

    pumps = {
        asyncio.create_task(pump(a_reader, b_writer)),
        asyncio.create_task(pump(b_reader, a_writer)),
    }
    try:
        done, pending = await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        if pending and all(task.result() for task in done):
            await asyncio.wait(pending)  # one side finished: let the other finish too
    finally:
        for task in pumps:
            task.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)
        b_writer.close()
        with contextlib.suppress(Exception):
            await b_writer.wait_closed()
