"""Harness: a real host service (``agentcell daemon serve``, the console script) in a child
process, on a free loopback port, with its own state under a short /tmp directory, and small
HTTP clients that verify its TLS certificate against the service's own CA (or speak plain
HTTP on its Unix socket).

Other tests use it through the fixtures in this folder's ``conftest.py`` (``make_daemon``,
``daemon``) or directly: :func:`start_daemon` returns a :class:`Daemon`; stop it with
``daemon.process.stop()`` and remove its cells with :func:`remove_tenant_cells`.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import secrets
import select
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

AGENTCELL = str(Path(sys.executable).with_name("agentcell"))
READY_TIMEOUT_S = 120.0
SANDBOX_IMAGE = "agentcell/sandbox:0.1.0"


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def make_home() -> Path:
    """A short directory for one service's state (socket paths must stay short)."""
    return Path(tempfile.mkdtemp(prefix="ac-d-", dir="/tmp"))


def new_tenant(prefix: str = "d") -> str:
    """A fresh tenant name (a DNS label of at most 12 characters)."""
    return prefix + secrets.token_hex(3)


def template_yaml(
    tenant: str,
    name: str = "py",
    *,
    pool_min: int = 1,
    pool_max: int = 4,
    ttl_default: str = "5m",
    ttl_max: str = "10m",
    tmpfs_mib: int = 64,
) -> str:
    """A SandboxTemplate document of the sandbox image for ``tenant``."""
    return f"""\
apiVersion: agentcell/v1
kind: SandboxTemplate
metadata: {{name: {name}, tenant: {tenant}}}
spec:
  cell:
    image: '{SANDBOX_IMAGE}'
    command: [sleep, infinity]
    resources:
      tmpfs:
        - {{path: /tmp, size: {tmpfs_mib}m}}
  pool: {{min: {pool_min}, max: {pool_max}}}
  ttl: {{default: {ttl_default}, max: {ttl_max}}}
"""


@dataclass
class Reply:
    """One answer: status, headers and the whole body."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def frames(self) -> list[dict[str, Any]]:
        """The NDJSON lines of a streamed answer."""
        return [json.loads(line) for line in self.body.splitlines() if line.strip()]


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


class DaemonClient:
    """A client of the service: TLS verified against ``ca`` (no way to turn that off), or
    plain HTTP on the Unix socket."""

    def __init__(
        self,
        *,
        port: int,
        ca: Path,
        socket_path: Path,
        token: str | None,
        via: str = "tcp",
        timeout: float = 120.0,
    ) -> None:
        self.port = port
        self.ca = ca
        self.socket_path = socket_path
        self.token = token
        self.via = via
        self.timeout = timeout

    def connection(self) -> http.client.HTTPConnection:
        if self.via == "unix":
            return _UnixConnection(str(self.socket_path), self.timeout)
        context = ssl.create_default_context(cafile=str(self.ca))
        return http.client.HTTPSConnection(
            "127.0.0.1", self.port, context=context, timeout=self.timeout
        )

    def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        body: bytes | Iterable[bytes] | None = None,
        query: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        """Send one request on a new connection and read the whole answer."""
        target = path + ("?" + urllib.parse.urlencode(query) if query else "")
        sent: dict[str, str] = {}
        if self.token is not None:
            sent["Authorization"] = f"Bearer {self.token}"
        payload: bytes | Iterable[bytes] | None = body
        if json_body is not None:
            payload = json.dumps(json_body).encode()
            sent["Content-Type"] = "application/json"
        sent.update(headers or {})
        connection = self.connection()
        try:
            connection.request(
                method,
                target,
                body=payload,
                headers=sent,
                encode_chunked=payload is not None and not isinstance(payload, bytes),
            )
            answer = connection.getresponse()
            data = answer.read()
            return Reply(answer.status, dict(answer.getheaders()), data)
        finally:
            connection.close()

    @contextlib.contextmanager
    def stream(self, method: str, path: str, *, json_body: Any = None) -> Iterator[Any]:
        """An open streamed answer (read it line by line)."""
        sent = {"Content-Type": "application/json"}
        if self.token is not None:
            sent["Authorization"] = f"Bearer {self.token}"
        connection = self.connection()
        try:
            connection.request(
                method,
                path,
                body=json.dumps(json_body).encode() if json_body is not None else None,
                headers=sent,
            )
            yield connection.getresponse()
        finally:
            connection.close()


class DaemonProcess:
    """``agentcell daemon serve`` as a child process that can be stopped and restarted."""

    def __init__(
        self,
        home: Path,
        port: int,
        *,
        templates: Path | None,
        env: Mapping[str, str],
        network_services: bool = False,
    ) -> None:
        self.home = home
        self.port = port
        self.templates = templates
        self.network_services = network_services
        self.env = {**os.environ, "AGENTCELL_HOME": str(home), **env}
        self.process: subprocess.Popen[bytes] | None = None
        self.log = home / "daemon.log"

    def argv(self) -> list[str]:
        argv = [AGENTCELL, "daemon", "serve", "--listen", f"127.0.0.1:{self.port}"]
        if self.templates is not None:
            argv += ["--templates", str(self.templates)]
        if not self.network_services:
            argv.append("--no-network-services")
        return argv

    def start(self) -> None:
        """Start the service and wait for its "ready" line.

        Raises:
            RuntimeError: it exited or did not get ready in time (its log is in the message).
        """
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                self.argv(),
                env=self.env,
                stdout=subprocess.PIPE,
                stderr=log,
                stdin=subprocess.DEVNULL,
            )
        assert self.process.stdout is not None
        deadline = time.monotonic() + READY_TIMEOUT_S
        line = b""
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.process.stdout], [], [], 0.2)
            if ready:
                line = self.process.stdout.readline()
                if line.startswith(b"ready"):
                    return
                if not line:
                    break
        self.kill()
        raise RuntimeError(f"the host service did not start: {line!r}\n{self.log.read_text()}")

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL if it lingers; its exit status."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._close()
        return self.process.returncode

    def kill(self) -> None:
        """SIGKILL: like a crash."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)
        self._close()

    def _close(self) -> None:
        if self.process is not None and self.process.stdout is not None:
            self.process.stdout.close()


