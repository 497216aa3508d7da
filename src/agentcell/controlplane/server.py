"""Starting the control plane: state, TLS, listeners, and a clean stop on SIGTERM/SIGINT.

It listens on a TCP address (default 127.0.0.1:8443) for the CLI, Prometheus and agents that
have a network, and on a Unix socket in the run directory for agents in cells, which mount only
that socket's directory. Both listeners speak the same TLS: the client certificate is asked for
(``CERT_OPTIONAL``) and, when sent, verified against the CA by OpenSSL before any handler runs.
Both are :class:`~agentcell.controlplane.listeners.Listeners`, which enforce the connection
limits and timeouts of :class:`~agentcell.controlplane.settings.ServerLimits`, and every log
line goes through a :class:`~agentcell.controlplane.lograte.RepeatFilter`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import ssl
from collections.abc import Callable, Sequence
from pathlib import Path

from aiohttp import web

from agentcell.controlplane.app import build_app
from agentcell.controlplane.instance import ServerLock
from agentcell.controlplane.listeners import Listeners
from agentcell.controlplane.lograte import RepeatFilter, rate_limited_logging
from agentcell.controlplane.memory import keep_mmap_threshold
from agentcell.controlplane.service import ControlPlane
from agentcell.controlplane.settings import ControlPlanePaths, ServerSettings
from agentcell.controlplane.store import Store
from agentcell.controlplane.telemetry import Telemetry
from agentcell.errors import HostError
from agentcell.identity.ca import DEFAULT_SERVER_NAMES, CAFiles, CertificateAuthority, init_ca
from agentcell.identity.errors import IdentityError
from agentcell.identity.files import read_text, write_file

__all__ = ["init_state", "read_admin_token", "serve", "server_tls_context"]

log = logging.getLogger("agentcell.controlplane")

LOG_SUMMARY_INTERVAL_S = 5.0
# In-flight requests get this long to finish at SIGTERM before their connections are closed.
SHUTDOWN_TIMEOUT_S = 10.0
# How long the rest of an unread request body is read and dropped after an early answer (a
# refusal, a 408) before the connection is closed; aiohttp's default is 10 s.
LINGERING_S = 2.0


def init_state(
    paths: ControlPlanePaths,
    *,
    trust_domain: str,
    server_names: Sequence[str] = DEFAULT_SERVER_NAMES,
    force: bool = False,
) -> CertificateAuthority:
    """Make the state directory (0700): CA, server certificate and admin token.

    Raises:
        IdentityError: a CA exists and ``force`` is false, or a file cannot be written.
    """
    try:
        paths.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise IdentityError(
            f"cannot create {paths.state_dir}: {exc.strerror}",
            fix="run as root, or set AGENTCELL_HOME / --state-dir to a writable place",
        ) from exc
    ca = init_ca(paths.state_dir, trust_domain=trust_domain, server_names=server_names, force=force)
    if force or not paths.admin_token.exists():
        write_file(paths.admin_token, (secrets.token_urlsafe(32) + "\n").encode(), mode=0o600)
    return ca


def read_admin_token(paths: ControlPlanePaths) -> str:
    """The admin token from the state directory.

    Raises:
        IdentityError: it cannot be read (``ca init`` has not run, or no permission).
    """
    return read_text(paths.admin_token, what="admin token").strip()


def server_tls_context(files: CAFiles) -> ssl.SSLContext:
    """TLS for both listeners: our server certificate; client certificates asked for and,
    when sent, verified against our CA (which is the only CA trusted for clients).

    Raises:
        IdentityError: the certificate or key files cannot be loaded.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(files.server_cert, files.server_key)
        context.load_verify_locations(cafile=str(files.ca_cert))
    except (OSError, ssl.SSLError) as exc:
        raise IdentityError(
            f"cannot load the server's TLS files from {files.state_dir}: {exc}",
            fix="run `agentcell ca init` (or `--force` to remake damaged files)",
        ) from exc
    # Optional, not required: enrolment comes before any certificate exists. Every agent
    # endpoint except enrolment refuses a request whose connection has no verified certificate.
    context.verify_mode = ssl.CERT_OPTIONAL
    # A connection keeps the certificate it was opened with (the app caches the identity per
    # connection), so TLS 1.2 renegotiation, which could swap it, is refused.
    context.options |= ssl.OP_NO_RENEGOTIATION
    return context


