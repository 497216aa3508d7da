"""The host service's HTTP API (aiohttp): one route table, one authentication middleware.

Each :class:`Route` declares its audience:

- ``tenant``: a tenant token (acting for its own tenant) or the admin token (any tenant);
- ``admin``: the admin token only;
- ``public``: anyone (``/healthz``, ``/openapi.json``).

The middleware resolves the bearer token to a :class:`~agentcell.daemon.tokens.Principal`
before any handler runs; no handler looks at a credential, and a matched route without an
audience is refused. The caller's tenant (None for the admin token) is passed to every call
of the :class:`~agentcell.daemon.contract.SandboxEngine`, which answers another tenant's
sandbox exactly as an unknown one (404), so the answer is no oracle.

Handlers are thin: they validate the body (:mod:`agentcell.daemon.api`), call the engine and
shape the answer. Engine errors become the statuses of docs/sandbox-api.md in one place
(:func:`problem_of`); anything unexpected is a 500 with a log line and no traceback. JSON
bodies are bounded (``max_body_bytes``) and must arrive within the body timeout; the file
upload is the one route whose body is not read whole: it is handed to the engine chunk by
chunk, each within the body timeout. Command output is NDJSON, a line per frame, written as
the engine produces it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, TypeVar

import pydantic
from aiohttp import web

from agentcell.controlplane.listeners import GuardedConnection
from agentcell.daemon import api
from agentcell.daemon.contract import (
    CellUnverified,
    CommandNotFound,
    FileRefused,
    PoolExhausted,
    QuotaExceeded,
    SandboxConflict,
    SandboxEngine,
    SandboxNotFound,
    TemplateNotFound,
    TimeoutRefused,
)
from agentcell.daemon.store import ServiceStorageError
from agentcell.daemon.tokens import Principal, TokenAuthority, bearer_token, validate_tenant
from agentcell.errors import (
    AdmissionError,
    BackendError,
    CellConflict,
    CellNotFound,
    Error,
    InvalidInput,
    SpecError,
    TrustError,
    Unreachable,
)

__all__ = [
    "ROUTES",
    "CellOperations",
    "HTTPProblem",
    "QueryParam",
    "Route",
    "build_app",
    "problem_of",
]

log = logging.getLogger("agentcell.daemon")

Audience = Literal["tenant", "admin", "public"]
"""Who may call a route: ``tenant`` (a tenant token, or the admin token for any tenant),
``admin`` (the admin token), ``public`` (anyone)."""
Body = Literal["json", "raw"]
Answer = Literal["json", "ndjson", "bytes", "none"]
M = TypeVar("M", bound=pydantic.BaseModel)

NDJSON = "application/x-ndjson"
MAX_WAIT_S = 300.0
UPLOAD_CHUNK = 256 * 1024
DEFAULT_BODY_TIMEOUT_S = 30.0
DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class QueryParam:
    """A documented query parameter."""

    name: str
    description: str
    kind: Literal["string", "integer", "number"] = "string"
    required: bool = False


@dataclass(frozen=True)
class Route:
    """One endpoint: how it is reached, who may call it, what it takes and gives.

    ``body`` says how a request body is taken (``json``: the ``request`` model, read whole
    under the size limit; ``raw``: streamed to the engine). ``answer`` says what comes back:
    ``json`` (the ``response`` model), ``ndjson`` (command frames), ``bytes`` (a file) or
    ``none`` (204). ``status`` is the success status.
    """

    method: Literal["GET", "POST", "PUT", "DELETE"]
    path: str
    handler: str
    audience: Audience
    summary: str
    request: type[pydantic.BaseModel] | None = None
    response: type[pydantic.BaseModel] | None = None
    query: tuple[QueryParam, ...] = ()
    body: Body = "json"
    answer: Answer = "json"
    status: int = 200


_PATH_Q = QueryParam("path", "A path inside one of the cell's tmpfs mounts.", required=True)
_WAIT_Q = QueryParam("wait", f"Wait up to this many seconds (at most {MAX_WAIT_S:g}).", "number")
_AFTER_Q = QueryParam("after", "Frames with a greater seq (default -1: all).", "integer")
_TENANT_Q = QueryParam("tenant", "Only this tenant.")

ROUTES: tuple[Route, ...] = (
    Route("GET", "/healthz", "healthz", "public", "Liveness: 200 while the service runs.",
          response=api.Health),
    Route("GET", "/openapi.json", "openapi", "public", "This document."),
    Route("GET", "/v1/templates", "templates", "tenant",
          "The caller's tenant's sandbox templates (every tenant's for the admin token).",
          response=api.TemplateList),
    Route("POST", "/v1/sandboxes", "create_sandbox", "tenant",
          "A never-used sandbox: from the warm pool, else a cold start (warm says which).",
          api.CreateSandboxRequest, api.SandboxBody, status=201),
    Route("GET", "/v1/sandboxes", "list_sandboxes", "tenant",
          "The caller's tenant's sandboxes (every tenant's for the admin token).",
          response=api.SandboxList),
    Route("GET", "/v1/sandboxes/{id}", "get_sandbox", "tenant", "One sandbox.",
          response=api.SandboxBody),
    Route("DELETE", "/v1/sandboxes/{id}", "kill_sandbox", "tenant",
          "Kill a sandbox: its cell is destroyed, its commands end (sandbox_killed).",
          answer="none", status=204),
    Route("POST", "/v1/sandboxes/{id}/timeout", "set_timeout", "tenant",
          "Set the sandbox's TTL, counted from now (at most the template's maximum).",
          api.TimeoutRequest, api.SandboxBody),
    Route("POST", "/v1/sandboxes/{id}/commands", "run_command", "tenant",
          "Start a command: NDJSON frames until its end (foreground), or the Command "
          "(background).", api.CommandRequestBody, api.CommandBody, answer="ndjson"),
    Route("GET", "/v1/sandboxes/{id}/commands", "list_commands", "tenant",
          "The sandbox's commands.", response=api.CommandList),
    Route("GET", "/v1/sandboxes/{id}/commands/{cid}", "get_command", "tenant",
          "One command; with ?wait, once it ended or the wait is over.",
          response=api.CommandBody, query=(_WAIT_Q,)),
    Route("GET", "/v1/sandboxes/{id}/commands/{cid}/output", "command_output", "tenant",
          "NDJSON frames with seq > after, live until the end frame (always the last).",
          query=(_AFTER_Q,), answer="ndjson"),
    Route("POST", "/v1/sandboxes/{id}/commands/{cid}/kill", "kill_command", "tenant",
          "Kill the command's process group.", response=api.CommandBody),
    Route("PUT", "/v1/sandboxes/{id}/files", "write_file", "tenant",
          "Write a file from the raw body, streamed (bounded by the tmpfs).",
          response=api.FileWritten, query=(_PATH_Q,), body="raw"),
    Route("GET", "/v1/sandboxes/{id}/files", "read_file", "tenant",
          "A file's bytes, streamed.", query=(_PATH_Q,), answer="bytes"),
    Route("GET", "/v1/sandboxes/{id}/files/list", "list_files", "tenant",
          "A directory's entries.", response=api.FileList, query=(_PATH_Q,)),
    Route("DELETE", "/v1/sandboxes/{id}/files", "remove_file", "tenant",
          "Remove a file or an empty directory.", query=(_PATH_Q,), answer="none",
          status=204),
    Route("POST", "/v1/admin/cells/up", "cells_up", "admin",
          "`agentcell up` for the given spec files (the CLI's thin path).",
          api.UpRequest, api.UpResult),
    Route("POST", "/v1/admin/cells/down", "cells_down", "admin",
          "`agentcell down TENANT/NAME`.", api.DownRequest, api.DownResult),
    Route("GET", "/v1/admin/cells", "cells", "admin", "What `agentcell ps` shows.",
          response=api.CellList, query=(_TENANT_Q,)),
)  # fmt: skip


class CellOperations(Protocol):
    """The thin path's ``up``/``down``/``ps`` (the admin routes), off the event loop."""

    async def up(self, files: Sequence[api.SpecFile], *, policy: str) -> api.UpResult: ...

    async def down(self, tenant: str, name: str, *, timeout_s: int) -> bool: ...

    async def cells(self, tenant: str | None) -> list[api.CellItem]: ...