@dataclass
class Daemon:
    """A running service and what tests need to talk to it."""

    home: Path
    process: DaemonProcess
    tenants: list[str] = field(default_factory=list)

    @property
    def directory(self) -> Path:
        return self.home / "controlplane" / "daemon"

    @property
    def port(self) -> int:
        return self.process.port

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def ca(self) -> Path:
        return self.directory / "tls" / "ca.pem"

    @property
    def socket(self) -> Path:
        return self.home / "run" / "daemon.sock"

    @property
    def admin_token(self) -> str:
        return (self.directory / "admin.token").read_text().strip()

    def env(self) -> dict[str, str]:
        """The environment of a CLI on this host using this service's state."""
        return {**os.environ, "AGENTCELL_HOME": str(self.home)}

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``agentcell ARGS...`` against this service's state directory."""
        return subprocess.run(
            [AGENTCELL, *args], env=self.env(), capture_output=True, text=True, timeout=120
        )

    def token(self, tenant: str) -> str:
        """A new tenant token, made by ``agentcell daemon token create``."""
        done = self.cli("daemon", "token", "create", tenant)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    def client(self, token: str | None, *, via: str = "tcp") -> DaemonClient:
        return DaemonClient(
            port=self.port, ca=self.ca, socket_path=self.socket, token=token, via=via
        )

    def admin(self, *, via: str = "tcp") -> DaemonClient:
        return self.client(self.admin_token, via=via)


def write_templates(home: Path, templates: Mapping[str, str]) -> Path:
    """``templates`` (file name -> YAML) into ``<home>/templates``; that directory."""
    directory = home / "templates"
    directory.mkdir(exist_ok=True)
    for name, text in templates.items():
        (directory / name).write_text(text)
    return directory


def start_daemon(
    home: Path,
    *,
    templates: Mapping[str, str] | None = None,
    tenants: Iterable[str] = (),
    env: Mapping[str, str] | None = None,
    network_services: bool = False,
    port: int | None = None,
) -> Daemon:
    """Start a service on ``home`` with ``templates`` (file name -> YAML); ``tenants`` are
    the tenants whose cells :func:`remove_tenant_cells` removes afterwards."""
    directory = write_templates(home, templates) if templates else None
    process = DaemonProcess(
        home,
        port or free_port(),
        templates=directory,
        env=env or {},
        network_services=network_services,
    )
    process.start()
    return Daemon(home=home, process=process, tenants=list(tenants))


def remove_tenant_cells(tenants: Iterable[str]) -> None:
    """Remove every cell of ``tenants`` (sandboxes and warm pool cells alike)."""
    from agentcell.errors import Error
    from agentcell.runtime.docker.backend import DockerBackend

    backend = DockerBackend.connect()
    for tenant in tenants:
        for cell in backend.cells(tenant=tenant):
            with contextlib.suppress(Error):
                backend.down(cell.tenant, cell.agent, timeout_s=1)
