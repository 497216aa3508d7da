"""Where the host service is and which token to show it.

In order: the arguments a caller passes; else ``AGENTCELL_DAEMON_URL`` (with
``AGENTCELL_DAEMON_CA``) and ``AGENTCELL_TOKEN``; else the running service's record,
``<state>/daemon/daemon.json``, whose Unix socket is preferred to its TLS address. With no token
given, a caller who can read the service's admin token (``<state>/daemon/admin.token``, root on
the host) uses it.

The state directory is derived here from ``AGENTCELL_HOME`` exactly as
:func:`agentcell.cell.paths.state_dir` derives it (the SDK may import only ``errors``); a unit
test holds the two to the same answer.
"""

from __future__ import annotations

import json
import os
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

from agentcell.sdk._errors import DaemonUnavailable, InvalidRequest

__all__ = ["DaemonAddress", "DaemonRecord", "daemon_dir", "discover", "running_daemon"]

SYSTEM_STATE_DIR = Path("/var/lib/agentcell/controlplane")
DEFAULT_PORT = 8766


def _state_dir(environ: Mapping[str, str]) -> Path:
    home = environ.get("AGENTCELL_HOME")
    return Path(home) / "controlplane" if home else SYSTEM_STATE_DIR


def daemon_dir(environ: Mapping[str, str] | None = None) -> Path:
    """The service's own directory: ``<state>/daemon``."""
    return _state_dir(os.environ if environ is None else environ) / "daemon"


class DaemonRecord(NamedTuple):
    """What a running service wrote about itself in ``daemon.json``."""

    pid: int
    url: str
    socket: str | None
    ca: str | None


class DaemonAddress(NamedTuple):
    """How to reach the service: ``https://HOST:PORT`` (verified against ``ca``, or the
    system's roots when ``ca`` is None) or ``unix:///PATH``."""

    url: str
    ca: str | None = None
    token: str | None = None

    @property
    def is_unix(self) -> bool:
        return self.url.startswith("unix:")

    @property
    def socket_path(self) -> str:
        """The socket's path, for a ``unix:`` address."""
        return urllib.parse.urlsplit(self.url).path

    @property
    def host_port(self) -> tuple[str, int]:
        """Host and port, for an ``https:`` address."""
        parts = urllib.parse.urlsplit(self.url)
        return parts.hostname or "127.0.0.1", parts.port or DEFAULT_PORT

    def __repr__(self) -> str:  # never show the token
        return f"DaemonAddress(url={self.url!r}, ca={self.ca!r})"


def running_daemon(environ: Mapping[str, str] | None = None) -> DaemonRecord | None:
    """The running service's record, or None when there is none (or it is unreadable)."""
    path = daemon_dir(environ) / "daemon.json"
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(document, dict) or not isinstance(document.get("url"), str):
        return None
    socket_path, ca = document.get("socket"), document.get("ca")
    pid = document.get("pid")
    return DaemonRecord(
        pid=pid if isinstance(pid, int) else 0,
        url=document["url"],
        socket=socket_path if isinstance(socket_path, str) else None,
        ca=ca if isinstance(ca, str) else None,
    )


def _checked_url(url: str) -> str:
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme not in ("https", "unix"):
        raise InvalidRequest(
            f"{url!r} is neither an https:// nor a unix:// address",
            fix="use https://HOST:PORT (TLS) or unix:///PATH/daemon.sock",
        )
    return url.rstrip("/")


def _admin_token(environ: Mapping[str, str]) -> str | None:
    try:
        return (daemon_dir(environ) / "admin.token").read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def discover(
    *,
    url: str | None = None,
    token: str | None = None,
    ca: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> DaemonAddress:
    """The address and token to use (see the module's docstring for the order).

    Raises:
        DaemonUnavailable: nothing names a service and no service's record exists.
        InvalidRequest: a URL is neither ``https://`` nor ``unix://``.
    """
    env = os.environ if environ is None else environ
    token = token or env.get("AGENTCELL_TOKEN") or None
    url = url or env.get("AGENTCELL_DAEMON_URL") or None
    if url:
        ca = ca or env.get("AGENTCELL_DAEMON_CA") or None
        if ca is None and url.startswith("https:"):
            own = daemon_dir(env) / "tls" / "ca.pem"
            ca = str(own) if own.is_file() else None
        return DaemonAddress(url=_checked_url(url), ca=ca, token=token or _admin_token(env))
    record = running_daemon(env)
    if record is None:
        raise DaemonUnavailable(
            f"no agentcell host service is running here ({daemon_dir(env) / 'daemon.json'} "
            "does not exist)",
            fix="start it with `agentcell daemon serve`, or set AGENTCELL_DAEMON_URL",
        )
    token = token or _admin_token(env)
    if record.socket and Path(record.socket).exists():
        return DaemonAddress(url=f"unix://{record.socket}", token=token)
    return DaemonAddress(url=_checked_url(record.url), ca=ca or record.ca, token=token)
