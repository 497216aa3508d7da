"""A service that does not answer, through the real command: every command that needs the
Docker Engine, a registry or the control plane, run with that service unreachable, prints one
"cannot reach" error with a fix and exits 3, never a traceback.

The engine is a socket path that does not exist; the registry and the control plane are a
loopback port nothing listens on. Every command of ``agentcell --help`` is listed in exactly
one of the tables below, so a new command cannot be left out.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors
import pytest
import typer

from agentcell.cli.main import app

AGENTCELL = Path(sys.executable).with_name("agentcell")
DEAD_ENGINE = "unix:///nonexistent.sock"
ENGINE_SOCKET = "/var/run/docker.sock"
DEAD_REGISTRY = "127.0.0.1:1"  # nothing listens on port 1 of loopback
DEAD_CONTROL_PLANE = "https://127.0.0.1:1"
SPEC = (
    "apiVersion: agentcell/v1\nkind: Agent\n"
    "metadata:\n  name: dead\n  tenant: deadeng\n"
    "spec:\n  image: agentcell/sandbox:0.1.0\n"
)

# Command -> its arguments; "{spec}" is a spec file, "{keys}" a key pair's prefix.
NEEDS_ENGINE: dict[str, list[str]] = {
    "up": ["-f", "{spec}"],
    "apply": ["-f", "{spec}"],
    "down": ["deadeng/dead"],
    "ps": [],
    "logs": ["deadeng/dead"],
    "inspect": ["deadeng/dead"],
    "runtimes": [],
    "audit": [],
    "verify": ["--all"],
    "probe": ["deadeng/dead"],
    "image bootstrap": [],
    "image build": ["python-runtime"],
    "image report": ["agentcell/sandbox:0.1.0"],
    "image push": ["agentcell/sandbox:0.1.0", "--to", f"{DEAD_REGISTRY}/agentcell-test/dead:v1"],
    "net check": [],
    "net remove": ["deadeng"],
}
NEEDS_REGISTRY: dict[str, list[str]] = {
    "image push": ["agentcell/sandbox:0.1.0", "--to", f"{DEAD_REGISTRY}/agentcell-test/dead:v1"],
    "image sign": [f"{DEAD_REGISTRY}/agentcell-test/dead:v1", "--key", "{keys}.key"],
    "image verify": [f"{DEAD_REGISTRY}/agentcell-test/dead:v1", "--key", "{keys}.pub"],
}
NEEDS_CONTROL_PLANE: dict[str, list[str]] = {
    "cert list": [],
    "cert revoke": ["deadeng/dead", "--reason", "test"],
    "events": [],
    "metrics": ["cpu.utilization"],
    "tenant list": [],
    "tenant show": ["deadeng"],
    "tenant delete": ["deadeng"],
}
DEAD_DAEMON = "https://127.0.0.1:1"
SANDBOX = "sbx-0000000000000000"
NEEDS_DAEMON: dict[str, list[str]] = {
    "sandbox ls": [],
    "sandbox create": ["py"],
    "sandbox exec": [SANDBOX, "--", "true"],
    "sandbox kill": [SANDBOX],
    "sandbox timeout": [SANDBOX, "60"],
    "sandbox cp": ["{spec}", f"{SANDBOX}:/tmp/x"],
    "run": ["py", "--", "true"],
}
# Commands that reach none of the four (or, like `server`, are the service they would reach;
# the daemon's commands read its state directory; `net serve` follows the engine's networks
# and keeps serving while the engine is away).
NEEDS_NONE = {
    "render", "schema", "rules", "lint", "server", "keys generate", "ca init",
    "daemon serve", "daemon status", "daemon token create", "daemon token list",
    "daemon token revoke", "net log", "net serve",
}  # fmt: skip


def _commands(group: typer.Typer, prefix: str = "") -> Iterator[str]:
    """Every command of ``group`` as typed, e.g. "image push"."""
    for command in group.registered_commands:
        assert command.callback is not None
        yield prefix + (command.name or command.callback.__name__.replace("_", "-"))
    for sub in group.registered_groups:
        assert sub.typer_instance is not None and sub.name is not None
        yield from _commands(sub.typer_instance, f"{prefix}{sub.name} ")


def test_every_command_is_listed_by_what_it_needs() -> None:
    listed = {*NEEDS_ENGINE, *NEEDS_REGISTRY, *NEEDS_CONTROL_PLANE, *NEEDS_DAEMON, *NEEDS_NONE}
    assert sorted(set(_commands(app)) ^ listed) == []


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "agent.yaml").write_text(SPEC)
    return {"spec": str(tmp_path / "agent.yaml"), "keys": str(tmp_path / "cosign")}


def _run(
    command: str, args: list[str], files: dict[str, str], **env: str
) -> subprocess.CompletedProcess[str]:
    argv = [str(AGENTCELL), *command.split(), *(arg.format(**files) for arg in args)]
    environ = {**os.environ, "COSIGN_PASSWORD": "", **env}
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=120, env=environ, stdin=subprocess.DEVNULL
    )


def _assert_unreachable(result: subprocess.CompletedProcess[str], service: str) -> None:
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 3, result.stderr
    # Warnings (e.g. policy findings of `up`) may come first; the error is the last two lines.
    lines = result.stderr.splitlines()
    assert [line for line in lines if line.startswith("error:")] == lines[-2:-1], result.stderr
    assert lines[-2].startswith(f"error: cannot reach the {service}"), result.stderr
    assert lines[-1].startswith("  fix: "), result.stderr


@pytest.mark.parametrize("command", sorted(NEEDS_ENGINE))
def test_a_dead_engine_is_exit_3_and_one_clear_error(command: str, files: dict[str, str]) -> None:
    result = _run(command, NEEDS_ENGINE[command], files, DOCKER_HOST=DEAD_ENGINE)
    _assert_unreachable(result, "Docker Engine")
    assert result.stderr.startswith(f"error: cannot reach the Docker Engine at {DEAD_ENGINE}: ")
    assert "DOCKER_HOST" in result.stderr
    assert result.stdout == ""


def test_render_needs_no_engine(files: dict[str, str]) -> None:
    result = _run("render", ["-f", "{spec}"], files, DOCKER_HOST=DEAD_ENGINE)
    assert result.returncode == 0, result.stderr
    assert "docker run" in result.stdout


@pytest.fixture
def no_dead_tag(docker_client: docker.DockerClient) -> Iterator[None]:
    """`image push` tags the local image before the engine finds the registry down."""
    yield
    with contextlib.suppress(docker.errors.ImageNotFound):
        docker_client.images.remove(NEEDS_REGISTRY["image push"][2], noprune=True)


@pytest.mark.usefixtures("no_dead_tag")
@pytest.mark.parametrize("command", sorted(NEEDS_REGISTRY))
def test_a_registry_that_does_not_answer_is_exit_3(
    command: str, files: dict[str, str], docker_client: docker.DockerClient
) -> None:
    if command == "image push":
        try:
            docker_client.images.get("agentcell/sandbox:0.1.0")
        except docker.errors.ImageNotFound:
            pytest.skip("agentcell/sandbox:0.1.0 is not built (agentcell image bootstrap)")
    keys = _run("keys generate", ["--output-prefix", "{keys}"], files)
    assert keys.returncode == 0, keys.stderr
    result = _run(command, NEEDS_REGISTRY[command], files)
    _assert_unreachable(result, "registry")
    assert DEAD_REGISTRY in result.stderr


@pytest.mark.parametrize("command", sorted(NEEDS_CONTROL_PLANE))
def test_a_control_plane_that_does_not_answer_is_exit_3(
    command: str, files: dict[str, str], tmp_path: Path
) -> None:
    # A real state directory (CA bundle and admin token), so only the connection can fail.
    state = str(tmp_path / "state")
    init = _run("ca init", ["--state-dir", state], files)
    assert init.returncode == 0, init.stderr
    result = _run(
        command,
        [*NEEDS_CONTROL_PLANE[command], "--state-dir", state],
        files,
        AGENTCELL_CONTROLPLANE_URL=DEAD_CONTROL_PLANE,
    )
    _assert_unreachable(result, "control plane")
    assert DEAD_CONTROL_PLANE in result.stderr


@pytest.mark.parametrize("command", sorted(NEEDS_DAEMON))
def test_a_host_service_that_does_not_answer_is_exit_3(
    command: str, files: dict[str, str], tmp_path: Path
) -> None:
    result = _run(
        command,
        NEEDS_DAEMON[command],
        files,
        AGENTCELL_HOME=str(tmp_path / "home"),
        AGENTCELL_DAEMON_URL=DEAD_DAEMON,
        AGENTCELL_TOKEN="not-a-token",
    )
    _assert_unreachable(result, "agentcell host service")
    assert DEAD_DAEMON in result.stderr


class _EngineThatDiesAfterPing:
    """A unix socket that passes the first request (the client's ping) to the real engine,
    then closes and disappears: the engine is lost after the command connected."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(str(path))
        self._listener.listen(1)
        self._thread = threading.Thread(target=self._serve_one, daemon=True)
        self._thread.start()

    def _serve_one(self) -> None:
        with self._listener:
            downstream, _ = self._listener.accept()
        self.path.unlink()
        with (
            downstream,
            socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as upstream,
        ):
            upstream.connect(ENGINE_SOCKET)
            request = b""
            while b"\r\n\r\n" not in request:
                request += downstream.recv(65536)
            upstream.sendall(request)
            response = b""
            while b"\r\n\r\n" not in response:
                response += upstream.recv(65536)
            head, _, body = response.partition(b"\r\n\r\n")
            length = re.search(rb"(?i)content-length: *(\d+)", head)
            while length is not None and len(body) < int(length.group(1)):
                body += upstream.recv(65536)
            downstream.sendall(head + b"\r\n\r\n" + body)

    def join(self) -> None:
        self._thread.join(timeout=10)


@pytest.mark.parametrize(
    ("command", "args"),
    [
        ("ps", []),
        ("inspect", ["deadeng/dead"]),
        ("down", ["deadeng/dead"]),
        ("up", ["-f", "{spec}"]),
    ],
)
@pytest.mark.usefixtures("docker_client")
def test_an_engine_lost_after_connecting_is_exit_3_and_one_clear_error(
    command: str, args: list[str], files: dict[str, str], tmp_path: Path
) -> None:
    engine = _EngineThatDiesAfterPing(tmp_path / "engine.sock")
    result = _run(command, args, files, DOCKER_HOST=f"unix://{engine.path}")
    engine.join()
    _assert_unreachable(result, "Docker Engine")
    assert "it stopped answering during" in result.stderr
