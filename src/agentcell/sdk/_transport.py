"""HTTP to the host service with the standard library: ``http.client`` over TLS (verified
against the service's CA, never unverified) or over its Unix socket.

Connections are kept alive and reused; a stream takes a connection of its own for as long as
it is read. OS, TLS and protocol errors become :class:`DaemonUnavailable` here, and error
answers become the SDK's classes (:func:`error_from_response`).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import ssl
import threading
import urllib.parse
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, NamedTuple

from agentcell import __version__
from agentcell.sdk._discovery import DaemonAddress
from agentcell.sdk._errors import DaemonUnavailable, SandboxError, error_from_response, unreachable

__all__ = ["DROPPED", "Answer", "Transport"]

USER_AGENT = f"agentcell-sdk/{__version__}"
CHUNK = 1024 * 1024
# What a stream that was cut, or went quiet for longer than its idle timeout, raises.
DROPPED = (OSError, http.client.HTTPException)
_CA_FIX = "point AGENTCELL_DAEMON_CA at the service's own CA (<state>/daemon/tls/ca.pem)"


class _OneWrite(http.client.HTTPConnection):
    """Sends a request whose body is in memory in one write, head and body together:
    ``http.client`` writes them apart, which costs the service a second read (a second TLS
    record) before it has the request."""

    _held: list[bytes] | None = None

    def request_at_once(
        self, method: str, target: str, body: bytes | None, headers: Mapping[str, str]
    ) -> None:
        self._held = []
        try:
            self.request(method, target, body=body, headers=headers)
            data = b"".join(self._held)
        finally:
            self._held = None
        self.send(data)

    def send(self, data: Any) -> None:
        if self._held is not None and isinstance(data, bytes | bytearray):
            self._held.append(bytes(data))
            return
        super().send(data)


class _TLSConnection(_OneWrite, http.client.HTTPSConnection):
    """HTTPS with Nagle's algorithm off: a request is written whole, and its answer waited
    for, so nothing is gained by holding a small write back."""

    def connect(self) -> None:
        super().connect()
        if self.sock is not None:
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _UnixConnection(_OneWrite):
    """HTTP over a Unix socket (the service's local socket, no TLS)."""

    def __init__(self, path: str, *, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout, blocksize=CHUNK)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class Answer(NamedTuple):
    status: int
    body: bytes
    headers: Mapping[str, str]

    def json(self) -> object:
        try:
            return json.loads(self.body)
        except ValueError as exc:
            raise SandboxError(
                f"the host service answered HTTP {self.status} with no JSON"
            ) from exc


class Transport:
    """Requests to one service, with a small pool of kept-alive connections."""

    def __init__(self, address: DaemonAddress, *, timeout: float = 30.0) -> None:
        self.address = address
        self.timeout = timeout
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()
        self._tls: ssl.SSLContext | None = None
        if not address.is_unix:
            try:
                self._tls = ssl.create_default_context(cafile=address.ca)
            except (OSError, ssl.SSLError) as exc:
                raise DaemonUnavailable(
                    f"cannot load the host service's CA certificate {address.ca}: {exc}",
                    fix="set AGENTCELL_DAEMON_CA to the service's <state>/daemon/tls/ca.pem",
                ) from exc

    # -- connections ------------------------------------------------------------------

    def _connect(self, timeout: float) -> http.client.HTTPConnection:
        if self.address.is_unix:
            return _UnixConnection(self.address.socket_path, timeout=timeout)
        host, port = self.address.host_port
        return _TLSConnection(host, port, context=self._tls, timeout=timeout, blocksize=CHUNK)

    def _take(self) -> tuple[http.client.HTTPConnection, bool]:
        with self._lock:
            if self._idle:
                return self._idle.pop(), True
        return self._connect(self.timeout), False

    def _give_back(self, connection: http.client.HTTPConnection) -> None:
        with self._lock:
            if len(self._idle) < 4:
                self._idle.append(connection)
                return
        connection.close()

    def close(self) -> None:
        """Close the idle connections (streams close their own)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    def _headers(self, extra: Mapping[str, str] | None) -> dict[str, str]:
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if self.address.token:
            headers["Authorization"] = f"Bearer {self.address.token}"
        headers.update(extra or {})
        return headers

    @staticmethod
    def target(path: str, query: Mapping[str, str | int | float] | None = None) -> str:
        return path + ("?" + urllib.parse.urlencode(query) if query else "")

    # -- requests ---------------------------------------------------------------------

    def _send(
        self,
        method: str,
        target: str,
        *,
        body: bytes | Iterable[bytes] | None,
        headers: dict[str, str],
        timeout: float | None,
        fresh: bool = False,
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """Send a request and read the answer's head. A kept-alive connection the service
        has closed meanwhile is replaced once (the request never reached it)."""
        # A body read from a file cannot be sent twice: it goes on a new connection.
        fresh = fresh or (body is not None and not isinstance(body, bytes))
        for attempt in range(2):
            if fresh or attempt:
                connection, reused = self._connect(timeout or self.timeout), False
            else:
                connection, reused = self._take()
            if connection.sock is not None:
                connection.sock.settimeout(timeout or self.timeout)
            else:
                connection.timeout = timeout or self.timeout
            chunked = body is not None and not isinstance(body, bytes)
            try:
                try:
                    if isinstance(connection, _OneWrite) and (
                        body is None or isinstance(body, bytes)
                    ):
                        connection.request_at_once(method, target, body, headers)
                    else:
                        connection.request(
                            method, target, body=body, headers=headers, encode_chunked=chunked
                        )
                except OSError:  # a broken pipe, a reset, or TLS's EOF
                    if not chunked:
                        raise
                    # The service may refuse a streamed body part way (413) and close: its
                    # answer is then waiting to be read.
                return connection, connection.getresponse()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
                connection.close()
                if reused and not chunked:
                    continue
                raise unreachable(self.address.url, exc) from exc
            except ssl.SSLCertVerificationError as exc:
                connection.close()
                raise unreachable(self.address.url, exc, fix=_CA_FIX) from exc
            except DROPPED as exc:
                connection.close()
                raise unreachable(self.address.url, exc) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str | int | float] | None = None,
        json_body: object = None,
        body: bytes | Iterable[bytes] | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> Answer:
        """One request, its whole answer read.

        Raises:
            DaemonUnavailable: the service cannot be reached, or the connection broke.
            Error: the service answered with an error (the class from its status and reason).
        """
        extra = dict(headers or {})
        if json_body is not None:
            body = json.dumps(json_body).encode("utf-8")
            extra["Content-Type"] = "application/json"
        connection, response = self._send(
            method,
            self.target(path, query),
            body=body,
            headers=self._headers(extra),
            timeout=timeout,
        )
        try:
            data = response.read()
        except DROPPED as exc:
            connection.close()
            raise unreachable(self.address.url, exc) from exc
        if response.will_close:
            connection.close()
        else:
            self._give_back(connection)
        answer = Answer(response.status, data, dict(response.headers.items()))
        if answer.status >= 400:
            raise error_from_response(answer.status, data, what_was_asked=f"{method} {path}")
        return answer

    @contextlib.contextmanager
    def stream(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str | int | float] | None = None,
        json_body: object = None,
        idle_timeout: float | None = None,
    ) -> Iterator[http.client.HTTPResponse]:
        """An answer to read as it arrives. Its head may take the request timeout (the
        service answers a command's stream once the command runs); after it, a read that waits
        longer than ``idle_timeout`` raises ``TimeoutError`` (one of :data:`DROPPED`). A
        stream read to its end leaves its connection to be used again (no new TLS handshake
        per command); one left part way, or broken, is closed.

        Raises:
            DaemonUnavailable, Error: as :meth:`request`, before the first byte of the body.
        """
        extra = {"Accept": "application/x-ndjson, application/octet-stream"}
        body = None
        if json_body is not None:
            body = json.dumps(json_body).encode("utf-8")
            extra["Content-Type"] = "application/json"
        connection, response = self._send(
            method,
            self.target(path, query),
            body=body,
            headers=self._headers(extra),
            timeout=None,
        )
        reusable = False
        try:
            if response.status >= 400:
                data = response.read()
                raise error_from_response(response.status, data, what_was_asked=f"{method} {path}")
            if connection.sock is not None and idle_timeout is not None:
                connection.sock.settimeout(idle_timeout)
            yield response
            # Read to the end: what is left of a finished stream is its last chunk's marker.
            try:
                if connection.sock is not None:
                    connection.sock.settimeout(1.0)
                reusable = response.read() == b"" and not response.will_close
            except DROPPED:
                reusable = False
        finally:
            if reusable:
                self._give_back(connection)
            else:
                response.close()  # it may hold the socket on its own ("Connection: close")
                connection.close()
