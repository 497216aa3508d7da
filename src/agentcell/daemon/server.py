"""Starting the host service: its state, TLS, listeners, the engine, and a clean stop.

Everything the service keeps is under ``<state>/daemon`` (``<state>`` is
:func:`agentcell.cell.paths.state_dir`), mode 0700:

- ``tls/ca.key``, ``tls/ca.pem``: the service's own CA, made at first start (EC P-256, by
  ``cryptography``); clients verify the service against ``ca.pem``.
- ``tls/server.key``, ``tls/server.pem``: the server certificate, issued by that CA at every
  start for the names the service answers on (``localhost``, loopback and the listen host).
- ``admin.token`` (0600), made at first start; ``daemon.db`` (:mod:`agentcell.daemon.store`).
- ``daemon.lock``: an exclusive ``flock`` held for the service's whole life; a second service
  on the same state directory exits 3 naming the first, before it touches the socket or the
  engine. The kernel drops it when the holder dies, even by SIGKILL.
- ``daemon.json``: ``{"pid", "url", "socket", "ca"}`` while it runs, removed at stop.

It listens on TCP with TLS and on ``<run>/daemon.sock`` (0660, plain HTTP, for local
clients; the bearer token still decides who is calling), both through the control plane's
guarded listeners: connection limits per peer (IP address, or uid from ``SO_PEERCRED``) and
in all, handshake and request-head timeouts.

SIGTERM/SIGINT stop it: the listeners close, in-flight requests get a moment, the engine's
background work stops (:meth:`SandboxEngine.close`), and live sandboxes keep running for the
next start to adopt.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import fcntl
import json
import logging
import os
import signal
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from agentcell.cell.paths import run_dir, state_dir
from agentcell.daemon.app import CellOperations, build_app
from agentcell.daemon.contract import SandboxEngine
from agentcell.daemon.store import DaemonStore
from agentcell.daemon.tokens import TokenAuthority, ensure_admin_token, read_admin_token
from agentcell.errors import HostError
from agentcell.identity.ca import CertificateAuthority, ca_certificate
from agentcell.identity.files import CAFiles, read_text, write_file

if TYPE_CHECKING:
    from agentcell.controlplane.client import AdminClient

__all__ = [
    "DEFAULT_LISTEN",
    "DaemonLock",
    "DaemonPaths",
    "DaemonSettings",
    "DaemonTLSFiles",
    "EngineFactory",
    "RunningDaemon",
    "ensure_tls",
    "read_running_daemon",
    "sandbox_manager",
    "serve",
    "start_network_services",
]

log = logging.getLogger("agentcell.daemon")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8766
DEFAULT_LISTEN = f"{DEFAULT_HOST}:{DEFAULT_PORT}"
SHUTDOWN_TIMEOUT_S = 10.0
LINGERING_S = 2.0
SERVER_NAMES = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class DaemonTLSFiles(CAFiles):
    """The service's CA and server files, all in ``<state>/daemon/tls`` (``state_dir`` here
    is the daemon's directory)."""

    @property
    def ca_key(self) -> Path:
        return self.state_dir / "tls" / "ca.key"

    @property
    def ca_cert(self) -> Path:
        return self.state_dir / "tls" / "ca.pem"

    @property
    def server_key(self) -> Path:
        return self.state_dir / "tls" / "server.key"

    @property
    def server_cert(self) -> Path:
        return self.state_dir / "tls" / "server.pem"


@dataclass(frozen=True, kw_only=True)
class DaemonPaths:
    """Where the service keeps its state and its socket."""

    directory: Path
    run_dir: Path

    @classmethod
    def from_environ(cls, environ: dict[str, str] | None = None) -> DaemonPaths:
        """``<state>/daemon`` and the run directory, as ``AGENTCELL_HOME`` places them."""
        return cls(directory=state_dir(environ) / "daemon", run_dir=run_dir(environ))

    @property
    def tls(self) -> DaemonTLSFiles:
        return DaemonTLSFiles(self.directory)

    @property
    def socket(self) -> Path:
        return self.run_dir / "daemon.sock"

    @property
    def record(self) -> Path:
        return self.directory / "daemon.json"

    @property
    def lock(self) -> Path:
        return self.directory / "daemon.lock"

    @property
    def templates(self) -> Path:
        """The default templates directory (used when it exists and none is given)."""
        return self.directory / "templates"


