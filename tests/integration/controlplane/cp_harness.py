"""Harness: a real control plane in a subprocess, real certificates from its CA, real TLS clients.

Each test gets its own state and run directories under a short /tmp path (Unix socket paths
are limited to 107 bytes), a free loopback port, and a server that is killed and whose files
are removed at teardown, pass or fail.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from agentcell.agent.transport import Answer, Endpoint, Transport, tls_context
from agentcell.controlplane.client import AdminClient
from agentcell.controlplane.server import init_state
from agentcell.controlplane.settings import ClientSettings, ControlPlanePaths
from agentcell.controlplane.store import Store
from agentcell.identity.ca import SERVER_NAME

AGENTCELL = str(Path(sys.executable).with_name("agentcell"))
READY_TIMEOUT_S = 30.0


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class ServerProcess:
    """``python -m agentcell.controlplane`` as a child process that can be killed and restarted."""

    def __init__(self, home: Path, port: int, env: Mapping[str, str]) -> None:
        self.home = home
        self.port = port
        self.env = {**os.environ, "AGENTCELL_HOME": str(home), **env}
        self.process: subprocess.Popen[bytes] | None = None
        self.log = home / "server.log"

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start the server and wait for its "ready" line."""
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                # The console script users run, so tests start what they start.
                [AGENTCELL, "server", "--listen", f"127.0.0.1:{self.port}"],
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
        raise RuntimeError(f"control plane did not start: {line!r}\n{self.log.read_text()}")

    def kill(self) -> None:
        """SIGKILL: no chance to clean up, like a crash."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)
        self._close()

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it lingers (30 s: a loaded 2-core machine can take a while
        to flush; a kill would leave the server's record behind, which some tests check)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._close()

    def _close(self) -> None:
        if self.process is not None and self.process.stdout is not None:
            self.process.stdout.close()


@dataclass
class Identity:
    """A client key and certificate on disk."""

    cert: Path
    key: Path
    serial: str
    next_sequence: int = 1


class ControlPlane:
    """A running control plane and the helpers tests need to talk to it."""

    def __init__(self, home: Path, server: ServerProcess) -> None:
        self.home = home
        self.server = server
        self.paths = ControlPlanePaths.from_environ({"AGENTCELL_HOME": str(home)})
        self.admin = AdminClient(
            ClientSettings.from_environ({"AGENTCELL_HOME": str(home)}, url=server.url)
        )
        self._count = 0

    def store(self) -> Store:
        return Store.open(f"sqlite:///{self.paths.database}")

    def transport(self, identity: Identity | None, *, via: str = "tcp") -> Transport:
        endpoint = (
            Endpoint.parse(f"unix://{self.paths.agent_socket}")
            if via == "unix"
            else Endpoint.parse(self.server.url)
        )
        cert = (identity.cert, identity.key) if identity is not None else None
        return Transport(
            endpoint, server_name=SERVER_NAME, context=tls_context(self.paths.ca_bundle, cert)
        )

    def call(
        self,
        identity: Identity | None,
        method: str,
        path: str,
        body: Any = None,
        *,
        via: str = "tcp",
        headers: Mapping[str, str] | None = None,
    ) -> Answer:
        """One request with ``identity``'s certificate (or none)."""
        transport = self.transport(identity, via=via)
        try:
            payload = json.dumps(body).encode() if body is not None else None
            if headers:
                connection = transport._connect()
                connection.request(method, path, body=payload, headers=dict(headers))
                response = connection.getresponse()
                raw = response.read()
                return Answer(status=response.status, body=json.loads(raw) if raw else {})
            return transport.request(method, path, payload)
        finally:
            transport.close()

    def new_key(self, name: str) -> tuple[ec.EllipticCurvePrivateKey, Path]:
        key = ec.generate_private_key(ec.SECP256R1())
        path = self.home / "clients" / f"{name}.key"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return key, path

    def csr(self, key: ec.EllipticCurvePrivateKey, *, san: str | None = None) -> str:
        builder = x509.CertificateSigningRequestBuilder().subject_name(
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test")])
        )
        if san is not None:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(san)]), critical=False
            )
        return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()

    def enrol(self, tenant: str, agent: str, *, via: str = "tcp") -> Identity:
        """Token from the admin API, key made here, CSR and enrolment over TLS."""
        token = self.admin.join_token(tenant, agent).token
        self._count += 1
        key, key_path = self.new_key(f"{tenant}-{agent}-{self._count}")
        answer = self.call(
            None, "POST", "/v1/agent/enrol", {"token": token, "csr": self.csr(key)}, via=via
        )
        assert answer.status == 200, answer.body
        cert_path = key_path.with_suffix(".pem")
        cert_path.write_text(answer.body["certificate"])
        return Identity(
            cert=cert_path,
            key=key_path,
            serial=answer.body["serial"],
            next_sequence=answer.body["next_sequence"],
        )

    def report(self, identity: Identity, sequences: list[int], *, via: str = "tcp") -> Answer:
        now = time.time()
        return self.call(
            identity,
            "POST",
            "/v1/agent/reports",
            {
                "reports": [
                    {"sequence": s, "kind": "metrics", "sampled_at": now, "metrics": {"x": s}}
                    for s in sequences
                ]
            },
            via=via,
        )


def make_home() -> Path:
    """A short directory for one test's state (socket paths must stay short)."""
    return Path(tempfile.mkdtemp(prefix="ac-cp-", dir="/tmp"))


def start_control_plane(home: Path, env: Mapping[str, str] | None = None) -> ControlPlane:
    init_state(
        ControlPlanePaths.from_environ({"AGENTCELL_HOME": str(home)}), trust_domain="test.local"
    )
    server = ServerProcess(home, free_port(), env or {})
    server.start()
    return ControlPlane(home, server)


def utc(seconds_from_now: float) -> dt.datetime:
    return dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds_from_now)


@contextlib.contextmanager
def removed_on_exit(path: Path) -> Iterator[Path]:
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
