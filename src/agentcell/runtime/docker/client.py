"""Connecting to the Docker Engine, and translating its errors into agentcell's.

This is the one place docker SDK (and the ``requests``/``urllib3`` underneath it) exceptions
enter agentcell: :func:`translated` turns them into :mod:`agentcell.errors`, so nothing above
this module ever sees a ``docker.errors`` type. Code that needs to tell outcomes apart catches
ours: :class:`~agentcell.errors.CellNotFound` for an absent container, network or exec,
:class:`~agentcell.errors.ImageNotFound` for an absent image,
:class:`~agentcell.errors.BackendError` for a refusal.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import docker
import docker.errors
import requests.exceptions
import urllib3.exceptions

from agentcell.errors import (
    BackendError,
    CellNotFound,
    EngineUnavailable,
    Error,
    ImageNotFound,
    RegistryUnavailable,
)

__all__ = ["DEFAULT_API_VERSION", "connect", "registry_unreachable", "translated"]

# Docker 20.10 speaks API 1.41; pinning it avoids a version round trip on every connect.
DEFAULT_API_VERSION = "1.41"
DEFAULT_ENGINE = "unix:///var/run/docker.sock"

ENGINE_FIX = "start dockerd (scripts/setup.sh does it), or point DOCKER_HOST at a running engine"

# The engine reports a registry it cannot reach only as text: Go's dialer and resolver
# messages ("dial tcp 127.0.0.1:1: connect: connection refused", "no such host", ...).
_REGISTRY_DOWN = re.compile(
    r"dial tcp|connection refused|no such host|i/o timeout|network is unreachable"
    r"|TLS handshake timeout|Client\.Timeout exceeded"
)


def connect(environ: Mapping[str, str] | None = None, *, timeout: int = 120) -> docker.DockerClient:
    """Return a client for the engine named by ``DOCKER_HOST`` (default: the local socket).

    Raises:
        EngineUnavailable: the engine does not answer, or ``DOCKER_HOST`` names no engine.
    """
    env = dict(os.environ if environ is None else environ)
    version = env.get("AGENTCELL_DOCKER_API_VERSION", DEFAULT_API_VERSION)
    address = env.get("DOCKER_HOST") or DEFAULT_ENGINE
    with translated("connect", engine=address):
        client = docker.DockerClient.from_env(environment=env, version=version, timeout=timeout)
        try:
            client.ping()
        except BaseException:
            client.close()
            raise
    return client


@contextmanager
def translated(action: str, *, subject: str = "", engine: str | None = None) -> Iterator[None]:
    """Run a block of engine calls, turning SDK errors into agentcell errors naming ``action``.

    ``engine`` is the engine's address, named in the message when it cannot be reached.

    Raises:
        EngineUnavailable: the engine cannot be reached, or stopped answering.
        ImageNotFound: an image the block asked for is not on this host.
        CellNotFound: a container, network or exec the block asked for does not exist.
        RegistryUnavailable: the engine could not reach a registry to pull or push.
        BackendError: the engine refused the call.
    """
    label = f"{action} {subject}".strip()
    try:
        yield
    except Error:
        raise
    except docker.errors.ImageNotFound as exc:
        raise ImageNotFound(
            f"{label}: image not found: {_explanation(exc)}",
            fix="run `agentcell image bootstrap`, or build or pull the image first",
        ) from exc
    except docker.errors.NotFound as exc:
        raise CellNotFound(f"{label}: not found: {_explanation(exc)}") from exc
    except docker.errors.APIError as exc:
        message = _explanation(exc)
        raise (
            registry_unreachable(label, message)
            or BackendError(f"{label}: the engine refused: {message}")
        ) from exc
    except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError) as exc:
        raise _unavailable(label, exc, engine) from exc
    except docker.errors.DockerException as exc:
        if engine is not None:  # from_env: DOCKER_HOST or the TLS settings name no engine
            raise EngineUnavailable(
                f"cannot reach the Docker Engine at {engine}: {exc}", fix=ENGINE_FIX
            ) from exc
        raise BackendError(f"{label}: {exc}") from exc


def registry_unreachable(label: str, message: str) -> RegistryUnavailable | None:
    """:class:`RegistryUnavailable` when an engine's error ``message`` (an API error, or an
    error in a pull or push progress stream) says it could not reach a registry; else None."""
    if not _REGISTRY_DOWN.search(message):
        return None
    return RegistryUnavailable(
        f"cannot reach the registry ({label}): the engine says: {message}",
        fix="start the registry (scripts/setup.sh starts the one on 127.0.0.1:5000), "
        "or check the registry host and port in the image reference",
    )


def _explanation(exc: docker.errors.APIError) -> str:
    return str(exc.explanation or exc)


def _unavailable(label: str, exc: BaseException, engine: str | None) -> EngineUnavailable:
    reason = _root_reason(exc)
    if engine is not None:
        return EngineUnavailable(
            f"cannot reach the Docker Engine at {engine}: {reason}", fix=ENGINE_FIX
        )
    return EngineUnavailable(
        f"cannot reach the Docker Engine (it stopped answering during: {label}): {reason}",
        fix=ENGINE_FIX,
    )


def _root_reason(exc: BaseException) -> str:
    """The operating system's reason under a ``requests``/``urllib3`` error, e.g. "connection
    refused", instead of the nested reprs the libraries print."""
    if isinstance(exc, requests.exceptions.Timeout | urllib3.exceptions.ReadTimeoutError):
        return "timed out"
    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    while pending:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        if (
            isinstance(current, OSError)
            and current.strerror
            and not isinstance(current, requests.exceptions.RequestException)
        ):
            return current.strerror.lower()
        pending.extend(arg for arg in current.args if isinstance(arg, BaseException))
        pending.extend(e for e in (current.__cause__, current.__context__) if e is not None)
    return str(exc)
