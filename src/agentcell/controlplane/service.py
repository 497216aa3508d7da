"""What the control plane does, apart from HTTP: enrol, renew, revoke, answer queries.

The HTTP layer (:mod:`agentcell.controlplane.app`) authenticates the caller and hands this
module a :class:`Caller` built from the verified certificate, or nothing for admin calls that
passed the token check. Every method here is synchronous and runs in a worker thread.

Refused enrolments are not written one row each (a cell retrying a spent token would grow the
database without bound): they are collected per (tenant, agent, peer) and recorded as one
``enrolment.refused`` event per window by :meth:`ControlPlane.flush_refusals`.
"""

from __future__ import annotations

import datetime as dt
import errno
import logging
import os
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn

from agentcell.controlplane import api
from agentcell.controlplane.limits import RefusalDigest
from agentcell.controlplane.settings import ServerSettings
from agentcell.controlplane.store import (
    CertificateRecord,
    EventRow,
    Store,
    TenantRow,
    TokenRow,
)
from agentcell.controlplane.telemetry import Telemetry
from agentcell.identity.ca import CertificateAuthority, IssuedCertificate, check_request
from agentcell.identity.errors import EnrolmentRefused
from agentcell.identity.spiffe import SpiffeId
from agentcell.identity.tokens import TokenRecord, hash_token, judge_token, new_token
from agentcell.spec.tenant import TenantDocument

__all__ = ["Caller", "ControlPlane"]

log = logging.getLogger("agentcell.controlplane")

# A join token file is one line of about 50 bytes; anything much longer is not ours.
_TOKEN_FILE_MAX = 4096


@dataclass(frozen=True, kw_only=True)
class Caller:
    """An agent, as its verified client certificate names it."""

    identity: SpiffeId
    serial: str


def _epoch(moment: dt.datetime) -> float:
    return moment.timestamp()


