"""The offline image bootstrap, checked against the real Docker Engine.

The images are shared fixtures of the whole suite, so these tests build them when missing but
never remove them. Every container a test starts is removed afterwards, pass or fail.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable
from typing import Any, Protocol

import docker
import pytest
from docker.models.containers import Container

from agentcell.errors import HostError
from agentcell.runtime.docker.images import (
    BASE_IMAGE,
    IMAGE_LABEL,
    BuiltImage,
    bootstrap,
    image_names,
    image_reference,
)

pytestmark = pytest.mark.integration

SHIPPED = ["monitor-agent", "sandbox"]
TEST_LABEL = "test.agentcell.made-by"  # not org.agentcell.*: only agentcell sets those


class _Created(Protocol):
    """The part of the suite's ``created`` fixture used here: it removes recorded containers."""

    def container(self, name: str) -> str: ...


@pytest.fixture(scope="module")
def built(docker_client: docker.DockerClient) -> list[BuiltImage]:
    """What bootstrap returns; it builds the shared images when they are missing."""
    try:
        return bootstrap(docker_client)
    except HostError as exc:
        # Without mmdebstrap there is nothing to test here, but CI must have it.
        if os.environ.get("AGENTCELL_REQUIRE_DOCKER") == "1":
            raise
        pytest.skip(f"cannot bootstrap images here: {exc.what}")


def _start(
    client: docker.DockerClient,
    created: _Created,
    image: str,
    command: list[str] | None = None,
    *,
    environment: dict[str, str] | None = None,
    volumes: dict[str, dict[str, str]] | None = None,
) -> Container:
    """Start a hardened, network-less container the way cells run; ``created`` removes it."""
    return client.containers.run(
        image,
        command,
        name=created.container(f"agentcell-test-images-{uuid.uuid4().hex[:12]}"),
        labels={TEST_LABEL: "test_images"},
        network_mode="none",
        read_only=True,
        tmpfs={"/tmp": "size=16m"},
        cap_drop=["ALL"],
        security_opt=["no-new-privileges"],
        environment=environment,
        volumes=volumes,
        detach=True,
    )


def _finish(container: Container) -> tuple[int, str]:
    """Wait for a container to exit; return its exit code and stdout."""
    status = container.wait(timeout=60)
    return int(status["StatusCode"]), container.logs(stdout=True, stderr=False).decode()


def _eventually(condition: Callable[[], bool], *, seconds: float = 30) -> bool:
    """Poll ``condition`` until it holds or ``seconds`` pass."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def _json_lines(container: Container) -> list[dict[str, Any]]:
    """The JSON objects a container printed to stdout so far."""
    lines = container.logs(stdout=True, stderr=False).decode().splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]


def _exec(container: Container, command: list[str]) -> tuple[int, str]:
    """Run a command in a running container; return its exit code and output."""
    result = container.exec_run(command)
    assert result.exit_code is not None
    assert isinstance(result.output, bytes)
    return result.exit_code, result.output.decode()


def test_bootstrap_lists_base_then_every_shipped_image(built: list[BuiltImage]) -> None:
    assert image_names() == SHIPPED
    assert [image.reference for image in built] == [
        BASE_IMAGE,
        *(image_reference(name) for name in SHIPPED),
        image_reference("python-runtime"),
        image_reference("agent"),
    ]
    assert all(image.image_id.startswith("sha256:") and image.size_bytes > 0 for image in built)


@pytest.mark.parametrize("name", [*SHIPPED, "python-runtime", "agent"])
def test_image_is_labelled_with_its_name(
    docker_client: docker.DockerClient, built: list[BuiltImage], name: str
) -> None:
    image = docker_client.images.get(image_reference(name))
    assert image.labels[IMAGE_LABEL] == name


def test_rerun_keeps_the_same_images(
    docker_client: docker.DockerClient, built: list[BuiltImage]
) -> None:
    again = bootstrap(docker_client)
    assert [(image.reference, image.image_id) for image in again] == [
        (image.reference, image.image_id) for image in built
    ]


@pytest.mark.parametrize("name", SHIPPED)
def test_image_runs_as_uid_1001_by_default(
    docker_client: docker.DockerClient, built: list[BuiltImage], created: _Created, name: str
) -> None:
    container = _start(
        docker_client,
        created,
        image_reference(name),
        ["python3", "-c", "import os; print(os.getuid())"],
    )
    assert _finish(container) == (0, "1001\n")


@pytest.mark.parametrize("name", SHIPPED)
def test_image_has_no_setuid_or_setgid_files(
    docker_client: docker.DockerClient, built: list[BuiltImage], created: _Created, name: str
) -> None:
    find_special = (
        "import os, stat\n"
        "for root, dirs, files in os.walk('/'):\n"
        "    dirs[:] = [d for d in dirs if not os.path.ismount(os.path.join(root, d))]\n"
        "    for f in files:\n"
        "        p = os.path.join(root, f)\n"
        "        if os.lstat(p).st_mode & (stat.S_ISUID | stat.S_ISGID):\n"
        "            print(p)\n"
    )
    container = _start(
        docker_client, created, image_reference(name), ["python3", "-c", find_special]
    )
    assert _finish(container) == (0, "")


@pytest.mark.parametrize("name", SHIPPED)
def test_main_process_exits_cleanly_on_sigterm(
    docker_client: docker.DockerClient, built: list[BuiltImage], created: _Created, name: str
) -> None:
    # As PID 1 a process only dies of SIGTERM if it handles it; otherwise `docker stop`
    # falls back to SIGKILL after the timeout and the exit code is 137. Both images print a
    # JSON line once their signal handling is in place.
    container = _start(docker_client, created, image_reference(name))
    assert _eventually(lambda: bool(_json_lines(container))), container.logs().decode()
    container.stop(timeout=20)
    container.reload()
    assert container.attrs["State"]["ExitCode"] == 0


def test_monitor_agent_reports_host_metrics_and_stays_healthy(
    docker_client: docker.DockerClient, built: list[BuiltImage], created: _Created
) -> None:
    container = _start(
        docker_client,
        created,
        image_reference("monitor-agent"),
        environment={"MONITOR_INTERVAL": "1"},
        volumes={"/proc": {"bind": "/host/proc", "mode": "ro"}},
    )
    assert _eventually(lambda: len(_json_lines(container)) >= 2), container.logs().decode()
    latest = _json_lines(container)[-1]
    assert "error" not in latest
    assert set(latest) >= {"loadavg", "mem_total_kib", "mem_available_kib", "cpu_busy_percent"}
    assert isinstance(latest["cpu_busy_percent"], float)
    exit_code, output = _exec(container, ["python3", "/opt/agentcell/health.py"])
    assert exit_code == 0, output


def test_monitor_agent_is_unhealthy_without_host_proc(
    docker_client: docker.DockerClient, built: list[BuiltImage], created: _Created
) -> None:
    container = _start(
        docker_client,
        created,
        image_reference("monitor-agent"),
        environment={"MONITOR_INTERVAL": "1"},
    )
    assert _eventually(lambda: bool(_json_lines(container))), container.logs().decode()
    assert "cannot read /host/proc" in _json_lines(container)[0]["error"]
    exit_code, output = _exec(container, ["python3", "/opt/agentcell/health.py"])
    assert (exit_code, output.startswith("unhealthy:")) == (1, True)