def _prepare_socket_dir(directory: Path) -> None:
    # 0755: cells (another uid) must traverse it. The socket itself is 0666 so their uid can
    # connect(); what they may do there is decided by TLS and the handlers, not by the mode.
    directory.mkdir(mode=0o755, parents=True, exist_ok=True)
    directory.chmod(0o755)


async def serve(
    settings: ServerSettings,
    *,
    on_ready: Callable[[list[str]], None] = lambda _addresses: None,
    stop: asyncio.Event | None = None,
) -> None:
    """Run the control plane until SIGTERM/SIGINT (or ``stop`` is set), holding the state
    directory's lock throughout (:mod:`~agentcell.controlplane.instance`).

    Raises:
        CANotInitialised: ``ca init`` has not run for this state directory.
        HostError: another control plane serves this state directory, or a listener cannot be
            opened (address in use, no permission).
        StorageError: the database cannot be opened.
    """
    keep_mmap_threshold()
    with rate_limited_logging(settings.limits.log_lines_per_second) as repeat:
        flusher = asyncio.create_task(_flush_log_summaries(repeat))
        try:
            await _serve(settings, on_ready=on_ready, stop=stop)
        finally:
            flusher.cancel()


async def _flush_log_summaries(repeat: RepeatFilter) -> None:
    while True:
        await asyncio.sleep(LOG_SUMMARY_INTERVAL_S)
        repeat.flush()


async def _serve(
    settings: ServerSettings,
    *,
    on_ready: Callable[[list[str]], None],
    stop: asyncio.Event | None,
) -> None:
    paths = settings.paths
    ca = CertificateAuthority.load(paths.state_dir)
    # Before the database and the socket: a second server must leave the first's alone.
    with ServerLock(paths.state_dir) as lock:
        await _serve_locked(settings, ca, lock, on_ready=on_ready, stop=stop)


async def _serve_locked(
    settings: ServerSettings,
    ca: CertificateAuthority,
    lock: ServerLock,
    *,
    on_ready: Callable[[list[str]], None],
    stop: asyncio.Event | None,
) -> None:
    paths = settings.paths
    limits = settings.limits
    admin_token = read_admin_token(paths)
    tls = server_tls_context(ca.files)
    store = Store.open(settings.effective_database_url)
    telemetry = Telemetry()
    service = ControlPlane(store=store, ca=ca, settings=settings, telemetry=telemetry)
    runner = web.AppRunner(
        build_app(service, admin_token=admin_token),
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
    listeners = Listeners(http=runner.server, tls=tls, limits=limits, telemetry=telemetry)
    addresses: list[str] = []
    try:
        try:
            await listeners.listen_tcp(settings.host, settings.port, backlog=1024)
            addresses.append(settings.url)
            if settings.agent_socket:
                _prepare_socket_dir(paths.agent_socket_dir)
                await listeners.listen_unix(str(paths.agent_socket), backlog=1024)
                os.chmod(paths.agent_socket, 0o666)  # noqa: S103 - see _prepare_socket_dir
                addresses.append(f"unix://{paths.agent_socket}")
        except OSError as exc:
            raise HostError(
                f"cannot listen: {exc.strerror or exc}",
                fix="pick another --listen address, or stop what holds it",
            ) from exc
        lock.publish(
            url=settings.url,
            agent_socket=str(paths.agent_socket) if settings.agent_socket else None,
        )
        log.info("control plane listening on %s", ", ".join(addresses))
        on_ready(addresses)
        done = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, done.set)
        await done.wait()
        log.info("control plane stopping")
    finally:
        listeners.stop_accepting()
        await runner.cleanup()
        await listeners.close()
        store.close()
        if settings.agent_socket:
            with contextlib.suppress(OSError):
                paths.agent_socket.unlink()
