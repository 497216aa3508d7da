"""The control plane's listeners: limits and timeouts enforced before TLS and HTTP get a byte.

aiohttp's ``TCPSite``/``UnixSite`` hand a connection to the server only after its TLS
handshake, so a peer that opens thousands of connections and never handshakes is invisible
until it has used up the file limit. Here a plain asyncio listener accepts, names the peer
(the connecting uid from ``SO_PEERCRED`` on a Unix socket, the IP address on TCP) and counts
it against the per-peer and total limits: over either, the connection is closed at once,
counted, and logged (through the rate-limited handlers). Only an admitted connection is given
(unless its listener serves plain HTTP, as the host service's local socket does) to asyncio's
own TLS (``loop.start_tls`` with ``ssl_handshake_timeout``) and then to aiohttp's
HTTP protocol, through :class:`GuardedConnection`, which forwards every protocol callback and
adds the one timer aiohttp lacks: a request head must be complete within
``request_head_timeout`` of its first byte (slowloris). Idle keep-alive is aiohttp's
``keepalive_timeout``; request bodies are timed by the handlers; the memory a connection can
hold is bounded by aiohttp's line, field, header and body limits and freed when it closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import socket
import ssl
import struct
from collections.abc import Callable
from typing import Literal

from agentcell.controlplane.limits import ConnectionTable
from agentcell.controlplane.memory import release_free_memory
from agentcell.controlplane.settings import ServerLimits
from agentcell.controlplane.telemetry import Telemetry

__all__ = ["GuardedConnection", "Listeners", "connection_limit", "peer_of"]

log = logging.getLogger("agentcell.controlplane")

Listener = Literal["tcp", "unix"]
# File descriptors kept back from the connection limit for the database, logs, threads and
# the listening sockets themselves, so accept() never meets EMFILE.
FD_RESERVE = 128
_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid
# After this many connections have closed, their freed memory is handed back to the system
# (a second later, so a burst of closes costs one trim).
TRIM_AFTER_CLOSES = 32
TRIM_DELAY_S = 1.0


def peer_of(transport: asyncio.BaseTransport | None) -> str:
    """Who is at the other end: ``uid N`` on a Unix socket (the kernel's word, SO_PEERCRED),
    the IP address on TCP, ``unknown`` when the transport cannot say."""
    if transport is None:
        return "unknown"
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family == socket.AF_UNIX:
        try:
            _pid, uid, _gid = _UCRED.unpack(
                sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
            )
        except OSError:
            return "unknown"
        return f"uid {uid}"
    peer = transport.get_extra_info("peername")
    if isinstance(peer, tuple) and peer:
        return str(peer[0])
    return "unknown"


def connection_limit(limits: ServerLimits) -> int:
    """The total connection limit, lowered to fit the process's file limit."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return limits.max_connections
    return max(1, min(limits.max_connections, soft - FD_RESERVE))


class GuardedConnection(asyncio.Protocol):
    """One accepted connection: admitted or refused, then TLS, then aiohttp's protocol.

    asyncio calls ``connection_made`` with the raw transport; after a successful handshake the
    same object is the TLS transport's protocol and forwards to aiohttp's. ``connection_lost``
    comes exactly once either way and releases the connection's place.
    """

    def __init__(self, listeners: Listeners, listener: Listener, *, tls: bool = True) -> None:
        self._listeners = listeners
        self._listener: Listener = listener
        self._use_tls = tls
        self._loop = asyncio.get_running_loop()
        self.peer = "unknown"
        self._admitted = False
        self._lost = False
        self._raw: asyncio.Transport | None = None
        self._served: asyncio.Transport | None = None
        """The transport aiohttp talks over: the TLS one, or the raw one without TLS."""
        self._http: asyncio.Protocol | None = None
        self._handshake: asyncio.Task[None] | None = None
        self._head_timer: asyncio.TimerHandle | None = None
        self._in_request = False
        # asyncio's TLS may deliver the first bytes before start_tls() returns (a TLS 1.3 client
        # sends its request right behind the handshake); they wait here for aiohttp's protocol.
        self._early: list[bytes] = []

    # -- the raw connection ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Admit or refuse the new connection; admitted ones start their TLS handshake."""
        assert isinstance(transport, asyncio.Transport)
        listeners = self._listeners
        self.peer = peer_of(transport)
        verdict = listeners.table.admit(self.peer)
        if verdict != "ok":
            listeners.telemetry.connections_refused.labels(
                listener=self._listener, reason=verdict
            ).inc()
            limit = (
                listeners.table.max_per_peer
                if verdict == "peer_limit"
                else listeners.table.max_total
            )
            log.warning(
                "refused a connection from %s on the %s listener: %s of %d reached",
                self.peer,
                self._listener,
                verdict.replace("_", " "),
                limit,
            )
            transport.abort()
            return
        self._admitted = True
        self._raw = transport
        listeners.opened(self)
        if self._use_tls:
            self._handshake = self._loop.create_task(self._start_tls(transport))
        else:
            self._serve(transport)

    async def _start_tls(self, raw: asyncio.Transport) -> None:
        limits = self._listeners.limits
        try:
            tls = await self._loop.start_tls(
                raw,
                self,
                self._listeners.tls,
                server_side=True,
                ssl_handshake_timeout=limits.tls_handshake_timeout,
                ssl_shutdown_timeout=limits.tls_handshake_timeout,
            )
        except OSError as exc:  # ssl.SSLError is one: a refused certificate, a reset, ...
            # The exception's traceback holds start_tls()'s frame, which holds the future that
            # holds the exception: a cycle that keeps the TLS state (a 256 KiB buffer) alive
            # until the cyclic GC runs, which a flood of failed handshakes outpaces.
            exc.__traceback__ = None
            if isinstance(exc, ConnectionAbortedError):
                # What asyncio's SSL protocol raises when ssl_handshake_timeout expires.
                self._listeners.telemetry.connection_timeouts.labels(phase="tls_handshake").inc()
                log.info(
                    "closed a connection from %s: no TLS handshake within %g s",
                    self.peer,
                    limits.tls_handshake_timeout,
                )
            else:
                log.debug("TLS handshake with %s failed: %s", self.peer, exc)
            return
        if tls is None or self._lost:
            return
        self._serve(tls)

    def _serve(self, transport: asyncio.Transport) -> None:
        """Hand the connection to aiohttp, with what arrived meanwhile."""
        self._served = transport
        self._http = self._listeners.http()
        self._http.connection_made(transport)
        self._arm_head_timer()
        early, self._early = self._early, []
        for data in early:
            self.data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        """The connection closed, in whatever phase: release its place, tell aiohttp."""
        if self._lost:
            return
        self._lost = True
        self._cancel_head_timer()
        if self._admitted:
            self._listeners.closed(self)
        if self._http is not None:
            self._http.connection_lost(exc)

    # -- forwarded to aiohttp after the handshake ---------------------------------------------

    def data_received(self, data: bytes) -> None:
        """Bytes of a request: start the head timer if a new request begins, then forward."""
        if self._http is None:
            if not self._lost:
                self._early.append(data)
            return
        if not self._in_request and self._head_timer is None:
            self._arm_head_timer()
        self._http.data_received(data)

    def eof_received(self) -> bool | None:
        """The peer finished sending; aiohttp decides whether to keep the transport open."""
        return self._http.eof_received() if self._http is not None else None

    def pause_writing(self) -> None:
        """Flow control: the transport's write buffer is full."""
        if self._http is not None:
            self._http.pause_writing()

    def resume_writing(self) -> None:
        """Flow control: the transport's write buffer drained."""
        if self._http is not None:
            self._http.resume_writing()

    # -- the request head timer ---------------------------------------------------------------

    def request_started(self) -> None:
        """aiohttp has parsed a whole request head (called by the app's middleware)."""
        self._in_request = True
        self._cancel_head_timer()

    def request_finished(self) -> None:
        """The handler answered; the next head is timed from its first byte."""
        self._in_request = False

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self._head_timer = self._loop.call_later(
            self._listeners.limits.request_head_timeout, self._head_expired
        )

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_expired(self) -> None:
        self._head_timer = None
        if self._in_request or self._lost or self._served is None:
            return
        self._listeners.telemetry.connection_timeouts.labels(phase="request_head").inc()
        log.info(
            "closed a connection from %s: no complete request head within %g s",
            self.peer,
            self._listeners.limits.request_head_timeout,
        )
        self._served.abort()

    def abort(self) -> None:
        """Close now, whatever the phase (at shutdown)."""
        if self._handshake is not None and not self._handshake.done():
            self._handshake.cancel()
        transport = self._served or self._raw
        if transport is not None and not self._lost:
            transport.abort()


class Listeners:
    """The TCP and Unix-socket listeners of one server, and the connections they hold."""

    def __init__(
        self,
        *,
        http: Callable[[], asyncio.Protocol],
        tls: ssl.SSLContext,
        limits: ServerLimits,
        telemetry: Telemetry,
    ) -> None:
        self.http = http
        self.tls = tls
        self.limits = limits
        self.telemetry = telemetry
        self.table = ConnectionTable(
            max_total=connection_limit(limits), max_per_peer=limits.max_connections_per_peer
        )
        if self.table.max_total < limits.max_connections:
            log.warning(
                "connection limit lowered from %d to %d to fit the file limit; raise "
                "`ulimit -n` to allow more",
                limits.max_connections,
                self.table.max_total,
            )
        self._servers: list[asyncio.Server] = []
        self._connections: set[GuardedConnection] = set()
        self._closed_since_trim = 0
        self._trim: asyncio.TimerHandle | None = None

    async def listen_tcp(self, host: str, port: int, *, backlog: int = 1024) -> None:
        """Accept TLS connections on ``host:port``.

        Raises:
            OSError: the address cannot be bound.
        """
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: GuardedConnection(self, "tcp"), host, port, backlog=backlog
        )
        self._servers.append(server)

    async def listen_unix(self, path: str, *, backlog: int = 1024, tls: bool = True) -> None:
        """Accept connections on the Unix socket at ``path``: TLS ones, or plain HTTP with
        ``tls=False`` (the peer is then known by its uid alone, and the same limits and head
        timeout hold).

        Raises:
            OSError: the socket cannot be made.
        """
        loop = asyncio.get_running_loop()
        server = await loop.create_unix_server(
            lambda: GuardedConnection(self, "unix", tls=tls), path, backlog=backlog
        )
        self._servers.append(server)

    def opened(self, connection: GuardedConnection) -> None:
        """Track an admitted connection."""
        self._connections.add(connection)
        self.telemetry.connections_open.labels(listener=connection._listener).inc()

    def closed(self, connection: GuardedConnection) -> None:
        """Forget a closed connection and free its place."""
        self._connections.discard(connection)
        self.table.release(connection.peer)
        self.telemetry.connections_open.labels(listener=connection._listener).dec()
        self._closed_since_trim += 1
        if self._closed_since_trim >= TRIM_AFTER_CLOSES and self._trim is None:
            self._trim = asyncio.get_running_loop().call_later(TRIM_DELAY_S, self._release)

    def _release(self) -> None:
        self._trim = None
        self._closed_since_trim = 0
        release_free_memory()

    def stop_accepting(self) -> None:
        """Close the listening sockets; open connections stay."""
        for server in self._servers:
            server.close()

    async def close(self) -> None:
        """Close every connection still open (after aiohttp has finished its own) and wait
        for the listeners to be gone."""
        self.stop_accepting()
        if self._trim is not None:
            self._trim.cancel()
            self._trim = None
        for connection in list(self._connections):
            connection.abort()
        for server in self._servers:
            with contextlib.suppress(OSError):
                await server.wait_closed()
        self._servers.clear()