class ControlPlane:
    """The control plane's operations over one store and one CA."""

    def __init__(
        self,
        *,
        store: Store,
        ca: CertificateAuthority,
        settings: ServerSettings,
        telemetry: Telemetry,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.ca = ca
        self.settings = settings
        self.telemetry = telemetry
        self.clock = clock
        self._revoked: frozenset[str] = frozenset()
        self._revoked_lock = threading.Lock()
        self._refusals = RefusalDigest(window=settings.limits.enrol_refusal_window)
        self.refresh_revocations()

    # -- revocation --------------------------------------------------------------------------

    def refresh_revocations(self) -> None:
        """Add serials revoked elsewhere (another control plane on the same database).

        A union, never a replacement: revocation is permanent, and a refresh that read the
        database just before a local revocation committed must not undo it in memory.
        """
        revoked = frozenset(self.store.revoked_serials())
        with self._revoked_lock:
            self._revoked = self._revoked | revoked

    def is_revoked(self, serial: str) -> bool:
        """Whether a certificate serial is revoked. Read on every agent request."""
        return (serial.upper().lstrip("0") or "0") in self._revoked

    def revoke(self, request: api.RevokeRequest) -> api.RevokeResponse:
        """Revoke by serial or by agent; takes effect on the next request of the holder."""
        now = self.clock()
        serials = self.store.revoke(
            serial=request.serial,
            tenant=request.tenant,
            agent=request.agent,
            reason=request.reason,
            now=now,
        )
        with self._revoked_lock:
            self._revoked = self._revoked | frozenset(serials)
        for record in self.store.certificates():
            if record.serial in serials:
                self._note(
                    record.tenant,
                    record.agent,
                    "certificate.revoked",
                    f"certificate {record.serial} revoked: {request.reason}",
                    at=now,
                )
        return api.RevokeResponse(revoked=serials)

    # -- enrolment and renewal ---------------------------------------------------------------

    def issue_token(self, request: api.JoinTokenRequest) -> api.JoinTokenResponse:
        """A one-time token that enrols exactly ``request.tenant/request.agent``."""
        now = self.clock()
        identity = SpiffeId(self.ca.trust_domain, request.tenant, request.agent)
        ttl = (
            dt.timedelta(seconds=request.ttl_seconds)
            if request.ttl_seconds is not None
            else self.settings.token_lifetime
        )
        token = new_token(identity, ttl=ttl, now=dt.datetime.fromtimestamp(now, dt.UTC))
        self.store.add_token(
            TokenRow(
                digest=token.digest,
                tenant=identity.tenant,
                agent=identity.agent,
                issued_at=now,
                expires_at=_epoch(token.expires_at),
                used_at=None,
            )
        )
        return api.JoinTokenResponse(
            token=token.secret, spiffe_id=identity.uri, expires_at=_epoch(token.expires_at)
        )

    def _note(self, tenant: str, agent: str, kind: str, message: str, *, at: float) -> None:
        """Record an event of the control plane's own about one agent."""
        self.store.add_event(
            EventRow(
                tenant=tenant,
                agent=agent,
                sequence=None,
                at=at,
                source="controlplane",
                kind=kind,
                message=message,
            )
        )

    def _refuse(
        self, reason: str, what: str, *, peer: str, tenant: str = "", agent: str = ""
    ) -> NoReturn:
        self.telemetry.enrol_failures.labels(reason=reason).inc()
        if tenant:
            self._refusals.add(
                tenant=tenant, agent=agent, peer=peer, reason=reason, now=self.clock()
            )
        raise EnrolmentRefused(
            what,
            reason=reason,
            fix="run `agentcell up` again: it issues a fresh join token for the cell",
        )

    def flush_refusals(self, *, final: bool = False) -> int:
        """Record one event per (tenant, agent, peer) whose refusal window has ended (every
        window when ``final``); how many were recorded."""
        now = self.clock()
        summaries = self._refusals.drain(now=now) if final else self._refusals.due(now=now)
        for summary in summaries:
            self._note(
                summary.tenant, summary.agent, "enrolment.refused", summary.message(), at=now
            )
        return len(summaries)

    def enrol(self, request: api.EnrolRequest, *, peer: str = "unknown") -> api.EnrolResponse:
        """Trade a join token and a CSR for the agent's first certificate.

        The tenant and agent come from the token's record; the CSR only proves possession of
        the key. The token is checked, then the CSR, and only then consumed, so a malformed
        CSR does not burn a good token; the consumption itself is atomic. The spent token's
        file is then removed from the cell's identity directory. ``peer`` names the caller in
        the refused-enrolment events.

        Raises:
            EnrolmentRefused: the token is unknown, used or expired, or the CSR is refused.
        """
        now = self.clock()
        digest = hash_token(request.token)
        row = self.store.token(digest)
        record = (
            TokenRecord(
                digest=row.digest,
                tenant=row.tenant,
                agent=row.agent,
                expires_at=dt.datetime.fromtimestamp(row.expires_at, dt.UTC),
                used_at=(
                    None if row.used_at is None else dt.datetime.fromtimestamp(row.used_at, dt.UTC)
                ),
            )
            if row is not None
            else None
        )
        verdict = judge_token(record, now=dt.datetime.fromtimestamp(now, dt.UTC))
        if verdict != "ok" or row is None:
            owner = (row.tenant, row.agent) if row is not None else ("", "")
            self._refuse(
                f"{verdict}_token",
                {
                    "unknown": "the join token is not known to this control plane",
                    "used": "the join token was already used; tokens enrol once",
                    "expired": "the join token has expired",
                    "ok": "the join token vanished",
                }[verdict],
                peer=peer,
                tenant=owner[0],
                agent=owner[1],
            )
        identity = SpiffeId(self.ca.trust_domain, row.tenant, row.agent)
        try:
            check_request(request.csr, identity)
        except EnrolmentRefused as exc:
            self._refuse(exc.reason, exc.what, peer=peer, tenant=row.tenant, agent=row.agent)
        if not self.store.consume_token(digest, now=now):
            self._refuse(
                "used_token",
                "the join token was used by a concurrent enrolment",
                peer=peer,
                tenant=row.tenant,
                agent=row.agent,
            )
        self._remove_token_file(row.tenant, row.agent, digest)
        issued = self.ca.sign_request(
            request.csr,
            identity,
            lifetime=self.settings.cert_lifetime,
            now=dt.datetime.fromtimestamp(now, dt.UTC),
        )
        self._record(issued, identity, kind="enrol", now=now)
        # A re-enrolled agent replaces its old cell: the old key died with that cell's tmpfs.
        superseded = self.store.revoke(
            tenant=identity.tenant,
            agent=identity.agent,
            reason="superseded by a new enrolment",
            now=now,
            except_serial=issued.serial,
        )
        if superseded:
            with self._revoked_lock:
                self._revoked = self._revoked | frozenset(superseded)
        next_sequence = self.store.enrol_agent(identity.tenant, identity.agent, now=now)
        self.telemetry.enrolments.inc()
        self._note(
            identity.tenant,
            identity.agent,
            "agent.enrolled",
            f"enrolled with certificate {issued.serial}; "
            f"reports continue at sequence {next_sequence}",
            at=now,
        )
        return api.EnrolResponse(**self._certificate_body(issued), next_sequence=next_sequence)

    def _remove_token_file(self, tenant: str, agent: str, digest: str) -> None:
        """Delete the spent token from the cell's identity directory, if it is still there and
        is this token (``up`` may already have written a newer one). Never fails enrolment."""
        path = self.settings.paths.cell_identity_dir(tenant, agent) / "token"
        try:
            # No following links and no blocking on a FIFO: the directory belongs to the
            # cell's uid, so what sits there is not ours to trust.
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            return  # an agent not launched by `up` (or on another host) has no such file
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                log.warning("not removing %s: it is a symbolic link", path)
                return
            log.warning("cannot remove the spent join token %s: %s", path, exc.strerror)
            return
        try:
            info = os.fstat(fd)
            content = os.read(fd, _TOKEN_FILE_MAX) if stat.S_ISREG(info.st_mode) else b""
        except OSError as exc:
            log.warning("cannot remove the spent join token %s: %s", path, exc.strerror)
            return
        finally:
            os.close(fd)
        if hash_token(content.decode("utf-8", "replace")) != digest:
            return
        try:
            if os.lstat(path).st_ino != info.st_ino:
                return  # replaced since it was read: a newer token
            path.unlink()
        except FileNotFoundError:
            return
        except OSError as exc:
            log.warning("cannot remove the spent join token %s: %s", path, exc.strerror)

    def renew(self, caller: Caller, request: api.RenewRequest) -> api.IssuedCertificateBody:
        """A new certificate for the caller's identity and the key in ``request.csr``; the
        certificate it replaces (the caller's) is revoked at once.

        The agent switches to the new certificate as soon as the answer arrives. If the answer
        is lost, the agent is left with a revoked certificate and needs ``agentcell up``: the
        price of never having two valid certificates for one cell.

        Raises:
            EnrolmentRefused: the CSR is refused.
        """
        now = self.clock()
        issued = self.ca.sign_request(
            request.csr,
            caller.identity,
            lifetime=self.settings.cert_lifetime,
            now=dt.datetime.fromtimestamp(now, dt.UTC),
        )
        self._record(issued, caller.identity, kind="renew", now=now)
        replaced = self.store.revoke(
            serial=caller.serial,
            tenant=caller.identity.tenant,
            agent=caller.identity.agent,
            reason=f"superseded by renewal ({issued.serial})",
            now=now,
        )
        if replaced:
            with self._revoked_lock:
                self._revoked = self._revoked | frozenset(replaced)
        self.telemetry.renewals.inc()
        return api.IssuedCertificateBody(**self._certificate_body(issued))

    def _record(
        self, issued: IssuedCertificate, identity: SpiffeId, *, kind: str, now: float
    ) -> None:
        self.store.add_certificate(
            CertificateRecord(
                serial=issued.serial,
                tenant=identity.tenant,
                agent=identity.agent,
                spiffe_id=identity.uri,
                kind=kind,
                not_before=_epoch(issued.not_before),
                not_after=_epoch(issued.not_after),
                issued_at=now,
                revoked_at=None,
                revoke_reason=None,
            )
        )

    def _certificate_body(self, issued: IssuedCertificate) -> dict[str, str | float]:
        assert issued.identity is not None
        return {
            "certificate": issued.pem,
            "ca_certificate": self.ca.certificate_pem,
            "spiffe_id": issued.identity.uri,
            "serial": issued.serial,
            "not_before": _epoch(issued.not_before),
            "not_after": _epoch(issued.not_after),
        }

    # -- agents' other calls -----------------------------------------------------------------

    def heartbeat(self, caller: Caller) -> api.HeartbeatResponse:
        """Record that the caller is alive; answer with the clock and config version."""
        now = self.clock()
        self.store.heartbeat(caller.identity.tenant, caller.identity.agent, now=now)
        _, version = self.store.config(caller.identity.tenant)
        return api.HeartbeatResponse(server_time=now, config_version=version)

    def tenant_config(self, tenant: str) -> api.TenantConfig:
        """The configuration of ``tenant`` (the caller's own, for agents): its current
        document's ``spec.config``."""
        config, version = self.store.config(tenant)
        return api.TenantConfig(tenant=tenant, version=version, config=config)

    # -- tenants -----------------------------------------------------------------------------

    def put_tenant(self, request: api.TenantPutRequest) -> api.TenantRecord:
        """Make ``request.document`` its tenant's current document (a new version unless it
        equals the current one)."""
        now = self.clock()
        name = request.document.metadata.name
        row, changed = self.store.put_tenant(
            name,
            request.document.model_dump(mode="json", by_alias=True),
            by=request.changed_by,
            now=now,
        )
        if changed:
            self._note(
                name,
                "",
                "tenant.updated",
                f"tenant {name} version {row.version} by {request.changed_by}",
                at=now,
            )
        return _tenant_record(row, changed=changed)

    def tenant(self, name: str) -> api.TenantRecord | None:
        """The tenant's current document, or ``None``."""
        row = self.store.tenant(name)
        return None if row is None else _tenant_record(row)

    def tenants(self) -> api.TenantList:
        """Every tenant with a current document."""
        return api.TenantList(tenants=[_tenant_record(row) for row in self.store.tenants()])

    def delete_tenant(self, name: str, *, by: str) -> api.TenantDeleted | None:
        """Remove the tenant's document (its history stays); ``None`` when it had none."""
        now = self.clock()
        version = self.store.delete_tenant(name, by=by, now=now)
        if version is None:
            return None
        self._note(name, "", "tenant.deleted", f"tenant {name} deleted by {by}", at=now)
        return api.TenantDeleted(name=name, version=version)

    def tenant_versions(self, name: str) -> api.TenantVersionList:
        """The tenant's history, oldest first."""
        return api.TenantVersionList(
            name=name,
            versions=[
                api.TenantVersion(
                    name=row.name,
                    version=row.version,
                    change="delete" if row.document is None else "put",
                    document=None
                    if row.document is None
                    else TenantDocument.model_validate(row.document),
                    config_version=row.config_version,
                    at=row.at,
                    by=row.by,
                )
                for row in self.store.tenant_versions(name)
            ],
        )

    # -- queries -----------------------------------------------------------------------------

    def cells(self, tenant: str | None) -> api.CellList:
        """Enrolled agents (of one tenant, or all for an admin)."""
        up_since = self.clock() - self.settings.agents_up_window.total_seconds()
        return api.CellList(
            cells=[
                api.CellView(
                    tenant=record.tenant,
                    agent=record.agent,
                    spiffe_id=SpiffeId(self.ca.trust_domain, record.tenant, record.agent).uri,
                    enrolled_at=record.enrolled_at,
                    last_seen=record.last_seen,
                    last_sequence=record.last_sequence,
                    certificate_expires_at=record.certificate_expires_at,
                    up=record.last_seen is not None and record.last_seen >= up_since,
                )
                for record in self.store.agents(tenant=tenant)
            ]
        )

    def certificates(self, tenant: str | None, agent: str | None) -> api.CertificateList:
        """Issued certificates, newest first."""
        return api.CertificateList(
            certificates=[
                api.CertificateView.model_validate(record, from_attributes=True)
                for record in self.store.certificates(tenant=tenant, agent=agent)
            ]
        )

    def metric_series(
        self, name: str, *, tenant: str | None, agent: str | None, limit: int
    ) -> api.MetricSeriesList:
        """The last ``limit`` values of one metric per agent."""
        grouped: dict[tuple[str, str], list[tuple[int, float, float]]] = {}
        for point in self.store.metric_series(name, tenant=tenant, agent=agent, limit=limit):
            grouped.setdefault((point.tenant, point.agent), []).append(
                (point.sequence, point.sampled_at, point.value)
            )
        return api.MetricSeriesList(
            name=name,
            series=[
                api.MetricSeries(tenant=owner, agent=who, points=points)
                for (owner, who), points in grouped.items()
            ],
            available=self.store.metric_names(tenant=tenant),
        )

    def events(self, *, tenant: str | None, agent: str | None, limit: int) -> api.EventList:
        """The newest events in scope, oldest first."""
        return api.EventList(
            events=[
                api.EventView.model_validate(record, from_attributes=True)
                for record in self.store.events(tenant=tenant, agent=agent, limit=limit)
            ]
        )

    def metrics_text(self) -> bytes:
        """The Prometheus exposition."""
        now = self.clock()
        return self.telemetry.render(
            self.store.agents(),
            up_since=now - self.settings.agents_up_window.total_seconds(),
            now=now,
        )


def _tenant_record(row: TenantRow, *, changed: bool = False) -> api.TenantRecord:
    return api.TenantRecord(
        name=row.name,
        version=row.version,
        config_version=row.config_version,
        document=TenantDocument.model_validate(row.document),
        updated_at=row.updated_at,
        updated_by=row.updated_by,
        changed=changed,
    )
