"""Connecting to the Docker Engine, and translating its errors into agentcell's.

This is where docker SDK exceptions enter agentcell: :func:`translated` turns them into
:mod:`agentcell.errors` once, so nothing above this layer ever sees a ``docker.errors`` type.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import docker
import docker.errors
import requests.exceptions

from agentcell.errors import BackendError, CellNotFound, EngineUnavailable, Error, ImageError

__all__ = ["connect", "translated"]

# Docker 20.10 speaks API 1.41; pinning it avoids a version round trip on every connect.
DEFAULT_API_VERSION = "1.41"


def connect(environ: Mapping[str, str] | None = None, *, timeout: int = 120) -> docker.DockerClient:
    """Return a client for the engine named by ``DOCKER_HOST`` (default: the local socket).

    Raises:
        EngineUnavailable: the engine does not answer.
    """
    env = dict(os.environ if environ is None else environ)
    version = env.get("AGENTCELL_DOCKER_API_VERSION", DEFAULT_API_VERSION)
    try:
        client = docker.DockerClient.from_env(environment=env, version=version, timeout=timeout)
        client.ping()
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        raise EngineUnavailable(
            f"cannot reach the Docker Engine: {exc}",
            fix="start dockerd (scripts/setup.sh does it) or set DOCKER_HOST",
        ) from exc
    return client


@contextmanager
def translated(action: str, *, subject: str = "") -> Iterator[None]:
    """Run a block of SDK calls, turning SDK errors into agentcell errors that name ``action``."""
    label = f"{action} {subject}".strip()
    try:
        yield
    except Error:
        raise
    except docker.errors.ImageNotFound as exc:
        raise ImageError(
            f"{label}: image not found: {exc.explanation or exc}",
            fix="run `agentcell image bootstrap` or check the image reference",
        ) from exc
    except docker.errors.NotFound as exc:
        raise CellNotFound(f"{label}: not found: {exc.explanation or exc}") from exc
    except docker.errors.APIError as exc:
        raise BackendError(f"{label}: the engine refused: {exc.explanation or exc}") from exc
    except docker.errors.DockerException as exc:
        raise BackendError(f"{label}: {exc}") from exc
    except requests.exceptions.RequestException as exc:
        raise EngineUnavailable(
            f"{label}: lost the Docker Engine: {exc}", fix="check that dockerd is running"
        ) from exc
