"""runtime/docker/client: each SDK failure becomes one agentcell error. No engine needed: the
SDK's exceptions are raised as the SDK raises them, and the engines asked for do not exist."""

from __future__ import annotations

import gc
import warnings

import docker.errors
import pytest
import requests
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
from agentcell.runtime.docker.client import connect, translated


def _api_error(cls: type[docker.errors.APIError], status: int, text: str) -> Exception:
    response = requests.Response()
    response.status_code = status
    return cls(f"{status} Client Error", response=response, explanation=text)


@pytest.mark.parametrize(
    ("docker_host", "reason"),
    [
        ("unix:///nonexistent.sock", "no such file or directory"),
        ("tcp://127.0.0.1:1", "connection refused"),
    ],
)
def test_a_dead_engine_is_one_clear_error(docker_host: str, reason: str) -> None:
    with pytest.raises(EngineUnavailable) as caught:
        connect({"DOCKER_HOST": docker_host}, timeout=5)
    with warnings.catch_warnings():
        # docker-py leaves the socket of a failed unix connect to the garbage collector.
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
    assert caught.value.what == f"cannot reach the Docker Engine at {docker_host}: {reason}"
    assert caught.value.fix is not None and "DOCKER_HOST" in caught.value.fix
    assert caught.value.exit_code == 3


def test_an_address_that_names_no_engine_is_engine_unavailable() -> None:
    with pytest.raises(EngineUnavailable, match="at bogus://x: Invalid bind address"):
        connect({"DOCKER_HOST": "bogus://x"})


def test_an_engine_lost_mid_command_names_what_was_being_done() -> None:
    lost = requests.exceptions.ConnectionError(
        urllib3.exceptions.ProtocolError("Connection aborted.", ConnectionResetError(104, "x"))
    )
    with pytest.raises(EngineUnavailable) as caught, translated("list cells"):
        raise lost
    assert caught.value.what == (
        "cannot reach the Docker Engine (it stopped answering during: list cells): x"
    )
    assert caught.value.__cause__ is lost


def test_a_timeout_says_timed_out() -> None:
    with (
        pytest.raises(EngineUnavailable, match=r"\): timed out\n"),
        translated("inspect", subject="c"),
    ):
        raise requests.exceptions.ReadTimeout("read timed out")


def _translated(exc: Exception, action: str, subject: str = "") -> Error:
    """What ``translated()`` turns ``exc``, raised inside it, into."""
    with pytest.raises(Error) as caught, translated(action, subject=subject):
        raise exc
    assert caught.value.__cause__ is exc
    return caught.value


def test_a_missing_image_and_a_missing_container_are_told_apart() -> None:
    image = _translated(_api_error(docker.errors.ImageNotFound, 404, "no such image"), "pull", "x")
    assert isinstance(image, ImageNotFound)
    assert image.what == "pull x: image not found: no such image"
    container = _translated(_api_error(docker.errors.NotFound, 404, "no container"), "stop", "c")
    assert isinstance(container, CellNotFound)
    assert container.what == "stop c: not found: no container"


def test_a_refusal_is_a_backend_error() -> None:
    refused = _translated(_api_error(docker.errors.APIError, 500, "port is taken"), "start", "c")
    assert type(refused) is BackendError
    assert refused.what == "start c: the engine refused: port is taken"


def test_a_registry_the_engine_cannot_reach_is_registry_unavailable() -> None:
    text = 'Get "http://127.0.0.1:1/v2/": dial tcp 127.0.0.1:1: connect: connection refused'
    down = _translated(_api_error(docker.errors.APIError, 500, text), "pull image", "r")
    assert isinstance(down, RegistryUnavailable)
    assert down.what.startswith("cannot reach the registry (pull image r): the engine says: Get")
    assert down.exit_code == 3


def test_agentcell_errors_pass_through_unchanged() -> None:
    own = CellNotFound("no cell x")
    with pytest.raises(CellNotFound) as caught, translated("find"):
        raise own
    assert caught.value is own
