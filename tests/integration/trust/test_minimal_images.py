"""Minimal images: the python-runtime image holds Python and nothing to break out with, and
builds that would ship a shell are refused unless the shell was asked for."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors
import pytest

from agentcell.errors import ImageError
from agentcell.runtime.docker.images import BASE_IMAGE, image_reference
from agentcell.runtime.docker.minimal import (
    PYTHON_RUNTIME,
    Capability,
    ImageReport,
    build,
    build_python_runtime,
    report,
)
from tests.conftest import Created


@pytest.fixture(scope="module")
def runtime(docker_client: docker.DockerClient) -> Iterator[ImageReport]:
    """python-runtime, built for this module; removed afterwards unless it was here before."""
    try:
        docker_client.images.get(BASE_IMAGE)
    except docker.errors.ImageNotFound:
        pytest.fail(f"{BASE_IMAGE} is missing; run `agentcell image bootstrap` first")
    existed = True
    try:
        docker_client.images.get(PYTHON_RUNTIME)
    except docker.errors.ImageNotFound:
        existed = False
    built = build_python_runtime(docker_client)
    yield built
    if not existed:
        with contextlib.suppress(docker.errors.APIError):
            docker_client.images.remove(PYTHON_RUNTIME, force=True)


def test_python_runtime_has_no_shell_package_manager_or_compiler(runtime: ImageReport) -> None:
    assert runtime.found == {}
    assert runtime.programs == ("python3", "python3.11")
    assert 0 < runtime.file_count < 5000
    assert runtime.size_bytes < 60 * 2**20


def test_python_runtime_is_far_smaller_than_the_base(
    docker_client: docker.DockerClient, runtime: ImageReport
) -> None:
    base = report(docker_client, BASE_IMAGE)
    assert base.found["shell"]
    assert "dpkg" in base.package_managers
    assert runtime.size_bytes * 2 < base.size_bytes
    assert runtime.file_count * 2 < base.file_count


def test_python_runs_hardened_and_sh_does_not_exist(
    docker_client: docker.DockerClient, runtime: ImageReport, created: Created
) -> None:
    out = _run_hardened(
        docker_client,
        created,
        runtime.reference,
        [
            "python3",
            "-c",
            "import ssl, json, hashlib, sqlite3, lzma, zlib, ctypes, asyncio, pwd, os;"
            "print(pwd.getpwuid(os.getuid()).pw_name, ssl.OPENSSL_VERSION.split()[0])",
        ],
    )
    assert out.decode().split() == ["agent", "OpenSSL"]
    with pytest.raises(docker.errors.APIError, match="executable file not found"):
        _run_hardened(docker_client, created, runtime.reference, ["sh", "-c", "true"])


def _run_hardened(
    client: docker.DockerClient, created: Created, image: str, command: list[str]
) -> bytes:
    """Run to completion as agentcell runs cells: uid 1001, read-only, no capabilities.

    Named and recorded, because a container whose start fails stays behind as "created" even
    with remove=True.
    """
    out: bytes = client.containers.run(
        image,
        command,
        name=created.container(f"agentcell-test-{uuid.uuid4().hex[:10]}"),
        user="1001:1001",
        read_only=True,
        cap_drop=["ALL"],
        security_opt=["no-new-privileges:true"],
        network_mode="none",
        remove=True,
    )
    return out


def test_the_sandbox_image_reports_the_shell_it_asked_for(
    docker_client: docker.DockerClient,
) -> None:
    shell: tuple[Capability, ...] = ("shell",)
    sandbox = report(docker_client, image_reference("sandbox"), allow=shell)
    assert "sh" in sandbox.shells
    assert "shell" not in sandbox.violations


def test_a_build_that_ships_a_shell_is_refused_unless_allowed(
    docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    (tmp_path / "Dockerfile").write_text(
        "ARG BASE\nFROM ${BASE}\nLABEL test.agentcell.made-by=minimal\n"
    )
    reference = f"agentcell-test/minimal:{uuid.uuid4().hex[:12]}"
    try:
        with pytest.raises(ImageError, match="not minimal") as caught:
            build(docker_client, reference, tmp_path)
        assert "shell" in caught.value.what
        with pytest.raises(docker.errors.ImageNotFound):
            docker_client.images.get(reference)
        allowed = build(docker_client, reference, tmp_path, allow=("shell", "package-manager"))
        assert allowed.shells and not allowed.violations
    finally:
        with contextlib.suppress(docker.errors.APIError):
            docker_client.images.remove(reference, force=True)


def test_an_agent_image_built_from_python_runtime_stays_minimal(
    docker_client: docker.DockerClient, runtime: ImageReport, tmp_path: Path
) -> None:
    (tmp_path / "agent.py").write_text("print('agent up')\n")
    (tmp_path / "Dockerfile").write_text(
        "ARG RUNTIME\nFROM ${RUNTIME}\nCOPY agent.py /opt/agent/agent.py\n"
        'CMD ["python3", "/opt/agent/agent.py"]\n'
    )
    reference = f"agentcell-test/agent:{uuid.uuid4().hex[:12]}"
    try:
        agent = build(docker_client, reference, tmp_path)
        assert agent.found == {}
        assert agent.file_count == runtime.file_count + 1
        out = docker_client.containers.run(reference, remove=True, network_mode="none")
        assert out == b"agent up\n"
    finally:
        with contextlib.suppress(docker.errors.APIError):
            docker_client.images.remove(reference, force=True)
