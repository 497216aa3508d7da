"""Fixtures for image trust against the real registry (127.0.0.1:5000, started by setup.sh).

Every image a test builds or tags is removed afterwards; what it pushed stays in the registry
under a repository name no other run uses (``agentcell-test/<random>``).
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import socket
import subprocess
import tarfile
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import docker.errors
import pytest
import requests

from agentcell.runtime.docker.registry import PushedImage, push
from agentcell.trust.keys import SigningKey, generate_key_pair
from agentcell.trust.registry import RegistryClient

REGISTRY = "127.0.0.1:5000"
BASE = "agentcell/base:bookworm"
TEST_LABEL = "test.agentcell.made-by"  # not org.agentcell.*: only agentcell sets those


def _answers(host: str) -> bool:
    try:
        session = requests.Session()
        session.trust_env = False
        return session.get(f"http://{host}/v2/", timeout=2).status_code == 200
    except requests.RequestException:
        return False


@pytest.fixture(scope="session")
def registry_host() -> str:
    """The shared registry; skips without it unless CI demands it."""
    if not _answers(REGISTRY):
        message = f"no registry answers on {REGISTRY} (scripts/setup.sh starts it)"
        if os.environ.get("AGENTCELL_REQUIRE_DOCKER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return REGISTRY


@pytest.fixture
def registry(registry_host: str) -> Iterator[RegistryClient]:
    client = RegistryClient(registry_host)
    yield client
    client.close()


@pytest.fixture(scope="session")
def signer() -> SigningKey:
    return generate_key_pair(name="release")


@pytest.fixture(scope="session")
def stranger() -> SigningKey:
    return generate_key_pair(name="stranger")


class Images:
    """Builds tiny test images, pushes them, and removes every local tag at teardown."""

    def __init__(self, client: docker.DockerClient) -> None:
        self.client = client
        self.tags: list[str] = []
        self.ids: list[str] = []

    def build(self, *, base: str = BASE, marker: str | None = None) -> str:
        """A new image FROM ``base`` that differs from every other by a label; its tag."""
        marker = marker or uuid.uuid4().hex
        tag = f"agentcell-test/trust:{marker[:16]}"
        dockerfile = f"FROM {base}\nLABEL {TEST_LABEL}={marker}\nCOPY marker /marker\n"
        context = io.BytesIO()
        with tarfile.open(fileobj=context, mode="w") as tar:
            for name, data in (("Dockerfile", dockerfile.encode()), ("marker", marker.encode())):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        context.seek(0)
        self.tags.append(tag)
        image, _ = self.client.images.build(
            fileobj=context, custom_context=True, tag=tag, rm=True, network_mode="none"
        )
        self.ids.append(str(image.id))
        return tag

    def push(self, source: str, target: str) -> PushedImage:
        self.tags.append(target)
        return push(self.client, source, target)

    def remove_all(self) -> None:
        """Remove every image made or pulled, by ID too: an image whose tag moved to a newer
        push keeps its registry digest and would otherwise linger untagged."""
        for name in [*reversed(self.tags), *reversed(self.ids)]:
            with contextlib.suppress(docker.errors.ImageNotFound, docker.errors.APIError):
                self.client.images.remove(name, force=True)


@pytest.fixture
def images(docker_client: docker.DockerClient) -> Iterator[Images]:
    record = Images(docker_client)
    try:
        yield record
    finally:
        record.remove_all()


@pytest.fixture
def repository(registry_host: str) -> str:
    """A repository no other test run uses."""
    return f"{registry_host}/agentcell-test/trust-{uuid.uuid4().hex[:12]}"


def _free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class SecondRegistry:
    """A registry of this test's own, on another loopback port, that the test can stop."""

    def __init__(self) -> None:
        self.port = _free_loopback_port()
        self.host = f"127.0.0.1:{self.port}"
        self.root = Path(tempfile.mkdtemp(prefix="agentcell-registry-"))
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("docker-registry")
        if binary is None:
            if os.environ.get("AGENTCELL_REQUIRE_DOCKER") == "1":
                pytest.fail("docker-registry is not installed (scripts/setup.sh installs it)")
            pytest.skip("docker-registry is not installed")
        config = self.root / "config.yml"
        config.write_text(
            "version: 0.1\n"
            f"storage:\n  filesystem:\n    rootdirectory: {self.root / 'data'}\n"
            f"http:\n  addr: {self.host}\n"
            "log:\n  level: error\n"
        )
        self.process = subprocess.Popen(
            [binary, "serve", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while not _answers(self.host):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"the second registry did not start on {self.host}")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def second_registry() -> Iterator[Callable[[], SecondRegistry]]:
    made: list[SecondRegistry] = []

    def start() -> SecondRegistry:
        registry = SecondRegistry()
        made.append(registry)
        registry.start()
        return registry

    yield start
    for registry in made:
        registry.remove()
