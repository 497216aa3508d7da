"""Where the control plane keeps its state and how it is reached, from an injectable environ.

Two directories matter. The *state* directory (default ``/var/lib/agentcell/controlplane``)
holds secrets and data: the CA, the server key, the admin token and the SQLite database. The
*run* directory (default ``/run/agentcell``, a tmpfs) holds what cells may see: the agents'
socket directory and one identity directory per cell with its join token and the CA bundle.
Cells get read-only mounts of their own pieces of the run directory and nothing of the state
directory.

``AGENTCELL_HOME`` moves both under one root (``$AGENTCELL_HOME/controlplane`` and
``$AGENTCELL_HOME/run``), which is what tests and a non-root user want.

What a caller may cost the server is bounded by :class:`ServerLimits`; every bound has a default
and an ``AGENTCELL_*`` variable (durations such as 500ms, 10s, 2m):

=====================================  =========  ==============================================
variable                               default    bounds
=====================================  =========  ==============================================
``AGENTCELL_MAX_CONNECTIONS``          1024       open connections in all (lowered to the file
                                                  limit minus a reserve when that is smaller)
``AGENTCELL_MAX_CONNECTIONS_PER_PEER`` 64         open connections of one peer: the connecting
                                                  uid on the agents' socket (SO_PEERCRED), the
                                                  IP address on TCP
``AGENTCELL_TLS_HANDSHAKE_TIMEOUT``    10s        from accept to a finished TLS handshake
``AGENTCELL_REQUEST_HEAD_TIMEOUT``     10s        from a request's first byte (or the handshake)
                                                  to its complete head
``AGENTCELL_REQUEST_BODY_TIMEOUT``     30s        reading one request body
``AGENTCELL_IDLE_TIMEOUT``             60s        an idle kept-alive connection
``AGENTCELL_ENROL_BURST``              10         enrolment (and renewal) attempts of one peer
``AGENTCELL_ENROL_RATE``               30         ... refilled at this many per minute
``AGENTCELL_ENROL_REFUSAL_WINDOW``     60s        refused enrolments are recorded as one event
                                                  per (tenant, agent, peer) per window
``AGENTCELL_LOG_RATE``                 5          lines per second of one message; the rest are
                                                  counted and summarised
=====================================  =========  ==============================================

Over a connection limit a connection is closed at once, before any TLS work; over the enrolment
rate a request is answered 429 without touching the database.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from agentcell.cell.paths import SYSTEM_RUN_DIR, SYSTEM_STATE_DIR
from agentcell.controlplane.instance import read_running_server
from agentcell.errors import Error
from agentcell.identity.files import CAFiles
from agentcell.spec.units import parse_duration_ns

__all__ = [
    "DEFAULT_PORT",
    "ClientSettings",
    "ControlPlanePaths",
    "ServerLimits",
    "ServerSettings",
    "parse_listen",
]

DEFAULT_STATE_DIR = SYSTEM_STATE_DIR
DEFAULT_RUN_DIR = SYSTEM_RUN_DIR
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8443
DEFAULT_TRUST_DOMAIN = "agentcell.local"


class SettingsError(Error):
    """A control-plane setting in the environment or on the command line is malformed."""

    exit_code = 2


@dataclass(frozen=True)
class ControlPlanePaths:
    """The files and directories of one control plane."""

    state_dir: Path
    run_dir: Path

    @classmethod
    def from_environ(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        state_dir: Path | None = None,
        run_dir: Path | None = None,
    ) -> ControlPlanePaths:
        """Paths from explicit values, else ``AGENTCELL_HOME``, else the system defaults."""
        env = os.environ if environ is None else environ
        home = env.get("AGENTCELL_HOME")
        default_state = Path(home) / "controlplane" if home else DEFAULT_STATE_DIR
        default_run = Path(home) / "run" if home else DEFAULT_RUN_DIR
        return cls(state_dir=state_dir or default_state, run_dir=run_dir or default_run)

    @property
    def admin_token(self) -> Path:
        """The admin API token (0600), made by ``ca init``."""
        return self.state_dir / "admin.token"

    @property
    def database(self) -> Path:
        """The default SQLite database."""
        return self.state_dir / "controlplane.db"

    @property
    def ca_bundle(self) -> Path:
        """The CA certificate that verifies the server (and that cells get a copy of)."""
        return CAFiles(self.state_dir).ca_cert

    @property
    def agent_socket_dir(self) -> Path:
        """The directory holding only the agents' socket; cells mount it read-only."""
        return self.run_dir / "controlplane"

    @property
    def agent_socket(self) -> Path:
        """The Unix socket agents reach the control plane through (TLS runs over it)."""
        return self.agent_socket_dir / "agent.sock"

    def cell_identity_dir(self, tenant: str, agent: str) -> Path:
        """The per-cell directory with its join token and CA bundle; mounted read-only."""
        return self.run_dir / "identity" / tenant / agent