class HTTPProblem(Exception):
    """An error answer; raised by handlers and the middleware, turned into JSON once."""

    def __init__(
        self,
        status: int,
        error: str,
        *,
        reason: str,
        fix: str | None = None,
        close: bool = False,
    ) -> None:
        super().__init__(error)
        self.status = status
        self.body = api.ErrorBody(error=error, reason=reason, fix=fix)
        self.close = close


_NOT_FOUND_FIX = "list what exists with GET /v1/sandboxes (and .../commands, /v1/templates)"


def problem_of(exc: Error) -> HTTPProblem:
    """The answer for an agentcell error (docs/sandbox-api.md, "Errors")."""
    status, reason = 400, "bad_request"
    if isinstance(exc, SandboxNotFound):
        status, reason = 404, "sandbox_not_found"
    elif isinstance(exc, TemplateNotFound):
        status, reason = 404, "template_not_found"
    elif isinstance(exc, CommandNotFound):
        status, reason = 404, "command_not_found"
    elif isinstance(exc, CellNotFound):
        status, reason = 404, "cell_not_found"
    elif isinstance(exc, FileRefused):
        reason = exc.reason
        status = {"not_found": 404, "too_large": 413}.get(reason, 400)
    elif isinstance(exc, SandboxConflict):
        status, reason = 409, "sandbox_not_running"
    elif isinstance(exc, CellConflict):
        status, reason = 409, "cell_conflict"
    elif isinstance(exc, TimeoutRefused):
        status, reason = 400, "timeout_refused"
    elif isinstance(exc, QuotaExceeded):
        status, reason = 429, "quota_exceeded"
    elif isinstance(exc, PoolExhausted):
        status, reason = 429, "pool_exhausted"
    elif isinstance(exc, CellUnverified):
        status, reason = 503, "cell_failed_verify"
    elif isinstance(exc, (Unreachable, BackendError)):
        status, reason = 503, "engine_unavailable"
    elif isinstance(exc, ServiceStorageError):
        status, reason = 503, "storage_unavailable"
    elif isinstance(exc, SpecError):
        reason = "invalid_spec"
    elif isinstance(exc, AdmissionError):
        reason = "admission_refused"
    elif isinstance(exc, TrustError):
        reason = "image_not_trusted"
    elif isinstance(exc, InvalidInput):
        reason = "bad_input"
    fix = exc.fix
    if fix is None and status == 404:
        fix = _NOT_FOUND_FIX
    if isinstance(exc, SpecError) and exc.problems:
        what = exc.diagnostics()  # the headline, then each problem with its place and fix
    else:
        what = f"{exc.where}: {exc.what}" if exc.where else exc.what
    return HTTPProblem(status, what, reason=reason, fix=fix)


