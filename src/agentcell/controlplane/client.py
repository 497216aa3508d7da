"""The admin API from the CLI and from ``up``: HTTPS with the CA pinned, bearer token.

Standard library ``http.client`` is enough for a handful of calls per command and keeps the
CLI from starting an event loop. The server is verified against the control plane's own CA
bundle, never the system store.
"""

from __future__ import annotations

import http.client
import json
import ssl
import urllib.parse
from collections.abc import Mapping
from typing import Any, TypeVar

import pydantic

from agentcell.controlplane import api
from agentcell.controlplane.settings import ClientSettings
from agentcell.errors import ControlPlaneUnavailable, Error
from agentcell.identity.errors import IdentityError
from agentcell.identity.files import read_text

# ControlPlaneUnavailable is declared in agentcell.errors, beside the other unreachable
# services; it is exported here too because callers of this client catch it.
__all__ = ["AdminClient", "ControlPlaneError", "ControlPlaneUnavailable"]

M = TypeVar("M", bound=pydantic.BaseModel)
TIMEOUT_S = 15.0


class ControlPlaneError(Error):
    """The control plane refused a request or answered nonsense."""

    def __init__(self, what: str, *, status: int = 0, reason: str = "", fix: str | None = None):
        super().__init__(what, fix=fix)
        self.status = status
        self.reason = reason