def _duration(env: Mapping[str, str], name: str, default: dt.timedelta) -> dt.timedelta:
    raw = env.get(name)
    if not raw:
        return default
    try:
        return dt.timedelta(microseconds=parse_duration_ns(raw) / 1000)
    except ValueError as exc:
        raise SettingsError(f"{name}={raw!r}: {exc}", fix="write e.g. 1h, 10m or 90s") from exc


def _count(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if not raw:
        return default
    if not raw.strip().isdigit() or int(raw) < 1:
        raise SettingsError(f"{name}={raw!r} is not a positive whole number", fix="write e.g. 64")
    return int(raw)


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    value = _duration(env, name, dt.timedelta(seconds=default)).total_seconds()
    if value <= 0:
        raise SettingsError(f"{name} must be longer than 0", fix="write e.g. 10s or 500ms")
    return value


@dataclass(frozen=True, kw_only=True)
class ServerLimits:
    """What one caller, and all callers together, may hold of the server (see the module
    docstring for the variables). Times are in seconds."""

    max_connections: int = 1024
    max_connections_per_peer: int = 64
    tls_handshake_timeout: float = 10.0
    request_head_timeout: float = 10.0
    request_body_timeout: float = 30.0
    idle_timeout: float = 60.0
    enrol_burst: int = 10
    enrol_per_minute: int = 30
    enrol_refusal_window: float = 60.0
    log_lines_per_second: int = 5
    # aiohttp's own bounds on a request head and body: together with the connection limits they
    # bound the memory a connection can hold.
    max_line_size: int = 8190
    max_field_size: int = 8190
    max_headers: int = 64
    max_body_bytes: int = 4 * 1024 * 1024

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> ServerLimits:
        """Limits from ``AGENTCELL_*`` variables, else the defaults.

        Raises:
            SettingsError: a value is malformed or not positive.
        """
        env = os.environ if environ is None else environ
        default = cls()
        return cls(
            max_connections=_count(env, "AGENTCELL_MAX_CONNECTIONS", default.max_connections),
            max_connections_per_peer=_count(
                env, "AGENTCELL_MAX_CONNECTIONS_PER_PEER", default.max_connections_per_peer
            ),
            tls_handshake_timeout=_seconds(
                env, "AGENTCELL_TLS_HANDSHAKE_TIMEOUT", default.tls_handshake_timeout
            ),
            request_head_timeout=_seconds(
                env, "AGENTCELL_REQUEST_HEAD_TIMEOUT", default.request_head_timeout
            ),
            request_body_timeout=_seconds(
                env, "AGENTCELL_REQUEST_BODY_TIMEOUT", default.request_body_timeout
            ),
            idle_timeout=_seconds(env, "AGENTCELL_IDLE_TIMEOUT", default.idle_timeout),
            enrol_burst=_count(env, "AGENTCELL_ENROL_BURST", default.enrol_burst),
            enrol_per_minute=_count(env, "AGENTCELL_ENROL_RATE", default.enrol_per_minute),
            enrol_refusal_window=_seconds(
                env, "AGENTCELL_ENROL_REFUSAL_WINDOW", default.enrol_refusal_window
            ),
            log_lines_per_second=_count(env, "AGENTCELL_LOG_RATE", default.log_lines_per_second),
        )


def parse_listen(value: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:8443`` for IPv6) into its parts.

    Raises:
        SettingsError: it is not host:port with a port from 1 to 65535.
    """
    host, sep, port_text = value.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise SettingsError(
            f"{value!r} is not host:port", fix="write e.g. 127.0.0.1:8443 or [::1]:8443"
        )
    return host, int(port_text)


@dataclass(frozen=True, kw_only=True)
class ServerSettings:
    """Everything ``agentcell server`` needs."""

    paths: ControlPlanePaths
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    agent_socket: bool = True
    database_url: str | None = None
    cert_lifetime: dt.timedelta = dt.timedelta(hours=1)
    token_lifetime: dt.timedelta = dt.timedelta(minutes=10)
    agents_up_window: dt.timedelta = dt.timedelta(seconds=60)
    limits: ServerLimits = ServerLimits()

    @property
    def url(self) -> str:
        """The TCP listener as an https:// URL (IPv6 hosts in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"https://{host}:{self.port}"

    @property
    def effective_database_url(self) -> str:
        """The SQLAlchemy URL: the one given, else SQLite in the state directory."""
        return self.database_url or f"sqlite:///{self.paths.database}"

    @classmethod
    def from_environ(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        state_dir: Path | None = None,
        run_dir: Path | None = None,
        listen: str | None = None,
        database_url: str | None = None,
        agent_socket: bool = True,
    ) -> ServerSettings:
        """Settings from arguments, else ``AGENTCELL_*`` variables, else defaults.

        Variables: ``AGENTCELL_HOME``, ``AGENTCELL_LISTEN`` (host:port),
        ``AGENTCELL_DATABASE_URL``, ``AGENTCELL_CERT_TTL``, ``AGENTCELL_TOKEN_TTL``,
        ``AGENTCELL_AGENTS_UP_WINDOW`` (durations such as 1h, 10m, 90s), and the limits of
        :class:`ServerLimits`.

        Raises:
            SettingsError: a value is malformed.
        """
        env = os.environ if environ is None else environ
        host, port = parse_listen(listen or env.get("AGENTCELL_LISTEN") or f"{DEFAULT_HOST}:8443")
        settings = cls(
            paths=ControlPlanePaths.from_environ(env, state_dir=state_dir, run_dir=run_dir),
            host=host,
            port=port,
            agent_socket=agent_socket,
            database_url=database_url or env.get("AGENTCELL_DATABASE_URL") or None,
            cert_lifetime=_duration(env, "AGENTCELL_CERT_TTL", dt.timedelta(hours=1)),
            token_lifetime=_duration(env, "AGENTCELL_TOKEN_TTL", dt.timedelta(minutes=10)),
            agents_up_window=_duration(env, "AGENTCELL_AGENTS_UP_WINDOW", dt.timedelta(seconds=60)),
            limits=ServerLimits.from_environ(env),
        )
        if settings.cert_lifetime < dt.timedelta(seconds=30):
            raise SettingsError(
                "AGENTCELL_CERT_TTL is below 30s; agents could not renew in time",
                fix="use at least 30s (the default is 1h)",
            )
        return settings


@dataclass(frozen=True, kw_only=True)
class ClientSettings:
    """How the CLI reaches the control plane's admin API."""

    paths: ControlPlanePaths
    url: str
    admin_token: str | None = None

    @classmethod
    def from_environ(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        state_dir: Path | None = None,
        url: str | None = None,
    ) -> ClientSettings:
        """The URL from ``url``, else ``AGENTCELL_CONTROLPLANE_URL``, else the one the server
        on this state directory recorded in ``server.json`` while it runs, else
        https://127.0.0.1:8443; ``AGENTCELL_ADMIN_TOKEN`` (default: read from the state
        directory)."""
        env = os.environ if environ is None else environ
        paths = ControlPlanePaths.from_environ(env, state_dir=state_dir)
        if not url and not env.get("AGENTCELL_CONTROLPLANE_URL"):
            running = read_running_server(paths.state_dir)
            url = running.url if running is not None else None
        return cls(
            paths=paths,
            url=url or env.get("AGENTCELL_CONTROLPLANE_URL") or f"https://{DEFAULT_HOST}:8443",
            admin_token=env.get("AGENTCELL_ADMIN_TOKEN") or None,
        )