def _json(model: pydantic.BaseModel, status: int = 200) -> web.Response:
    return web.Response(
        body=model.model_dump_json().encode(), status=status, content_type="application/json"
    )


def _problem_response(problem: HTTPProblem) -> web.Response:
    answer = _json(problem.body, status=problem.status)
    if problem.close:
        answer.force_close()
    return answer


PRINCIPAL_KEY = web.RequestKey("principal", Principal)


def _principal(request: web.Request) -> Principal:
    """The caller the middleware authenticated.

    Raises:
        HTTPProblem: 500 when the route has no authenticated caller (a handler wired to a
            public route fails closed).
    """
    principal = request.get(PRINCIPAL_KEY)
    if not isinstance(principal, Principal):
        log.error("%s %s needs a caller but is a public route", request.method, request.path)
        raise HTTPProblem(500, "internal error", reason="internal")
    return principal


def _query(request: web.Request, name: str) -> str:
    value = request.query.get(name)
    if value is None or value == "":
        raise HTTPProblem(
            400, f"the query parameter {name} is missing", reason="missing_parameter",
            fix=f"add ?{name}=... (see /openapi.json)",
        )  # fmt: skip
    return value


def _number(request: web.Request, name: str, *, default: float, low: float, high: float) -> float:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or not low <= value <= high:
        raise HTTPProblem(
            400, f"{name} must be a number from {low:g} to {high:g}", reason="bad_parameter"
        )
    return value


