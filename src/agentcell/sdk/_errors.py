"""What the SDK raises: the host service's answers as classes of the one error tree.

Every error the service sends is ``{"error", "reason", "fix"}`` with a status; the SDK keeps
all three (``what``, ``reason``, ``fix``) and the status, and chooses the class from the status
and the reason. The classes that mirror the service's own (``SandboxNotFound``,
``TemplateNotFound``, ...) carry the same names, parents and exit codes as those of
``agentcell.daemon.contract``, so one drawing in ``agentcell.errors`` covers both sides of the
wire. Transport failures are translated here too, once, where they enter.
"""

from __future__ import annotations

import json

from agentcell.errors import Error, InvalidInput, Unreachable

__all__ = [
    "AuthenticationFailed",
    "CommandNotFound",
    "CommandTimeout",
    "DaemonUnavailable",
    "FileRefused",
    "InvalidRequest",
    "PoolExhausted",
    "QuotaExceeded",
    "SandboxConflict",
    "SandboxError",
    "SandboxNotFound",
    "TemplateNotFound",
    "TimeoutRefused",
    "error_from_response",
]


class _Answered:
    """What the service said: the HTTP status and its snake_case ``reason``."""

    status: int = 0
    reason: str = ""


class SandboxError(Error, _Answered):
    """The host service failed a request or answered something the SDK cannot read."""


class DaemonUnavailable(Unreachable, _Answered):
    """The host service does not answer (not running, wrong address, or its CA is missing)."""

    service = "host service"


class AuthenticationFailed(Error, _Answered):
    """The service refused the token (none, unknown, or revoked): HTTP 401."""

    exit_code = 2


class InvalidRequest(InvalidInput, _Answered):
    """The service refused the request's input (400 or 422) for a reason no class below names."""


class SandboxNotFound(Error, _Answered):
    """No such sandbox for this token (unknown, or another tenant's): HTTP 404."""

    exit_code = 2


class TemplateNotFound(Error, _Answered):
    """No such template for this token's tenant: HTTP 404."""

    exit_code = 2


class CommandNotFound(Error, _Answered):
    """No such command in this sandbox: HTTP 404."""

    exit_code = 2


class CommandTimeout(Error, _Answered):
    """A client-side wait for a background command ran out; the command still runs."""


class SandboxConflict(Error, _Answered):
    """The sandbox is not running (expired, killed, dead): HTTP 409."""

    exit_code = 2


class TimeoutRefused(Error, _Answered):
    """A TTL over the template's maximum, or not positive: HTTP 400."""

    exit_code = 2


class FileRefused(Error, _Answered):
    """A path outside the cell's tmpfs mounts, a ``..`` or symlink on the way, a file too
    large for its tmpfs (413), or no such file (404); ``reason`` says which."""

    exit_code = 2


class QuotaExceeded(Error, _Answered):
    """The tenant's quota cannot hold another cell: HTTP 429."""

    exit_code = 2


class PoolExhausted(Error, _Answered):
    """The template's pool has handed out its maximum: HTTP 429."""

    exit_code = 2


class CellUnverified(Error, _Answered):
    """The cell started for the sandbox failed ``verify`` and was destroyed: HTTP 503."""

    exit_code = 1


# The service's reasons (daemon/app.py's problem_of), each the one class it means.
_BY_REASON: dict[str, type[Error]] = {
    "bad_token": AuthenticationFailed,
    "sandbox_not_found": SandboxNotFound,
    "template_not_found": TemplateNotFound,
    "command_not_found": CommandNotFound,
    "sandbox_not_running": SandboxConflict,
    "timeout_refused": TimeoutRefused,
    "quota_exceeded": QuotaExceeded,
    "pool_exhausted": PoolExhausted,
    "cell_failed_verify": CellUnverified,
    "engine_unavailable": DaemonUnavailable,
    "storage_unavailable": DaemonUnavailable,
}


def _class_for(status: int, reason: str, *, file_route: bool) -> type[Error]:
    if reason in _BY_REASON:
        return _BY_REASON[reason]
    if file_route and status in (400, 404, 413):
        return FileRefused  # a path refused, not found, or a file too large for its tmpfs
    if status == 401:
        return AuthenticationFailed
    if status == 404:
        return SandboxNotFound
    if status == 409:
        return SandboxConflict
    if status == 429:
        return QuotaExceeded
    if status in (400, 413, 422):
        return InvalidRequest
    if status == 503:
        return DaemonUnavailable
    return SandboxError


def error_from_response(status: int, body: bytes, *, what_was_asked: str) -> Error:
    """The error for an answer with a status of 400 or more: the service's own words when the
    body is its error document, else the status and as much of the body as is printable.
    ``what_was_asked`` is ``METHOD PATH``; a refusal on the files routes is a
    :class:`FileRefused` whatever its reason."""
    what, reason, fix = "", "", None
    try:
        document = json.loads(body)
    except ValueError:
        document = None
    if isinstance(document, dict) and isinstance(document.get("error"), str):
        what = document["error"]
        reason = str(document.get("reason") or "")
        fix_text = document.get("fix")
        fix = fix_text if isinstance(fix_text, str) and fix_text else None
    else:
        shown = body[:200].decode("utf-8", "replace").strip()
        what = f"{what_was_asked}: HTTP {status}" + (f": {shown}" if shown else "")
    file_route = "/files" in what_was_asked.partition("?")[0]
    cls = _class_for(status, reason, file_route=file_route)
    error = cls(what, fix=fix)
    if isinstance(error, _Answered):
        error.status = status
        error.reason = reason
    return error


def unreachable(where: str, exc: BaseException, *, fix: str | None = None) -> DaemonUnavailable:
    """The service at ``where`` could not be reached (``exc`` is the OS or TLS error)."""
    return DaemonUnavailable(
        f"cannot reach the agentcell host service at {where}: {exc}",
        fix=fix or "start it with `agentcell daemon serve`, or set AGENTCELL_DAEMON_URL",
    )