EngineFactory = Callable[["DaemonSettings", DaemonStore], Awaitable[SandboxEngine]]
"""Makes the engine once the store is open (tests can pass their own)."""


@dataclass(frozen=True, kw_only=True)
class DaemonSettings:
    """Everything ``agentcell daemon serve`` needs."""

    paths: DaemonPaths
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    templates: tuple[Path, ...] = ()
    network_services: bool = True
    socket: bool = True
    extra_names: tuple[str, ...] = field(default_factory=tuple)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"https://{host}:{self.port}"


# -- TLS ---------------------------------------------------------------------------------


def _new_ca(files: DaemonTLSFiles) -> CertificateAuthority:
    now = dt.datetime.now(dt.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = ca_certificate(key, "agentcell host service CA", now=now)
    write_file(
        files.ca_key,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        mode=0o600,
    )
    write_file(files.ca_cert, certificate.public_bytes(serialization.Encoding.PEM), mode=0o644)
    return CertificateAuthority(
        key=key, certificate=certificate, trust_domain="daemon.agentcell", files=files
    )


def _load_ca(files: DaemonTLSFiles) -> CertificateAuthority:
    key_pem = read_text(files.ca_key, what="service CA key").encode()
    cert_pem = read_text(files.ca_cert, what="service CA certificate").encode()
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
        certificate = x509.load_pem_x509_certificate(cert_pem)
    except ValueError as exc:
        raise HostError(
            f"the service's CA files in {files.ca_key.parent} are damaged: {exc}",
            fix="remove that directory to make a new CA (clients must then take the new ca.pem)",
        ) from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise HostError(f"the service's CA key {files.ca_key} is not an EC key")
    return CertificateAuthority(
        key=key, certificate=certificate, trust_domain="daemon.agentcell", files=files
    )


def ensure_tls(paths: DaemonPaths, names: Sequence[str]) -> ssl.SSLContext:
    """The CA (made at first start), a fresh server certificate for ``names``, and the TLS
    context that serves it.

    Raises:
        HostError, IdentityError: a file cannot be read or written, or is damaged.
    """
    files = paths.tls
    files.ca_key.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    ca = _load_ca(files) if files.ca_key.exists() else _new_ca(files)
    wanted = list(dict.fromkeys([*SERVER_NAMES, *names]))
    server, server_key = ca.issue_server(wanted)
    write_file(files.server_key, server_key, mode=0o600)
    write_file(files.server_cert, server.pem.encode("ascii"), mode=0o644)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_RENEGOTIATION
    try:
        context.load_cert_chain(files.server_cert, files.server_key)
    except (OSError, ssl.SSLError) as exc:
        raise HostError(f"cannot load the service's TLS files: {exc}") from exc
    return context


def _listen_names(host: str) -> list[str]:
    """What the server certificate must name for clients of ``host``: the host itself, or
    this machine's name when it listens on every address."""
    if host in ("0.0.0.0", "::"):  # noqa: S104 - naming what the certificate covers
        return [os.uname().nodename]
    return [host]


# -- one service per state directory -----------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class RunningDaemon:
    """What a running service says about itself in ``daemon.json``."""

    pid: int
    url: str
    socket: str | None
    ca: str


def _lock_is_held(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    except OSError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False


def read_running_daemon(paths: DaemonPaths) -> RunningDaemon | None:
    """The record of the service running on this state directory, or None when none runs
    (a record left by a killed service does not count: nobody holds the lock)."""
    if not _lock_is_held(paths.lock):
        return None
    try:
        record = json.loads(paths.record.read_text(encoding="utf-8"))
        return RunningDaemon(
            pid=int(record["pid"]),
            url=str(record["url"]),
            socket=str(record["socket"]) if record.get("socket") else None,
            ca=str(record["ca"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


class DaemonLock:
    """``daemon.lock``, held exclusively from ``__enter__`` to ``__exit__``; the record
    ``daemon.json`` is published while it is held and removed on release."""

    def __init__(self, paths: DaemonPaths) -> None:
        self.paths = paths
        self._fd: int | None = None

    def __enter__(self) -> DaemonLock:
        """Take the lock.

        Raises:
            HostError: (exit 3) another service holds it, or it cannot be opened.
        """
        path = self.paths.lock
        try:
            self.paths.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise HostError(
                f"cannot open the service's lock {path}: {exc.strerror}",
                fix="run as the state directory's owner, or set AGENTCELL_HOME",
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            os.close(fd)
            running = read_running_daemon(self.paths)
            if running is not None:
                where = f"pid {running.pid}, {running.url}"
            else:
                where = f"pid {text}, still starting" if text.isdigit() else "pid unknown"
            raise HostError(
                f"another agentcell host service ({where}) already serves "
                f"{self.paths.directory}; this one is not started",
                fix="use the running one, stop it first, or give this one its own AGENTCELL_HOME",
            ) from None
        except OSError as exc:
            os.close(fd)
            raise HostError(f"cannot lock {path}: {exc.strerror}") from exc
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def publish(self, *, url: str, socket: str | None, ca: str) -> None:
        """Write ``daemon.json`` atomically.

        Raises:
            IdentityError: it cannot be written.
        """
        record = {"pid": os.getpid(), "url": url, "socket": socket, "ca": ca}
        write_file(self.paths.record, (json.dumps(record) + "\n").encode(), mode=0o644)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError, ValueError, KeyError):
            if json.loads(self.paths.record.read_text())["pid"] == os.getpid():
                self.paths.record.unlink()
        os.close(self._fd)
        self._fd = None


# -- the engine and the network services --------------------------------------------------


def _tenant_directory() -> AdminClient | None:
    """The control plane's tenants when one is configured for this host, else None."""
    from agentcell.controlplane.instance import read_running_server
    from agentcell.controlplane.settings import ClientSettings

    settings = ClientSettings.from_environ()
    if not os.environ.get("AGENTCELL_CONTROLPLANE_URL") and (
        read_running_server(settings.paths.state_dir) is None
    ):
        return None
    from agentcell.controlplane.client import AdminClient

    return AdminClient(settings)


async def sandbox_manager(settings: DaemonSettings, store: DaemonStore) -> SandboxEngine:
    """The real engine: :class:`~agentcell.daemon.sandboxes.SandboxManager` on this host's
    Docker Engine, its templates, the store's sandbox records and the control plane's
    tenants (when one is configured).

    Raises:
        EngineUnavailable: the engine does not answer.
        SpecError: a template file is invalid.
    """
    from agentcell.daemon.sandboxes import SandboxManager
    from agentcell.runtime.docker.backend import DockerBackend
    from agentcell.spec.template import load_templates

    backend = await asyncio.to_thread(DockerBackend.connect)
    templates = load_templates(settings.templates) if settings.templates else []
    return SandboxManager(
        backend=backend,
        templates=templates,
        records=store.sandboxes,
        directory=await asyncio.to_thread(_tenant_directory),
    )


def _cell_operations() -> CellOperations:
    from agentcell.daemon.cells import DockerCellOperations
    from agentcell.runtime.docker.backend import DockerBackend

    return DockerCellOperations(DockerBackend.connect(), directory=_tenant_directory())


async def start_network_services(directory: AdminClient | None) -> asyncio.Task[None]:
    """Run the tenant networks' resolvers and egress gateways
    (:class:`agentcell.netsvc.host.NetworkHost`, following the engine's tenant networks and
    ``directory``'s tenant documents) as a background task of this loop.

    Raises:
        EngineUnavailable: the engine does not answer.
    """
    from agentcell.netsvc.host import NetworkHost
    from agentcell.runtime.docker.netinfo import EngineNetworks

    if directory is None:
        log.warning("no control plane is configured: every tenant network gets egress none")
    networks = await asyncio.to_thread(EngineNetworks)
    host = NetworkHost(networks=networks, directory=directory)
    return asyncio.create_task(host.run(), name="network-services")


# -- serving -----------------------------------------------------------------------------


async def serve(
    settings: DaemonSettings,
    *,
    engine_factory: EngineFactory = sandbox_manager,
    on_ready: Callable[[list[str]], None] = lambda _addresses: None,
    stop: asyncio.Event | None = None,
) -> None:
    """Run the service until SIGTERM/SIGINT (or ``stop``), holding the state directory's
    lock throughout.

    Raises:
        HostError: another service serves this state directory, a listener cannot be
            opened, or the state cannot be made.
        ServiceStorageError: the database cannot be opened.
        EngineUnavailable: the engine does not answer.
    """
    paths = settings.paths
    with DaemonLock(paths) as lock:
        tls = ensure_tls(paths, [*_listen_names(settings.host), *settings.extra_names])
        log.info("admin token in %s", ensure_admin_token(paths.directory))
        store = DaemonStore.open(paths.directory)
        try:
            tokens = TokenAuthority(store.tokens, admin_token=read_admin_token(paths.directory))
            engine = await engine_factory(settings, store)
            await engine.start()
            try:
                await _serve_engine(
                    settings, engine, tokens, lock, tls, on_ready=on_ready, stop=stop
                )
            finally:
                await engine.close()
        finally:
            store.close()


async def _serve_engine(
    settings: DaemonSettings,
    engine: SandboxEngine,
    tokens: TokenAuthority,
    lock: DaemonLock,
    tls: ssl.SSLContext,
    *,
    on_ready: Callable[[list[str]], None],
    stop: asyncio.Event | None,
) -> None:
    from agentcell.controlplane.listeners import Listeners
    from agentcell.controlplane.settings import ServerLimits
    from agentcell.controlplane.telemetry import Telemetry

    paths = settings.paths
    limits = ServerLimits.from_environ()
    cells = None
    with contextlib.suppress(HostError):  # no engine: the admin routes answer 503
        cells = await asyncio.to_thread(_cell_operations)
    app = build_app(
        engine,
        tokens,
        cells=cells,
        max_body_bytes=limits.max_body_bytes,
        body_timeout_s=limits.request_body_timeout,
    )
    runner = web.AppRunner(
        app,
        access_log=None,
        keepalive_timeout=limits.idle_timeout,
        max_line_size=limits.max_line_size,
        max_field_size=limits.max_field_size,
        max_headers=limits.max_headers,
        lingering_time=LINGERING_S,
        shutdown_timeout=SHUTDOWN_TIMEOUT_S,
    )
    await runner.setup()
    assert runner.server is not None
    listeners = Listeners(http=runner.server, tls=tls, limits=limits, telemetry=Telemetry())
    addresses: list[str] = []
    network: asyncio.Task[None] | None = None
    try:
        try:
            await listeners.listen_tcp(settings.host, settings.port, backlog=1024)
            addresses.append(settings.url)
            if settings.socket:
                paths.run_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
                with contextlib.suppress(FileNotFoundError):
                    paths.socket.unlink()  # ours: the lock says no other service runs
                await listeners.listen_unix(str(paths.socket), backlog=1024, tls=False)
                os.chmod(paths.socket, 0o660)
                addresses.append(f"unix://{paths.socket}")
        except OSError as exc:
            raise HostError(
                f"cannot listen: {exc.strerror or exc}",
                fix="pick another --listen address, or stop what holds it",
            ) from exc
        lock.publish(
            url=settings.url,
            socket=str(paths.socket) if settings.socket else None,
            ca=str(paths.tls.ca_cert),
        )
        if settings.network_services:
            network = await start_network_services(await asyncio.to_thread(_tenant_directory))
        log.info("host service listening on %s", ", ".join(addresses))
        on_ready(addresses)
        done = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, done.set)
        waiting = asyncio.create_task(done.wait())
        watched: set[asyncio.Task[None] | asyncio.Task[bool]] = {waiting}
        if network is not None:
            watched.add(network)
        await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
        if network is not None and network.done() and not network.cancelled():
            failure = network.exception()
            if failure is not None:
                log.error("the tenant network services stopped: %s", failure)
            await done.wait()
        waiting.cancel()
        log.info("host service stopping; sandboxes keep running")
    finally:
        if network is not None:
            network.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await network
        listeners.stop_accepting()
        await runner.cleanup()
        await listeners.close()
        if settings.socket:
            with contextlib.suppress(OSError):
                paths.socket.unlink()