class AdminClient:
    """Calls to the admin API. One connection per call: the CLI makes few."""

    def __init__(self, settings: ClientSettings) -> None:
        parsed = urllib.parse.urlsplit(settings.url)
        if parsed.scheme != "https" or not parsed.hostname:
            raise ControlPlaneError(
                f"{settings.url!r} is not an https:// URL",
                fix="set AGENTCELL_CONTROLPLANE_URL=https://HOST:PORT",
            )
        self.settings = settings
        self.host = parsed.hostname
        self.port = parsed.port or 443
        ca_file = settings.paths.ca_bundle
        try:
            self._tls = ssl.create_default_context(cafile=str(ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise ControlPlaneUnavailable(
                f"cannot load the control plane's CA bundle {ca_file}: {exc}",
                fix="run `agentcell ca init`, or set AGENTCELL_HOME / --state-dir to where it ran",
            ) from exc
        self._token = settings.admin_token

    @property
    def token(self) -> str:
        """The admin token, read from the state directory when not given."""
        if self._token is None:
            try:
                self._token = read_text(self.settings.paths.admin_token, what="admin token").strip()
            except IdentityError as exc:
                raise ControlPlaneError(
                    exc.what, fix="run as root, or set AGENTCELL_ADMIN_TOKEN"
                ) from exc
        return self._token

    def request(
        self, method: str, path: str, response: type[M], body: pydantic.BaseModel | None = None
    ) -> M:
        """Send one request; parse the answer as ``response``.

        Raises:
            ControlPlaneUnavailable: no connection or TLS failure.
            ControlPlaneError: an error status, or a body that does not parse.
        """
        payload = (
            body.model_dump_json(exclude_none=True, by_alias=True).encode()
            if body is not None
            else None
        )
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        if payload is not None:
            headers["Content-Type"] = "application/json"
        connection = http.client.HTTPSConnection(
            self.host, self.port, context=self._tls, timeout=TIMEOUT_S
        )
        try:
            connection.request(method, path, body=payload, headers=headers)
            answer = connection.getresponse()
            status, raw = answer.status, answer.read()
        except (OSError, http.client.HTTPException) as exc:
            raise ControlPlaneUnavailable(
                f"cannot reach the control plane at {self.settings.url}: {exc}",
                fix="start it with `agentcell server`, or set AGENTCELL_CONTROLPLANE_URL",
            ) from exc
        finally:
            connection.close()
        if status >= 400:
            raise _problem(status, raw)
        try:
            return response.model_validate_json(raw)
        except pydantic.ValidationError as exc:
            raise ControlPlaneError(f"unexpected answer to {method} {path}: {exc}") from exc

    # -- the calls the CLI makes -------------------------------------------------------------

    def join_token(
        self, tenant: str, agent: str, ttl_seconds: float | None = None
    ) -> api.JoinTokenResponse:
        """A one-time token for ``tenant/agent``."""
        try:
            body = api.JoinTokenRequest(tenant=tenant, agent=agent, ttl_seconds=ttl_seconds)
        except pydantic.ValidationError as exc:
            raise ControlPlaneError(
                f"cannot ask for a join token for {tenant}/{agent}: {exc.errors()[0]['msg']}",
                fix="tenant and agent names are DNS labels (a-z, 0-9, '-')",
            ) from exc
        return self.request("POST", "/v1/admin/join-tokens", api.JoinTokenResponse, body)

    def cells(self, tenant: str | None = None) -> api.CellList:
        """Enrolled agents."""
        return self.request("GET", _path("/v1/admin/cells", tenant=tenant), api.CellList)

    def certificates(
        self, tenant: str | None = None, agent: str | None = None
    ) -> api.CertificateList:
        """Issued certificates."""
        return self.request(
            "GET", _path("/v1/admin/certificates", tenant=tenant, agent=agent), api.CertificateList
        )

    def revoke(self, request: api.RevokeRequest) -> api.RevokeResponse:
        """Revoke by serial or agent."""
        return self.request("POST", "/v1/admin/certificates/revoke", api.RevokeResponse, request)

    def metric(
        self, name: str, *, tenant: str | None = None, agent: str | None = None, limit: int = 30
    ) -> api.MetricSeriesList:
        """Recent values of one metric."""
        path = _path(f"/v1/admin/metrics/{name}", tenant=tenant, agent=agent, limit=limit)
        return self.request("GET", path, api.MetricSeriesList)

    def events(
        self, *, tenant: str | None = None, agent: str | None = None, limit: int = 50
    ) -> api.EventList:
        """Recent events."""
        path = _path("/v1/admin/events", tenant=tenant, agent=agent, limit=limit)
        return self.request("GET", path, api.EventList)

    # -- tenants -----------------------------------------------------------------------------

    def put_tenant(self, document: Mapping[str, Any], *, changed_by: str) -> api.TenantRecord:
        """Make ``document`` (a Tenant document as JSON, keys given as ``pem``) its tenant's
        current one; the stored record, whose ``changed`` says whether a version was made.

        Raises:
            ControlPlaneError: the document is not a valid Tenant document (checked here
                first, naming the field; the server checks again), or the server refused it.
            ControlPlaneUnavailable: no connection.
        """
        try:
            body = api.TenantPutRequest.model_validate(
                {"document": dict(document), "changed_by": changed_by}
            )
            name = body.document.metadata.name
            body.check_for(name)
        except pydantic.ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            raise ControlPlaneError(
                f"not a Tenant document the control plane can store: {where}: {first['msg']}",
                status=422,
                reason="invalid_body",
                fix="load it with agentcell.spec and give each key's contents as pem",
            ) from exc
        return self.request("PUT", f"/v1/admin/tenants/{name}", api.TenantRecord, body)

    def tenant(self, name: str) -> api.TenantRecord | None:
        """The tenant's current document, or ``None`` when it has none."""
        try:
            return self.request("GET", _tenant_path(name), api.TenantRecord)
        except ControlPlaneError as exc:
            if exc.status == 404 and exc.reason == "not_found":
                return None
            raise

    def tenants(self) -> list[api.TenantRecord]:
        """Every tenant with a current document, by name."""
        return self.request("GET", "/v1/admin/tenants", api.TenantList).tenants

    def delete_tenant(self, name: str, *, changed_by: str | None = None) -> bool:
        """Delete the tenant's document (its history stays); whether it had one."""
        path = _path(_tenant_path(name), changed_by=changed_by)
        try:
            self.request("DELETE", path, api.TenantDeleted)
        except ControlPlaneError as exc:
            if exc.status == 404 and exc.reason == "not_found":
                return False
            raise
        return True

    def tenant_versions(self, name: str) -> list[api.TenantVersion]:
        """Every version of the tenant, oldest first; deletions have ``document`` None."""
        path = f"{_tenant_path(name)}/versions"
        return self.request("GET", path, api.TenantVersionList).versions


def _tenant_path(name: str) -> str:
    # Quoted, so a name that is no tenant name reaches the server (and its 400) unchanged
    # rather than becoming another path.
    return f"/v1/admin/tenants/{urllib.parse.quote(name, safe='')}"


def _path(base: str, **query: Any) -> str:
    given = {key: value for key, value in query.items() if value is not None}
    return f"{base}?{urllib.parse.urlencode(given)}" if given else base


def _problem(status: int, raw: bytes) -> ControlPlaneError:
    try:
        body = json.loads(raw)
        error, reason, fix = str(body["error"]), str(body.get("reason", "")), body.get("fix")
    except (ValueError, KeyError, TypeError):
        error, reason, fix = raw.decode("utf-8", "replace")[:200] or f"HTTP {status}", "", None
    return ControlPlaneError(
        f"control plane answered {status}: {error}",
        status=status,
        reason=reason,
        fix=str(fix) if fix else None,
    )
