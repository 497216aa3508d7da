"""The SDK's public surface, its import cost, and the errors it makes of the service's
answers."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import agentcell.sdk
from agentcell.errors import Error, InvalidInput, Unreachable
from agentcell.sdk import (
    AuthenticationFailed,
    CellUnverified,
    CommandNotFound,
    DaemonUnavailable,
    FileRefused,
    InvalidRequest,
    PoolExhausted,
    QuotaExceeded,
    SandboxConflict,
    SandboxError,
    SandboxNotFound,
    TemplateNotFound,
    TimeoutRefused,
)
from agentcell.sdk._errors import error_from_response

HEAVY = ("pydantic", "docker", "typer", "rich", "cryptography", "aiohttp", "yaml")


def test_importing_the_sdk_loads_none_of_the_heavy_libraries() -> None:
    code = f"import sys, agentcell.sdk; print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    output = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert output.strip() == "[]"


def test_the_asyncio_client_loads_aiohttp_when_first_used() -> None:
    code = "import sys, agentcell.sdk as s; s.AsyncSandbox; print('aiohttp' in sys.modules)"
    output = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert output.strip() == "True"


def test_the_public_names_are_pinned() -> None:
    assert set(agentcell.sdk.__all__) >= {
        "Sandbox",
        "AsyncSandbox",
        "CommandResult",
        "CommandHandle",
        "SandboxInfo",
        "FileEntry",
    }
    for name in agentcell.sdk.__all__:
        assert getattr(agentcell.sdk, name) is not None


def _answer(status: int, reason: str = "", fix: str | None = "do this") -> bytes:
    return json.dumps({"error": f"it failed ({reason})", "reason": reason, "fix": fix}).encode()


@pytest.mark.parametrize(
    ("status", "reason", "asked", "cls"),
    [
        (401, "bad_token", "GET /v1/sandboxes", AuthenticationFailed),
        (404, "sandbox_not_found", "GET /v1/sandboxes/sbx-1", SandboxNotFound),
        (404, "template_not_found", "POST /v1/sandboxes", TemplateNotFound),
        (404, "command_not_found", "GET /v1/sandboxes/sbx-1/commands/c", CommandNotFound),
        (404, "not_found", "GET /v1/sandboxes/sbx-1/files", FileRefused),
        (404, "sandbox_not_found", "GET /v1/sandboxes/sbx-1/files", SandboxNotFound),
        (400, "bad_path", "PUT /v1/sandboxes/sbx-1/files", FileRefused),
        (413, "too_large", "PUT /v1/sandboxes/sbx-1/files", FileRefused),
        (409, "sandbox_not_running", "POST /v1/sandboxes/sbx-1/commands", SandboxConflict),
        (400, "timeout_refused", "POST /v1/sandboxes/sbx-1/timeout", TimeoutRefused),
        (400, "invalid_spec", "POST /v1/admin/cells/up", InvalidRequest),
        (422, "invalid_body", "POST /v1/sandboxes", InvalidRequest),
        (429, "pool_exhausted", "POST /v1/sandboxes", PoolExhausted),
        (429, "quota_exceeded", "POST /v1/sandboxes", QuotaExceeded),
        (503, "engine_unavailable", "POST /v1/sandboxes", DaemonUnavailable),
        (503, "cell_failed_verify", "POST /v1/sandboxes", CellUnverified),
        (500, "internal", "GET /v1/sandboxes", SandboxError),
    ],
)
def test_each_answer_becomes_its_class_with_the_service_s_words(
    status: int, reason: str, asked: str, cls: type[Error]
) -> None:
    error = error_from_response(status, _answer(status, reason), what_was_asked=asked)
    assert type(error) is cls
    assert isinstance(error, Error)
    assert error.what == f"it failed ({reason})"
    assert error.fix == "do this"
    assert (error.__dict__["status"], error.__dict__["reason"]) == (status, reason)


def test_an_answer_that_is_not_the_error_document_keeps_the_status() -> None:
    error = error_from_response(502, b"<html>bad gateway</html>", what_was_asked="GET /v1/x")
    assert isinstance(error, SandboxError)
    assert error.what == "GET /v1/x: HTTP 502: <html>bad gateway</html>"


def test_the_families_are_the_ones_the_cli_exits_by() -> None:
    assert issubclass(DaemonUnavailable, Unreachable)
    assert DaemonUnavailable("x").exit_code == 3
    assert issubclass(InvalidRequest, InvalidInput)
    assert SandboxNotFound("x").exit_code == 2