def _after(request: web.Request) -> int:
    raw = request.query.get("after")
    if raw is None:
        return -1
    if not (raw == "-1" or raw.isdigit()) or len(raw) > 16:
        raise HTTPProblem(400, "after must be an integer >= -1", reason="bad_parameter")
    return int(raw)


class Handlers:
    """The endpoint implementations over one engine and one token authority."""

    def __init__(
        self,
        engine: SandboxEngine,
        tokens: TokenAuthority,
        *,
        cells: CellOperations | None,
        body_timeout_s: float,
    ) -> None:
        self.engine = engine
        self.tokens = tokens
        self.cell_operations = cells
        self.body_timeout_s = body_timeout_s

    # -- authentication -------------------------------------------------------------------

    async def authenticate(self, request: web.Request, audience: Audience) -> None:
        """Enforce a route's audience; the caller is kept on the request.

        Raises:
            HTTPProblem: 401 without a valid token, or with a tenant token on an admin route.
        """
        if audience == "public":
            return
        token = bearer_token(request.headers.get("Authorization"))
        principal = None
        if token is not None:
            # A token already found valid, with nothing committed since, is known without a
            # database read on a thread (a revocation is a commit).
            principal = self.tokens.known(token)
            if principal is None:
                principal = await asyncio.to_thread(self.tokens.identify, token)
        if principal is None:
            raise HTTPProblem(
                401,
                "this endpoint needs a valid token",
                reason="bad_token",
                fix="send 'Authorization: Bearer <token>' with a token from "
                "`agentcell daemon token create TENANT` (or the service's admin.token)",
            )
        if audience == "admin" and not principal.is_admin:
            raise HTTPProblem(
                401,
                "this endpoint needs the service's admin token",
                reason="admin_only",
                fix="use the token in <state>/daemon/admin.token on the service's host",
            )
        request[PRINCIPAL_KEY] = principal

    # -- bodies ---------------------------------------------------------------------------

    async def _model(self, request: web.Request, model: type[M]) -> M:
        try:
            async with asyncio.timeout(self.body_timeout_s):
                raw = await request.read()
        except TimeoutError as exc:
            raise HTTPProblem(
                408,
                f"the request body did not arrive within {self.body_timeout_s:g} s",
                reason="request_timeout",
                close=True,
            ) from exc
        return model.model_validate_json(raw or b"{}")

    async def _chunks(self, request: web.Request) -> AsyncIterator[bytes]:
        """The raw body, chunk by chunk, each within the body timeout."""
        while True:
            try:
                async with asyncio.timeout(self.body_timeout_s):
                    chunk = await request.content.read(UPLOAD_CHUNK)
            except TimeoutError as exc:
                raise HTTPProblem(
                    408,
                    f"no part of the body arrived within {self.body_timeout_s:g} s",
                    reason="request_timeout",
                    close=True,
                ) from exc
            if not chunk:
                return
            yield chunk

    # -- public ---------------------------------------------------------------------------

    async def healthz(self, request: web.Request) -> web.StreamResponse:
        return _json(api.Health())

    async def openapi(self, request: web.Request) -> web.StreamResponse:
        from agentcell.daemon.openapi import document

        return web.json_response(document(ROUTES))

    # -- templates and sandboxes ----------------------------------------------------------

    async def templates(self, request: web.Request) -> web.StreamResponse:
        tenant = _principal(request).tenant
        items = [api.TemplateBody.of(t) for t in self.engine.templates(tenant)]
        return _json(api.TemplateList(items=items))

    async def create_sandbox(self, request: web.Request) -> web.StreamResponse:
        principal = _principal(request)
        body = await self._model(request, api.CreateSandboxRequest)
        as_tenant = body.tenant
        if not principal.is_admin and as_tenant is not None:
            if as_tenant != principal.tenant:
                raise HTTPProblem(
                    400,
                    "a tenant token makes sandboxes of its own tenant only",
                    reason="tenant_not_allowed",
                    fix="leave out 'tenant' (it is for the admin token)",
                )
            as_tenant = None
        info = await self.engine.create(
            principal.tenant, body.template, timeout_s=body.timeout_s, as_tenant=as_tenant
        )
        return _json(api.SandboxBody.of(info), status=201)

    async def list_sandboxes(self, request: web.Request) -> web.StreamResponse:
        tenant = _principal(request).tenant
        items = [api.SandboxBody.of(s) for s in self.engine.sandboxes(tenant)]
        return _json(api.SandboxList(items=items))

    async def get_sandbox(self, request: web.Request) -> web.StreamResponse:
        tenant = _principal(request).tenant
        return _json(api.SandboxBody.of(self.engine.sandbox(tenant, request.match_info["id"])))

    async def kill_sandbox(self, request: web.Request) -> web.StreamResponse:
        await self.engine.kill(_principal(request).tenant, request.match_info["id"])
        return web.Response(status=204)

    async def set_timeout(self, request: web.Request) -> web.StreamResponse:
        tenant = _principal(request).tenant
        body = await self._model(request, api.TimeoutRequest)
        info = await self.engine.set_timeout(tenant, request.match_info["id"], body.timeout_s)
        return _json(api.SandboxBody.of(info))

    # -- commands -------------------------------------------------------------------------

    async def run_command(self, request: web.Request) -> web.StreamResponse:
        tenant = _principal(request).tenant
        sandbox_id = request.match_info["id"]
        body = await self._model(request, api.CommandRequestBody)
        info = await self.engine.run(tenant, sandbox_id, body.request())
        if body.background:
            return _json(api.CommandBody.of(info))
        return await self._stream_frames(request, tenant, sandbox_id, info.id, after=-1)

    async def list_commands(self, request: web.Request) -> web.StreamResponse:
        tenant = _principal(request).tenant
        items = self.engine.commands(tenant, request.match_info["id"])
        return _json(api.CommandList(items=[api.CommandBody.of(c) for c in items]))

    async def get_command(self, request: web.Request) -> web.StreamResponse:
        tenant = _principal(request).tenant
        sandbox_id, command_id = request.match_info["id"], request.match_info["cid"]
        wait = _number(request, "wait", default=0.0, low=0.0, high=MAX_WAIT_S)
        if wait > 0:
            info = await self.engine.wait(tenant, sandbox_id, command_id, wait)
        else:
            info = self.engine.command(tenant, sandbox_id, command_id)
        return _json(api.CommandBody.of(info))

    async def command_output(self, request: web.Request) -> web.StreamResponse:
        tenant = _principal(request).tenant
        sandbox_id, command_id = request.match_info["id"], request.match_info["cid"]
        after = _after(request)
        self.engine.command(tenant, sandbox_id, command_id)  # 404 before the stream starts
        return await self._stream_frames(request, tenant, sandbox_id, command_id, after=after)

    async def _stream_frames(
        self,
        request: web.Request,
        tenant: str | None,
        sandbox_id: str,
        command_id: str,
        *,
        after: int,
    ) -> web.StreamResponse:
        frames = self.engine.frames(tenant, sandbox_id, command_id, after=after)
        answer = web.StreamResponse(status=200, headers={"Content-Type": NDJSON})
        answer.headers["Cache-Control"] = "no-store"
        await answer.prepare(request)
        # A client that goes away (ConnectionError, or the handler cancelled) leaves the
        # command running; it can read on with ?after=N.
        try:
            async for frame in frames:
                await answer.write(api.frame_line(frame))
        except Error as exc:
            log.warning("output of %s/%s ended early: %s", sandbox_id, command_id, exc.what)
            answer.force_close()
            return answer
        finally:
            await _close(frames)
        await answer.write_eof()
        return answer

    async def kill_command(self, request: web.Request) -> web.StreamResponse:
        tenant = _principal(request).tenant
        info = await self.engine.kill_command(
            tenant, request.match_info["id"], request.match_info["cid"]
        )
        return _json(api.CommandBody.of(info))

    # -- files ----------------------------------------------------------------------------

    async def write_file(self, request: web.Request) -> web.StreamResponse:
        tenant = _principal(request).tenant
        path = _query(request, "path")
        size = await self.engine.write_file(
            tenant, request.match_info["id"], path, self._chunks(request)
        )
        return _json(api.FileWritten(path=path, size=size))

    async def read_file(self, request: web.Request) -> web.StreamResponse:
        tenant = _principal(request).tenant
        path = _query(request, "path")
        chunks = self.engine.read_file(tenant, request.match_info["id"], path)
        try:
            # The first chunk comes before the status: a missing file is still a 404.
            first = await anext(aiter(chunks), None)
        except BaseException:
            await _close(chunks)
            raise
        answer = web.StreamResponse(
            status=200, headers={"Content-Type": "application/octet-stream"}
        )
        await answer.prepare(request)
        try:
            if first:
                await answer.write(first)
            async for chunk in chunks:
                await answer.write(chunk)
        except Error as exc:
            log.warning("reading %s ended early: %s", path, exc.what)
            answer.force_close()  # the client sees a cut body, never a short file as whole
            return answer
        finally:
            await _close(chunks)
        await answer.write_eof()
        return answer

    async def list_files(self, request: web.Request) -> web.StreamResponse:
        tenant = _principal(request).tenant
        path = _query(request, "path")
        entries = await self.engine.list_files(tenant, request.match_info["id"], path)
        return _json(api.FileList(items=[api.FileEntryBody.of(e) for e in entries]))

    async def remove_file(self, request: web.Request) -> web.StreamResponse:
        tenant = _principal(request).tenant
        path = _query(request, "path")
        await self.engine.remove_file(tenant, request.match_info["id"], path)
        return web.Response(status=204)

    # -- admin: the thin path -------------------------------------------------------------

    def _operations(self) -> CellOperations:
        if self.cell_operations is None:
            raise HTTPProblem(
                503,
                "this service does not run cells for `up`/`down`/`ps`",
                reason="engine_unavailable",
                fix="run `agentcell up`/`down`/`ps` without the service",
            )
        return self.cell_operations

    async def cells_up(self, request: web.Request) -> web.StreamResponse:
        body = await self._model(request, api.UpRequest)
        return _json(await self._operations().up(body.files, policy=body.policy))

    async def cells_down(self, request: web.Request) -> web.StreamResponse:
        body = await self._model(request, api.DownRequest)
        removed = await self._operations().down(body.tenant, body.name, timeout_s=body.timeout_s)
        return _json(api.DownResult(tenant=body.tenant, agent=body.name, removed=removed))

    async def cells(self, request: web.Request) -> web.StreamResponse:
        tenant = request.query.get("tenant") or None
        if tenant is not None:
            validate_tenant(tenant)
        return _json(api.CellList(items=await self._operations().cells(tenant)))


