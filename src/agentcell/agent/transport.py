"""HTTPS to the control plane over a Unix socket or TCP, with one kept-alive connection.

In a cell the control plane is a Unix socket in a read-only mounted directory; TLS runs over it
exactly as over TCP, and the server's certificate is checked against the CA bundle for the
fixed name ``agentcell-controlplane``. Which socket inode the path names can change while the
agent runs (the control plane restarted), so every new connection opens the path again.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import urllib.parse
from pathlib import Path

# Not `typing.TYPE_CHECKING`: importing typing costs the agent about 1 MB; mypy reads the name.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["Answer", "Endpoint", "Transport", "TransportError", "tls_context"]


class TransportError(OSError):
    """The control plane could not be reached or the exchange broke off."""


class Endpoint:
    """Where the control plane listens: ``unix:///path`` or ``https://host:port``."""

    __slots__ = ("host", "port", "unix_path")

    def __init__(self, *, unix_path: str | None, host: str, port: int) -> None:
        self.unix_path = unix_path
        self.host = host
        self.port = port

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Endpoint) and (self.unix_path, self.host, self.port) == (
            other.unix_path,
            other.host,
            other.port,
        )

    def __hash__(self) -> int:
        return hash((self.unix_path, self.host, self.port))

    def __repr__(self) -> str:
        return f"Endpoint(unix_path={self.unix_path!r}, host={self.host!r}, port={self.port})"

    @classmethod
    def parse(cls, url: str) -> Endpoint:
        """Parse an endpoint URL.

        Raises:
            ValueError: it is neither unix:// nor https://.
        """
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme == "unix" and parsed.path:
            return cls(unix_path=parsed.path, host="", port=0)
        if parsed.scheme == "https" and parsed.hostname:
            return cls(unix_path=None, host=parsed.hostname, port=parsed.port or 443)
        raise ValueError(f"{url!r}: use unix:///path/agent.sock or https://host:port")


class Answer:
    """An HTTP answer with its decoded JSON body (an empty dict when there is none) and its
    ``Retry-After`` header, when it had one."""

    __slots__ = ("body", "retry_after", "status")

    def __init__(
        self, *, status: int, body: dict[str, Any], retry_after: str | None = None
    ) -> None:
        self.status = status
        self.body = body
        self.retry_after = retry_after

    @property
    def reason(self) -> str:
        """The server's machine-readable reason for an error, if any."""
        return str(self.body.get("reason", ""))

    @property
    def error(self) -> str:
        """The server's explanation of an error, if any."""
        return str(self.body.get("error", f"HTTP {self.status}"))


def tls_context(ca_file: Path, cert: tuple[Path, Path] | None) -> ssl.SSLContext:
    """A client context that trusts only the control plane's CA, presenting ``cert``.

    Raises:
        ssl.SSLError, OSError: the files cannot be loaded.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_verify_locations(cafile=str(ca_file))
    if cert is not None:
        context.load_cert_chain(str(cert[0]), str(cert[1]))
    return context


class _UnixHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, path: str, server_name: str, context: ssl.SSLContext, timeout: float):
        super().__init__(server_name, context=context, timeout=timeout)
        self._unix_path = path
        self._tls = context

    def connect(self) -> None:
        raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            raw.settimeout(self.timeout)
            raw.connect(self._unix_path)
            self.sock = self._tls.wrap_socket(raw, server_hostname=self.host)
        except BaseException:
            raw.close()
            raise


class Transport:
    """JSON requests to the control plane on one reused connection."""

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        server_name: str,
        context: ssl.SSLContext,
        timeout: float = 10.0,
    ) -> None:
        self.endpoint = endpoint
        self.server_name = server_name
        self.context = context
        self.timeout = timeout
        self._connection: http.client.HTTPSConnection | None = None

    def _connect(self) -> http.client.HTTPSConnection:
        if self._connection is None:
            if self.endpoint.unix_path is not None:
                self._connection = _UnixHTTPSConnection(
                    self.endpoint.unix_path, self.server_name, self.context, self.timeout
                )
            else:
                self._connection = http.client.HTTPSConnection(
                    self.endpoint.host,
                    self.endpoint.port,
                    context=self.context,
                    timeout=self.timeout,
                )
        return self._connection

    def close(self) -> None:
        """Drop the connection; the next request opens a new one."""
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def use(self, context: ssl.SSLContext) -> None:
        """Present a new certificate from now on (after renewal)."""
        self.close()
        self.context = context

    def request(self, method: str, path: str, body: bytes | None = None) -> Answer:
        """Send one request. Every agent call is safe to repeat, so a kept-alive connection
        that the server closed meanwhile is retried once on a fresh one.

        Raises:
            TransportError: no answer (unreachable, TLS refused, connection broke).
        """
        headers = {"Content-Type": "application/json"} if body is not None else {}
        for attempt in (1, 2):
            reused = self._connection is not None
            try:
                connection = self._connect()
                connection.request(method, path, body=body, headers=headers)
                response = connection.getresponse()
                raw = response.read()
                retry_after = response.getheader("Retry-After")
                if response.will_close:
                    self.close()
                break
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                if attempt == 1 and reused and not isinstance(exc, ssl.SSLCertVerificationError):
                    continue
                raise TransportError(f"{exc.__class__.__name__}: {exc}") from exc
        try:
            decoded = json.loads(raw) if raw else {}
        except ValueError:
            decoded = {"error": raw[:200].decode("utf-8", "replace")}
        return Answer(
            status=response.status,
            body=decoded if isinstance(decoded, dict) else {},
            retry_after=retry_after,
        )
