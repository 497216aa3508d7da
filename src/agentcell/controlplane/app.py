"""The control plane's HTTP API (aiohttp), served only over TLS.

Who is calling is decided here and nowhere else:

- **Agent endpoints** (``/v1/agent/*``) take the tenant and agent from the URI SAN of the
  client certificate that the TLS layer has *verified* against the CA. A request that names a
  tenant or agent itself (query, header) is refused rather than ignored, so a confused client
  learns at once. Enrolment is the one agent call without a certificate: the join token is the
  credential.
- **Admin endpoints** (``/v1/admin/*``, ``/metrics``) take a bearer token and are not served on
  the agents' Unix socket at all, so a cell cannot even try them.

One route table drives the router, the authentication and the OpenAPI document, so the three
cannot drift. Each :class:`Route` declares its audience (``admin``, ``agent`` or ``public``)
and one middleware enforces it before the handler runs; no handler checks credentials itself,
and a matched route without an audience is refused. Handlers are thin: they validate the body
with :mod:`~agentcell.controlplane.api` and call
:class:`~agentcell.controlplane.service.ControlPlane` on a worker thread.

Abuse is bounded here too: a request body must arrive within ``request_body_timeout`` (408
and the connection closed otherwise), and enrolment and renewal attempts are rate-limited per
peer (429 with ``Retry-After``, before any database work).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
import socket
import ssl
import time
import weakref
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import pydantic
from aiohttp import web

from agentcell.controlplane import api
from agentcell.controlplane.ingest import ReportWriter
from agentcell.controlplane.limits import PeerRateLimiter
from agentcell.controlplane.listeners import GuardedConnection, peer_of
from agentcell.controlplane.service import Caller, ControlPlane
from agentcell.controlplane.store import StorageError
from agentcell.controlplane.telemetry import CONTENT_TYPE
from agentcell.errors import Error
from agentcell.identity.errors import EnrolmentRefused, IdentityError
from agentcell.identity.spiffe import SpiffeId, parse_spiffe_id

__all__ = ["ROUTES", "Route", "build_app"]

log = logging.getLogger("agentcell.controlplane")

Audience = Literal["admin", "agent", "public"]
"""Who may call a route: ``admin`` (the bearer token, never on the agents' socket), ``agent``
(a verified client certificate naming an agent, not revoked), ``public`` (anyone; a credential,
if any, is in the body, like enrolment's join token)."""
T = TypeVar("T")
Handler = Callable[["Handlers", web.Request], Awaitable[web.StreamResponse]]

REVOCATION_REFRESH_S = 5.0
_IDENTITY_HINTS = ("tenant", "agent")
_HEADER_HINTS = ("x-agentcell-tenant", "x-agentcell-agent", "x-tenant", "x-agent")
_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


@dataclass(frozen=True)
class QueryParam:
    """A documented query parameter."""

    name: str
    description: str
    kind: Literal["string", "integer"] = "string"


@dataclass(frozen=True)
class Route:
    """One endpoint: how it is reached, who may call it, and what it takes and gives.

    ``body_credential`` names a credential carried in a public route's body (documented, and
    checked by the handler's service call rather than by the middleware).
    """

    method: Literal["GET", "POST", "PUT", "DELETE"]
    path: str
    handler: str
    audience: Audience
    summary: str
    request: type[pydantic.BaseModel] | None = None
    response: type[pydantic.BaseModel] | None = None
    query: tuple[QueryParam, ...] = ()
    content_type: str = "application/json"
    body_credential: str | None = None


_TENANT_Q = QueryParam("tenant", "Only this tenant.")
_AGENT_Q = QueryParam("agent", "Only this agent.")
_LIMIT_Q = QueryParam("limit", "How many items (per agent for metrics).", "integer")
_CHANGED_BY_Q = QueryParam("changed_by", "Who makes the change (kept in the history).")

ROUTES: tuple[Route, ...] = (
    Route("POST", "/v1/agent/enrol", "enrol", "public",
          "Trade a one-time join token and a CSR for the agent's first certificate.",
          api.EnrolRequest, api.EnrolResponse, body_credential="the one-time join token"),
    Route("POST", "/v1/agent/renew", "renew", "agent",
          "Get a new certificate for a new key before the current one expires.",
          api.RenewRequest, api.IssuedCertificateBody),
    Route("POST", "/v1/agent/heartbeat", "heartbeat", "agent",
          "Say the agent is alive.", api.HeartbeatRequest, api.HeartbeatResponse),
    Route("POST", "/v1/agent/reports", "reports", "agent",
          "Store a batch of sequenced metrics and event reports, each exactly once.",
          api.ReportBatch, api.ReportAck),
    Route("GET", "/v1/agent/config", "agent_config", "agent",
          "Read the configuration of the caller's tenant.", None, api.TenantConfig),
    Route("GET", "/v1/agent/cells", "agent_cells", "agent",
          "List the enrolled agents of the caller's tenant.", None, api.CellList),
    Route("POST", "/v1/admin/join-tokens", "join_token", "admin",
          "Issue a one-time join token for one agent of one tenant.",
          api.JoinTokenRequest, api.JoinTokenResponse),
    Route("GET", "/v1/admin/cells", "admin_cells", "admin",
          "List enrolled agents.", None, api.CellList, (_TENANT_Q,)),
    Route("GET", "/v1/admin/certificates", "admin_certificates", "admin",
          "List issued certificates.", None, api.CertificateList, (_TENANT_Q, _AGENT_Q)),
    Route("POST", "/v1/admin/certificates/revoke", "admin_revoke", "admin",
          "Revoke a certificate by serial, or every current one of an agent.",
          api.RevokeRequest, api.RevokeResponse),
    Route("GET", "/v1/admin/metrics/{name}", "admin_metrics", "admin",
          "Recent values of one metric, per agent.", None, api.MetricSeriesList,
          (_TENANT_Q, _AGENT_Q, _LIMIT_Q)),
    Route("GET", "/v1/admin/events", "admin_events", "admin",
          "Recent events from agents and the control plane.", None, api.EventList,
          (_TENANT_Q, _AGENT_Q, _LIMIT_Q)),
    Route("GET", "/v1/admin/tenants", "admin_tenants", "admin",
          "List tenants with their current documents.", None, api.TenantList),
    Route("PUT", "/v1/admin/tenants/{tenant}", "admin_put_tenant", "admin",
          "Create or replace a tenant's document (a new version unless it is unchanged).",
          api.TenantPutRequest, api.TenantRecord),
    Route("GET", "/v1/admin/tenants/{tenant}", "admin_tenant", "admin",
          "Read a tenant's current document.", None, api.TenantRecord),
    Route("DELETE", "/v1/admin/tenants/{tenant}", "admin_delete_tenant", "admin",
          "Delete a tenant's document; its history is kept and records the deletion.",
          None, api.TenantDeleted, (_CHANGED_BY_Q,)),
    Route("GET", "/v1/admin/tenants/{tenant}/versions", "admin_tenant_versions", "admin",
          "Every version of a tenant's document, with who changed it and when.",
          None, api.TenantVersionList),
    Route("GET", "/metrics", "prometheus", "admin",
          "Prometheus metrics (text exposition format).", content_type=CONTENT_TYPE),
    Route("GET", "/openapi.json", "openapi", "public", "This document."),
    Route("GET", "/healthz", "healthz", "public", "Liveness: 200 while the server runs."),
)  # fmt: skip


class HTTPProblem(Exception):
    """An answer with an error status; raised by handlers, turned into JSON by middleware."""

    def __init__(
        self,
        status: int,
        error: str,
        *,
        reason: str,
        fix: str | None = None,
        headers: dict[str, str] | None = None,
        close: bool = False,
    ) -> None:
        super().__init__(error)
        self.status = status
        self.body = api.ErrorBody(error=error, reason=reason, fix=fix)
        self.headers = headers or {}
        self.close = close


def _json(model: pydantic.BaseModel, status: int = 200) -> web.Response:
    # By alias: a Tenant document answers with the field names its YAML uses (apiVersion).
    return web.Response(
        body=model.model_dump_json(by_alias=True).encode(),
        status=status,
        content_type="application/json",
    )


CALLER_KEY = web.RequestKey("caller", Caller)


def _caller(request: web.Request) -> Caller:
    """The agent the audience middleware authenticated for this request.

    Raises:
        HTTPProblem: 500 when the route is not an agent route (a handler wired to the wrong
            audience fails closed rather than running without a caller).
    """
    caller = request.get(CALLER_KEY)
    if not isinstance(caller, Caller):
        log.error(
            "%s %s reads an agent caller but is not an agent route", request.method, request.path
        )
        raise HTTPProblem(500, "internal error", reason="internal")
    return caller


def _is_agent_socket(request: web.Request) -> bool:
    transport = request.transport
    if transport is None:
        return False
    sock = transport.get_extra_info("socket")
    return sock is not None and sock.family == socket.AF_UNIX


def _label_param(request: web.Request, name: str) -> str | None:
    value = request.query.get(name) or request.match_info.get(name)
    if value is None:
        return None
    if not _LABEL.match(value) or len(value) > 40:
        raise HTTPProblem(400, f"{name} {value!r} is not a DNS label", reason="bad_parameter")
    return value


def _tenant_in_path(request: web.Request) -> str:
    """The ``{tenant}`` of the path, a tenant name (a DNS label of at most 12 characters).

    Raises:
        HTTPProblem: 400 when it is not one.
    """
    value = request.match_info["tenant"]
    if not _LABEL.match(value) or len(value) > 12:
        raise HTTPProblem(
            400,
            f"tenant {value!r} is not a tenant name",
            reason="bad_parameter",
            fix="tenant names are DNS labels of at most 12 characters (a-z, 0-9, '-')",
        )
    return value


def _no_tenant(tenant: str) -> HTTPProblem:
    return HTTPProblem(
        404,
        f"no tenant {tenant}",
        reason="not_found",
        fix=f"create it with PUT /v1/admin/tenants/{tenant}",
    )


def _limit(request: web.Request, default: int) -> int:
    raw = request.query.get("limit")
    if raw is None:
        return default
    if not raw.isdigit() or not 0 < int(raw) <= 1000:
        raise HTTPProblem(400, "limit must be 1..1000", reason="bad_parameter")
    return int(raw)


class Handlers:
    """The endpoint implementations, bound to one control plane."""

    def __init__(self, service: ControlPlane, *, admin_token: str) -> None:
        self.service = service
        self._admin_token = admin_token.encode()
        self.readers = ThreadPoolExecutor(max_workers=4, thread_name_prefix="cp-read")
        # One writer thread: SQLite takes one writer at a time, and PostgreSQL loses nothing.
        self.writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cp-write")
        self.reports_writer = ReportWriter(service.store, self.writer, service.telemetry)
        self._callers: weakref.WeakKeyDictionary[ssl.SSLObject, tuple[SpiffeId, str]] = (
            weakref.WeakKeyDictionary()
        )
        self._stored_requests = service.telemetry.report_requests.labels(outcome="stored")
        limits = service.settings.limits
        self.body_timeout = limits.request_body_timeout
        self.enrol_attempts = PeerRateLimiter(
            burst=limits.enrol_burst, per_minute=limits.enrol_per_minute
        )
        self.renew_attempts = PeerRateLimiter(
            burst=limits.enrol_burst, per_minute=limits.enrol_per_minute
        )

    async def _read(self, call: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.readers, call)

    async def _write(self, call: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.writer, call)

    async def _body(self, request: web.Request) -> bytes:
        """The whole request body, which must arrive within the body timeout.

        Raises:
            HTTPProblem: 408 (and the connection is closed) when it is too slow.
        """
        try:
            async with asyncio.timeout(self.body_timeout):
                return await request.read()
        except TimeoutError as exc:
            self.service.telemetry.connection_timeouts.labels(phase="request_body").inc()
            log.info(
                "closed a connection from %s: request body not received within %g s",
                peer_of(request.transport),
                self.body_timeout,
            )
            raise HTTPProblem(
                408,
                f"the request body did not arrive within {self.body_timeout:g} s",
                reason="request_timeout",
                close=True,
            ) from exc

    def _limit_attempts(self, limiter: PeerRateLimiter, peer: str, what: str) -> None:
        """Refuse an attempt over the peer's rate, before any database work.

        Raises:
            HTTPProblem: 429 with Retry-After.
        """
        now = time.monotonic()
        if limiter.allow(peer, now=now):
            return
        self.service.telemetry.enrol_failures.labels(reason="rate_limited").inc()
        wait = max(1, round(limiter.retry_after(peer, now=now)))
        log.warning("too many %s attempts from %s; refusing for %d s", what, peer, wait)
        raise HTTPProblem(
            429,
            f"too many {what} attempts from {peer}",
            reason="rate_limited",
            fix=f"wait {wait} s; a cell that keeps failing needs `agentcell up` again",
            headers={"Retry-After": str(wait)},
        )

    # -- authentication ----------------------------------------------------------------------

    def caller(self, request: web.Request) -> Caller:
        """The agent named by the request's verified client certificate.

        Raises:
            HTTPProblem: 401 without a certificate, 403 when it is revoked or not an agent's,
                400 when the request tries to name a tenant or agent itself.
        """
        hints = [name for name in _IDENTITY_HINTS if name in request.query]
        hints += [name for name in _HEADER_HINTS if name in request.headers]
        if hints:
            self.service.telemetry.auth_failures.labels(reason="identity_hint").inc()
            raise HTTPProblem(
                400,
                f"agent requests may not name a tenant or agent ({', '.join(hints)})",
                reason="identity_from_certificate_only",
                fix="drop the parameter: the identity comes from your client certificate",
            )
        transport = request.transport
        ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
        if not isinstance(ssl_object, ssl.SSLObject):
            ssl_object = None
        known = self._callers.get(ssl_object) if ssl_object is not None else None
        if known is None:
            known = self._identify(ssl_object)
            # A connection's certificate cannot change, so it is parsed once per connection;
            # revocation below is still checked on every request.
            if ssl_object is not None:
                self._callers[ssl_object] = known
        identity, serial = known
        if self.service.is_revoked(serial):
            self.service.telemetry.auth_failures.labels(reason="revoked").inc()
            raise HTTPProblem(
                403,
                f"certificate {serial} of {identity.key} is revoked",
                reason="certificate_revoked",
                fix="run `agentcell up` for the cell to enrol it again",
            )
        return Caller(identity=identity, serial=serial)

    def _identify(self, ssl_object: ssl.SSLObject | None) -> tuple[SpiffeId, str]:
        """The agent identity and serial of a connection's verified peer certificate.

        Raises:
            HTTPProblem: 401 without a certificate, 403 when it does not name an agent.
        """
        peer = ssl_object.getpeercert() if ssl_object is not None else None
        if not peer:
            self.service.telemetry.auth_failures.labels(reason="no_client_certificate").inc()
            raise HTTPProblem(
                401,
                "this endpoint needs a client certificate issued by the control plane's CA",
                reason="no_client_certificate",
                fix="enrol the agent first (POST /v1/agent/enrol with a join token)",
            )
        uris = [
            str(entry[1])
            for entry in peer.get("subjectAltName", ())
            if len(entry) == 2 and entry[0] == "URI"
        ]
        try:
            if len(uris) != 1:
                raise IdentityError(f"expected one URI SAN, found {len(uris)}")
            identity = parse_spiffe_id(uris[0], trust_domain=self.service.ca.trust_domain)
        except IdentityError as exc:
            self.service.telemetry.auth_failures.labels(reason="not_an_agent").inc()
            raise HTTPProblem(
                403, f"the client certificate is not an agent's: {exc.what}", reason="not_an_agent"
            ) from exc
        # OpenSSL prints whole bytes ("0A1B..."); serials are stored without leading zeros.
        serial = str(peer.get("serialNumber", "")).upper().lstrip("0") or "0"
        return identity, serial

    def require_admin(self, request: web.Request) -> None:
        """Refuse unless the request carries the admin token, and not on the agents' socket.

        Raises:
            HTTPProblem: 403 on the agents' socket, 401 without the right token.
        """
        if _is_agent_socket(request):
            self.service.telemetry.auth_failures.labels(reason="admin_on_agent_socket").inc()
            raise HTTPProblem(
                403, "the admin API is not served on the agents' socket", reason="wrong_listener"
            )
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            token.strip().encode(), self._admin_token
        ):
            self.service.telemetry.auth_failures.labels(reason="bad_admin_token").inc()
            raise HTTPProblem(
                401,
                "this endpoint needs the admin token",
                reason="bad_admin_token",
                fix="send 'Authorization: Bearer <token>' with the token from the state "
                "directory's admin.token",
            )

    def authenticate(self, request: web.Request, audience: Audience) -> None:
        """Enforce a route's audience; an agent's identity is kept on the request.

        Raises:
            HTTPProblem: the caller is not of the audience (see :meth:`caller` and
                :meth:`require_admin`).
        """
        if audience == "admin":
            self.require_admin(request)
        elif audience == "agent":
            request[CALLER_KEY] = self.caller(request)

    # -- agent endpoints ---------------------------------------------------------------------

    async def enrol(self, request: web.Request) -> web.Response:
        peer = peer_of(request.transport)
        self._limit_attempts(self.enrol_attempts, peer, "enrolment")
        body = api.EnrolRequest.model_validate_json(await self._body(request))
        try:
            answer = await self._write(lambda: self.service.enrol(body, peer=peer))
        except EnrolmentRefused as exc:
            log.warning("enrolment refused: %s", exc.what)
            raise HTTPProblem(403, exc.what, reason=exc.reason, fix=exc.fix) from exc
        return _json(answer)

    async def renew(self, request: web.Request) -> web.Response:
        caller = _caller(request)
        # Keyed by identity, not connection: each renewal revokes the certificate it replaces,
        # so a loop of renewals would otherwise be a loop of writes.
        self._limit_attempts(self.renew_attempts, caller.identity.key, "renewal")
        body = api.RenewRequest.model_validate_json(await self._body(request))
        try:
            answer = await self._write(lambda: self.service.renew(caller, body))
        except EnrolmentRefused as exc:
            raise HTTPProblem(403, exc.what, reason=exc.reason) from exc
        return _json(answer)

    async def heartbeat(self, request: web.Request) -> web.Response:
        caller = _caller(request)
        raw = await self._body(request)
        if raw.strip():
            api.HeartbeatRequest.model_validate_json(raw)
        return _json(await self._write(lambda: self.service.heartbeat(caller)))

    async def reports(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        caller = _caller(request)
        try:
            batch = api.ReportBatch.model_validate_json(await self._body(request))
        except pydantic.ValidationError:
            self.service.telemetry.report_requests.labels(outcome="invalid").inc()
            raise
        try:
            ack = await self.reports_writer.submit(caller.identity, batch)
        except StorageError:
            self.service.telemetry.report_requests.labels(outcome="storage_error").inc()
            raise
        self._stored_requests.inc()
        self.service.telemetry.report_latency.observe(time.perf_counter() - started)
        return _json(ack)

    async def agent_config(self, request: web.Request) -> web.Response:
        caller = _caller(request)
        return _json(await self._read(lambda: self.service.tenant_config(caller.identity.tenant)))

    async def agent_cells(self, request: web.Request) -> web.Response:
        caller = _caller(request)
        return _json(await self._read(lambda: self.service.cells(caller.identity.tenant)))

    # -- admin endpoints ---------------------------------------------------------------------

    async def join_token(self, request: web.Request) -> web.Response:
        body = api.JoinTokenRequest.model_validate_json(await self._body(request))
        return _json(await self._write(lambda: self.service.issue_token(body)), status=201)

    async def admin_cells(self, request: web.Request) -> web.Response:
        tenant = _label_param(request, "tenant")
        return _json(await self._read(lambda: self.service.cells(tenant)))

    async def admin_certificates(self, request: web.Request) -> web.Response:
        tenant, agent = _label_param(request, "tenant"), _label_param(request, "agent")
        return _json(await self._read(lambda: self.service.certificates(tenant, agent)))

    async def admin_revoke(self, request: web.Request) -> web.Response:
        body = api.RevokeRequest.model_validate_json(await self._body(request))
        answer = await self._write(lambda: self.service.revoke(body))
        if not answer.revoked:
            raise HTTPProblem(
                404,
                "no unrevoked certificate matches",
                reason="not_found",
                fix="`agentcell cert list` shows serials and which are revoked",
            )
        return _json(answer)

    async def admin_metrics(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if not re.fullmatch(r"[a-z][a-z0-9_.]{0,63}", name):
            raise HTTPProblem(400, f"{name!r} is not a metric name", reason="bad_parameter")
        tenant, agent = _label_param(request, "tenant"), _label_param(request, "agent")
        limit = _limit(request, 30)
        return _json(
            await self._read(
                lambda: self.service.metric_series(name, tenant=tenant, agent=agent, limit=limit)
            )
        )

    async def admin_events(self, request: web.Request) -> web.Response:
        tenant, agent = _label_param(request, "tenant"), _label_param(request, "agent")
        limit = _limit(request, 50)
        return _json(
            await self._read(lambda: self.service.events(tenant=tenant, agent=agent, limit=limit))
        )

    async def admin_tenants(self, request: web.Request) -> web.Response:
        return _json(await self._read(self.service.tenants))

    async def admin_put_tenant(self, request: web.Request) -> web.Response:
        tenant = _tenant_in_path(request)
        body = api.TenantPutRequest.model_validate_json(await self._body(request))
        body.check_for(tenant)
        return _json(await self._write(lambda: self.service.put_tenant(body)))

    async def admin_tenant(self, request: web.Request) -> web.Response:
        tenant = _tenant_in_path(request)
        found = await self._read(lambda: self.service.tenant(tenant))
        if found is None:
            raise _no_tenant(tenant)
        return _json(found)

    async def admin_delete_tenant(self, request: web.Request) -> web.Response:
        tenant = _tenant_in_path(request)
        by = request.query.get("changed_by", "").strip()[:200] or "admin"
        deleted = await self._write(lambda: self.service.delete_tenant(tenant, by=by))
        if deleted is None:
            raise _no_tenant(tenant)
        return _json(deleted)

    async def admin_tenant_versions(self, request: web.Request) -> web.Response:
        tenant = _tenant_in_path(request)
        return _json(await self._read(lambda: self.service.tenant_versions(tenant)))

    async def prometheus(self, request: web.Request) -> web.Response:
        text = await self._read(self.service.metrics_text)
        return web.Response(body=text, headers={"Content-Type": CONTENT_TYPE})

    async def openapi(self, request: web.Request) -> web.Response:
        from agentcell.controlplane.openapi import document

        return web.json_response(document(ROUTES))

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    # -- lifecycle ---------------------------------------------------------------------------

    async def flush_refusals(self, *, every: float) -> None:
        """Record the refused-enrolment summaries whose window has ended, now and then."""
        while True:
            await asyncio.sleep(every)
            try:
                await self._write(self.service.flush_refusals)
            except StorageError as exc:
                log.warning("cannot record refused enrolments: %s", exc.what)

    async def refresh_revocations(self) -> None:
        """Reload revocations now and then, for control planes that share a database."""
        while True:
            await asyncio.sleep(REVOCATION_REFRESH_S)
            try:
                await self._read(self.service.refresh_revocations)
            except StorageError as exc:
                log.warning("cannot refresh revocations: %s", exc.what)

    def close(self) -> None:
        """Stop the worker threads."""
        self.readers.shutdown(wait=True)
        self.writer.shutdown(wait=True)


HANDLERS_KEY = web.AppKey("handlers", Handlers)


@web.middleware
async def _errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """The outermost handler: every failure becomes a JSON error body with a reason.

    It also tells the connection (when it came through our listeners) that a whole request
    head has arrived, which stops its head timer until the answer is given.
    """
    connection = request.transport.get_protocol() if request.transport is not None else None
    if isinstance(connection, GuardedConnection):
        connection.request_started()
    try:
        return await handler(request)
    except HTTPProblem as problem:
        answer = _json(problem.body, status=problem.status)
        answer.headers.update(problem.headers)
        if problem.close:
            answer.force_close()
        return answer
    except pydantic.ValidationError as exc:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": str(exc)}
        where = ".".join(str(part) for part in first.get("loc", ()))
        return _json(
            api.ErrorBody(
                error=f"invalid body: {where}: {first.get('msg')}" if where else "invalid body",
                reason="invalid_body",
                fix="see /openapi.json for the request schema",
            ),
            status=422,
        )
    except StorageError as exc:
        log.error("storage error: %s", exc.what)
        return _json(
            api.ErrorBody(error=exc.what, reason="storage_unavailable", fix=exc.fix), status=503
        )
    except Error as exc:
        return _json(api.ErrorBody(error=exc.what, reason="error", fix=exc.fix), status=400)
    except web.HTTPException:
        raise
    except Exception:  # the outermost HTTP handler: log it, answer 500, keep serving
        log.exception("unexpected error in %s %s", request.method, request.path)
        return _json(api.ErrorBody(error="internal error", reason="internal"), status=500)
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
            if match.http_exception is not None:  # 404/405: aiohttp's own answer, no handler
                return await handler(request)
            log.error("%s %s has no audience; refused", request.method, request.path)
            raise HTTPProblem(500, "internal error", reason="internal")
        handlers.authenticate(request, declared)
        return await handler(request)

    return audience


def build_app(service: ControlPlane, *, admin_token: str) -> web.Application:
    """The aiohttp application for ``service``; its handlers close with the app."""
    handlers = Handlers(service, admin_token=admin_token)
    audiences: dict[web.AbstractRoute, Audience] = {}
    app = web.Application(
        middlewares=[_errors, _audience_middleware(handlers, audiences)],
        client_max_size=service.settings.limits.max_body_bytes,
    )
    for route in ROUTES:
        bound: Callable[[web.Request], Awaitable[web.StreamResponse]] = getattr(
            handlers, route.handler
        )
        audiences[app.router.add_route(route.method, route.path, bound)] = route.audience

    async def background(app: web.Application) -> Any:
        window = service.settings.limits.enrol_refusal_window
        tasks = [
            asyncio.create_task(handlers.refresh_revocations()),
            asyncio.create_task(handlers.flush_refusals(every=min(1.0, window / 4))),
        ]
        yield
        for task in tasks:
            task.cancel()
        try:
            # Refusals of windows still open are recorded too, rather than lost at shutdown.
            await handlers._write(lambda: service.flush_refusals(final=True))
        except StorageError as exc:
            log.warning("cannot record refused enrolments: %s", exc.what)
        handlers.close()

    app.cleanup_ctx.append(background)
    app[HANDLERS_KEY] = handlers
    return app