async def _close(stream: AsyncIterator[object]) -> None:
    closer = getattr(stream, "aclose", None)
    if closer is not None:
        with contextlib.suppress(Exception):
            await closer()


_HTTP_REASONS = {
    404: ("no such endpoint", "not_found", "see /openapi.json for the routes"),
    405: ("this method is not allowed here", "method_not_allowed", "see /openapi.json"),
    413: ("the request body is too large", "too_large", "send a smaller body"),
}


@web.middleware
async def _errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """The outermost handler: every failure is one JSON error body, never a traceback.

    It also tells a connection from the TCP listener that a whole request head arrived,
    which stops its head timer until the answer is given.
    """
    connection = request.transport.get_protocol() if request.transport is not None else None
    if isinstance(connection, GuardedConnection):
        connection.request_started()
    try:
        return await handler(request)
    except HTTPProblem as problem:
        return _problem_response(problem)
    except pydantic.ValidationError as exc:
        errors = exc.errors()
        first = errors[0] if errors else None
        where = ".".join(str(part) for part in first["loc"]) if first else ""
        message = first["msg"] if first else "invalid"
        return _problem_response(
            HTTPProblem(
                422,
                f"invalid body: {where}: {message}" if where else f"invalid body: {message}",
                reason="invalid_body",
                fix="see /openapi.json for the request schema",
            )
        )
    except ServiceStorageError as exc:
        log.error("storage error: %s", exc.what)
        return _problem_response(problem_of(exc))
    except Error as exc:
        refusal = problem_of(exc)
        if refusal.status >= 500:
            log.error("%s %s: %s", request.method, request.path, exc.what)
        # An early refusal of an upload leaves the rest of its body unread: close after.
        refusal.close = request.method == "PUT"
        return _problem_response(refusal)
    except web.HTTPException as exc:
        if exc.status in _HTTP_REASONS:
            error, reason, fix = _HTTP_REASONS[exc.status]
            return _problem_response(HTTPProblem(exc.status, error, reason=reason, fix=fix))
        raise
    except (ConnectionError, asyncio.CancelledError):
        raise
    except Exception:  # the outermost HTTP handler: log it, answer 500, keep serving
        log.exception("unexpected error in %s %s", request.method, request.path)
        return _problem_response(HTTPProblem(500, "internal error", reason="internal"))
    finally:
        if isinstance(connection, GuardedConnection):
            connection.request_finished()


