"""Fixtures for the control-plane integration tests; the machinery is in cp_harness."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import docker
import pytest

from agentcell.runtime.docker.agent_image import IMAGE_NAME
from agentcell.runtime.docker.images import image_reference

from .cp_harness import ControlPlane, make_home, start_control_plane


@pytest.fixture
def control_plane() -> Iterator[ControlPlane]:
    """A fresh control plane for one test, removed afterwards."""
    home = make_home()
    plane: ControlPlane | None = None
    try:
        plane = start_control_plane(home)
        yield plane
    finally:
        if plane is not None:
            plane.server.stop()
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def make_control_plane() -> Iterator[Callable[[Mapping[str, str]], ControlPlane]]:
    """Start control planes with extra environment (e.g. short certificate lifetimes); every
    one is stopped and its files removed afterwards."""
    started: list[ControlPlane] = []
    homes: list[Path] = []

    def make(env: Mapping[str, str]) -> ControlPlane:
        home = make_home()
        homes.append(home)
        plane = start_control_plane(home, env)
        started.append(plane)
        return plane

    try:
        yield make
    finally:
        for plane in started:
            plane.server.stop()
        for home in homes:
            shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def agent_image(docker_client: docker.DockerClient) -> str:
    """The reference agent's minimal image, as `agentcell image bootstrap` built it (the test
    command runs the bootstrap first)."""
    reference = image_reference(IMAGE_NAME)
    try:
        docker_client.images.get(reference)
    except docker.errors.ImageNotFound:
        pytest.fail(f"{reference} is missing: run `agentcell image bootstrap`")
    return reference
