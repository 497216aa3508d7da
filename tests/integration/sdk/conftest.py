"""A real host service for the SDK's and the sandbox CLI's tests: ``agentcell daemon serve``
started as users start it (the console script, its own AGENTCELL_HOME), over real TLS with its
own CA and over its Unix socket, with a template and a token for each of two tenants. Every
sandbox a test makes is killed after the test; every cell of the two tenants is removed when
the service stops."""

from __future__ import annotations

import contextlib
import os
import secrets
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import docker
import docker.errors
import pytest

from agentcell.errors import Error
from agentcell.sdk import Sandbox, SandboxNotFound, daemon_dir

AGENTCELL = str(Path(sys.executable).with_name("agentcell"))
RUN = secrets.token_hex(2)
TENANT = f"sdk{RUN}"
OTHER_TENANT = f"sdo{RUN}"
TEMPLATE = "py"
TEMPLATE_YAML = """\
apiVersion: agentcell/v1
kind: SandboxTemplate
metadata:
  name: {name}
  tenant: {tenant}
spec:
  cell:
    image: agentcell/sandbox:0.1.0
    command: [sleep, infinity]
    resources:
      cpus: 0.5
      memory: 256m
      pids: 128
      tmpfs:
        - path: /tmp
          size: 64m
        - path: /workspace
          size: 128m
    network: none
  pool:
    min: {pool_min}
    max: 8
  ttl:
    default: 2m
    max: 10m
"""


@dataclass
class Service:
    """What a test needs of the running service."""

    home: Path
    url: str
    ca: str
    admin_token: str
    tenant_token: str
    other_token: str
    made: list[str] = field(default_factory=list)

    def env(self, token: str | None = None) -> dict[str, str]:
        """The environment a client on this host uses to find the service."""
        env = {"AGENTCELL_HOME": str(self.home)}
        if token:
            env["AGENTCELL_TOKEN"] = token
        return env

    def create(self, template: str = TEMPLATE, **kwargs: object) -> Sandbox:
        sandbox = Sandbox.create(
            template,
            url=self.url,
            ca=self.ca,
            token=self.tenant_token,
            **kwargs,  # type: ignore[arg-type]
        )
        self.made.append(sandbox.id)
        return sandbox

    def state_of(self, sandbox_id: str) -> str | None:
        """The sandbox's state as the service tells its admin, or None when it is gone."""
        try:
            sandbox = Sandbox.connect(sandbox_id, url=self.url, ca=self.ca, token=self.admin_token)
        except SandboxNotFound:
            return None
        try:
            return sandbox.info.state
        finally:
            sandbox.close()

    def cleanup(self) -> None:
        for sandbox_id in self.made:
            with (
                contextlib.suppress(Error),
                Sandbox.connect(sandbox_id, url=self.url, ca=self.ca, token=self.admin_token),
            ):
                pass  # leaving the block kills it


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _remove_cells(tenants: tuple[str, ...]) -> None:
    client = docker.DockerClient.from_env()
    try:
        for tenant in tenants:
            for container in client.containers.list(
                all=True, filters={"label": f"org.agentcell.tenant={tenant}"}
            ):
                with contextlib.suppress(docker.errors.NotFound):
                    container.remove(force=True)
    finally:
        client.close()


@pytest.fixture(scope="session")
def running_service() -> Iterator[Service]:
    """One service for the session (its pool warms once)."""
    home = Path(tempfile.mkdtemp(prefix="ac-sdk-", dir="/tmp"))
    templates = home / "templates"
    templates.mkdir()
    (templates / "py.yaml").write_text(
        TEMPLATE_YAML.format(name=TEMPLATE, tenant=TENANT, pool_min=2)
    )
    env = {**os.environ, "AGENTCELL_HOME": str(home)}
    for name in ("AGENTCELL_DAEMON_URL", "AGENTCELL_DAEMON_CA", "AGENTCELL_TOKEN"):
        env.pop(name, None)
    port = _free_port()
    log = (home / "daemon.log").open("wb")
    process = subprocess.Popen(
        [
            AGENTCELL,
            "daemon",
            "serve",
            "--listen",
            f"127.0.0.1:{port}",
            "--templates",
            str(templates),
            "--no-network-services",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=log,
        stdin=subprocess.DEVNULL,
    )
    try:
        assert process.stdout is not None
        deadline, line = time.monotonic() + 60, b""
        while time.monotonic() < deadline and not line.startswith(b"ready"):
            ready, _, _ = select.select([process.stdout], [], [], 0.2)
            if ready:
                line = process.stdout.readline()
                if not line:
                    break
        if not line.startswith(b"ready"):
            raise RuntimeError(f"the service did not start:\n{(home / 'daemon.log').read_text()}")

        def token(tenant: str) -> str:
            made = subprocess.run(
                [AGENTCELL, "daemon", "token", "create", tenant],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            return made.stdout.strip().splitlines()[-1]

        directory = daemon_dir(env)
        service = Service(
            home=home,
            url=f"https://127.0.0.1:{port}",
            ca=str(directory / "tls" / "ca.pem"),
            admin_token=(directory / "admin.token").read_text().strip(),
            tenant_token=token(TENANT),
            other_token=token(OTHER_TENANT),
        )
        yield service
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()
        log.close()
        _remove_cells((TENANT, OTHER_TENANT))
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def service(running_service: Service) -> Iterator[Service]:
    """The session's service; the sandboxes this test made are killed after it."""
    running_service.made = []
    try:
        yield running_service
    finally:
        running_service.cleanup()