def _audience_middleware(
    handlers: Handlers, audiences: dict[web.AbstractRoute, Audience]
) -> Callable[..., Awaitable[web.StreamResponse]]:
    """The one place credentials are checked: each matched route's declared audience."""

    @web.middleware
    async def audience(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        match = request.match_info
        declared = audiences.get(match.route)
        if declared is None:
            if match.http_exception is not None:  # 404/405: no handler runs
                raise match.http_exception
            log.error("%s %s has no audience; refused", request.method, request.path)
            raise HTTPProblem(500, "internal error", reason="internal")
        await handlers.authenticate(request, declared)
        return await handler(request)

    return audience


HANDLERS_KEY = web.AppKey("handlers", Handlers)


def build_app(
    engine: SandboxEngine,
    tokens: TokenAuthority,
    *,
    cells: CellOperations | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S,
) -> web.Application:
    """The aiohttp application over ``engine``; ``cells`` serves the admin routes (503
    without it)."""
    handlers = Handlers(engine, tokens, cells=cells, body_timeout_s=body_timeout_s)
    audiences: dict[web.AbstractRoute, Audience] = {}
    app = web.Application(
        middlewares=[_errors, _audience_middleware(handlers, audiences)],
        client_max_size=max_body_bytes,
    )
    for route in ROUTES:
        bound: Callable[[web.Request], Awaitable[web.StreamResponse]] = getattr(
            handlers, route.handler
        )
        audiences[app.router.add_route(route.method, route.path, bound)] = route.audience
    app[HANDLERS_KEY] = handlers
    return app
