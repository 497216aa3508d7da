"""The control plane's data layer: SQLAlchemy Core over SQLite (WAL) or PostgreSQL.

One class, :class:`Store`, owns every statement, so the HTTP layer never writes SQL and both
databases run the same code. Methods are synchronous; the server calls them from worker
threads. Exactly-once storage of reports rests on the primary key (tenant, agent, sequence)
and ``INSERT ... ON CONFLICT DO NOTHING``: a batch resent after a lost answer stores nothing
twice, whatever the timing.

Times are stored as float seconds since the epoch (UTC): portable across both databases and
what the sparkline and Prometheus want anyway.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from agentcell.errors import Error, HostError

__all__ = [
    "AgentRecord",
    "CertificateRecord",
    "EventRow",
    "MetricPoint",
    "MetricRow",
    "StorageError",
    "Store",
    "TenantRow",
    "TenantVersionRow",
    "TokenRow",
]


class StorageError(Error):
    """The database refused or failed an operation."""


metadata = sa.MetaData()

agents = sa.Table(
    "agents",
    metadata,
    sa.Column("tenant", sa.String(64), primary_key=True),
    sa.Column("agent", sa.String(64), primary_key=True),
    sa.Column("enrolled_at", sa.Double, nullable=False),
    sa.Column("last_seen", sa.Double, nullable=True),
    sa.Column("last_sequence", sa.BigInteger, nullable=False, server_default="0"),
)

join_tokens = sa.Table(
    "join_tokens",
    metadata,
    sa.Column("digest", sa.String(64), primary_key=True),
    sa.Column("tenant", sa.String(64), nullable=False),
    sa.Column("agent", sa.String(64), nullable=False),
    sa.Column("issued_at", sa.Double, nullable=False),
    sa.Column("expires_at", sa.Double, nullable=False),
    sa.Column("used_at", sa.Double, nullable=True),
)

certificates = sa.Table(
    "certificates",
    metadata,
    sa.Column("serial", sa.String(64), primary_key=True),
    sa.Column("tenant", sa.String(64), nullable=False, index=True),
    sa.Column("agent", sa.String(64), nullable=False),
    sa.Column("spiffe_id", sa.String(512), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("not_before", sa.Double, nullable=False),
    sa.Column("not_after", sa.Double, nullable=False),
    sa.Column("issued_at", sa.Double, nullable=False),
    sa.Column("revoked_at", sa.Double, nullable=True),
    sa.Column("revoke_reason", sa.String(200), nullable=True),
)

metric_reports = sa.Table(
    "metric_reports",
    metadata,
    sa.Column("tenant", sa.String(64), primary_key=True),
    sa.Column("agent", sa.String(64), primary_key=True),
    sa.Column("sequence", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("sampled_at", sa.Double, nullable=False),
    sa.Column("received_at", sa.Double, nullable=False),
    sa.Column("metrics", sa.Text, nullable=False),
)

events = sa.Table(
    "events",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("tenant", sa.String(64), nullable=False),
    sa.Column("agent", sa.String(64), nullable=False),
    sa.Column("sequence", sa.BigInteger, nullable=True),
    sa.Column("at", sa.Double, nullable=False),
    sa.Column("source", sa.String(16), nullable=False),
    sa.Column("kind", sa.String(64), nullable=False),
    sa.Column("message", sa.Text, nullable=False),
    sa.UniqueConstraint("tenant", "agent", "sequence", name="events_agent_sequence"),
    sa.Index("events_tenant_at", "tenant", "at"),
)

# A tenant's current document. ``config_version`` is the tenant version at which the config
# agents read last changed, so a quota edit does not make every agent reload its config.
tenants = sa.Table(
    "tenants",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("document", sa.Text, nullable=False),
    sa.Column("version", sa.BigInteger, nullable=False),
    sa.Column("config_version", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.Double, nullable=False),
    sa.Column("updated_by", sa.String(200), nullable=False),
)

# Every change of every tenant, deletions included (``document`` NULL); rows outlive the
# tenant, so a tenant made again continues its version numbers rather than reusing them.
tenant_versions = sa.Table(
    "tenant_versions",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("version", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("document", sa.Text, nullable=True),
    sa.Column("config_version", sa.BigInteger, nullable=False),
    sa.Column("at", sa.Double, nullable=False),
    sa.Column("by", sa.String(200), nullable=False),
)


@dataclass(frozen=True, kw_only=True)
class MetricRow:
    """One metrics report as it is stored."""

    tenant: str
    agent: str
    sequence: int
    sampled_at: float
    metrics: Mapping[str, float]


@dataclass(frozen=True, kw_only=True)
class EventRow:
    """One event as it is stored and as the admin API shows it; agents' events carry their
    report sequence."""

    tenant: str
    agent: str
    sequence: int | None
    at: float
    source: str
    kind: str
    message: str


@dataclass(frozen=True, kw_only=True)
class TokenRow:
    """A join token as stored: its digest and what it grants."""

    digest: str
    tenant: str
    agent: str
    issued_at: float
    expires_at: float
    used_at: float | None


@dataclass(frozen=True, kw_only=True)
class AgentRecord:
    """An enrolled agent as the admin API shows it."""

    tenant: str
    agent: str
    enrolled_at: float
    last_seen: float | None
    last_sequence: int
    certificate_expires_at: float | None


@dataclass(frozen=True, kw_only=True)
class CertificateRecord:
    """An issued certificate."""

    serial: str
    tenant: str
    agent: str
    spiffe_id: str
    kind: str
    not_before: float
    not_after: float
    issued_at: float
    revoked_at: float | None
    revoke_reason: str | None


@dataclass(frozen=True, kw_only=True)
class TenantRow:
    """A tenant's current document (as JSON) and who changed it last."""

    name: str
    document: Mapping[str, Any]
    version: int
    config_version: int
    updated_at: float
    updated_by: str


@dataclass(frozen=True, kw_only=True)
class TenantVersionRow:
    """One change of a tenant: the document it left, or ``None`` for a deletion."""

    name: str
    version: int
    document: Mapping[str, Any] | None
    config_version: int
    at: float
    by: str


@dataclass(frozen=True, kw_only=True)
class MetricPoint:
    """One value of one metric from one report."""

    tenant: str
    agent: str
    sequence: int
    sampled_at: float
    value: float


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets the admin API read while reports are written; NORMAL sync in WAL mode survives a
    # killed process (only an OS crash can lose the last commits), which the fault test covers.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


class Store:
    """Every read and write of the control plane's state."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._dialect = engine.dialect.name

    @classmethod
    def open(cls, url: str) -> Store:
        """Connect to ``url`` (``sqlite:///path`` or ``postgresql+psycopg://...``) and make the
        schema if it is missing.

        Raises:
            HostError: the URL names a database whose driver is not installed.
            StorageError: the database cannot be reached or the schema cannot be made.
        """
        try:
            engine = sa.create_engine(url, pool_pre_ping=not url.startswith("sqlite"))
        except (ImportError, sa.exc.NoSuchModuleError) as exc:
            raise HostError(
                f"no database driver for {url.split(':', 1)[0]}: {exc}",
                fix="for PostgreSQL install the extra: pip install 'agentcell[postgres]'",
            ) from exc
        except sa.exc.ArgumentError as exc:
            raise StorageError(
                f"{url!r} is not a database URL: {exc}",
                fix="use sqlite:///PATH or postgresql+psycopg://USER@HOST/DB",
            ) from exc
        if engine.dialect.name == "sqlite":
            sa.event.listen(engine, "connect", _sqlite_pragmas)
        elif engine.dialect.name != "postgresql":
            raise StorageError(
                f"database {engine.dialect.name} is not supported",
                fix="use SQLite (the default) or PostgreSQL",
            )
        store = cls(engine)
        with store._begin("create the schema") as conn:
            metadata.create_all(conn)
        return store

    def close(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()

    @contextmanager
    def _begin(self, action: str) -> Iterator[Connection]:
        try:
            with self.engine.begin() as conn:
                yield conn
        except sa.exc.SQLAlchemyError as exc:
            raise StorageError(
                f"database error while trying to {action}: {exc.__class__.__name__}: "
                f"{str(exc).splitlines()[0]}",
                fix="check that the database is reachable and its disk is not full",
            ) from exc

    def _insert(self, table: sa.Table) -> Any:
        """An INSERT that supports ON CONFLICT on both dialects."""
        return (sqlite.insert if self._dialect == "sqlite" else postgresql.insert)(table)

    # -- tokens and certificates -------------------------------------------------------------

    def add_token(self, row: TokenRow) -> None:
        """Store a new join token (its digest only)."""
        with self._begin("store a join token") as conn:
            conn.execute(
                join_tokens.insert().values(
                    digest=row.digest,
                    tenant=row.tenant,
                    agent=row.agent,
                    issued_at=row.issued_at,
                    expires_at=row.expires_at,
                    used_at=row.used_at,
                )
            )

    def token(self, digest: str) -> TokenRow | None:
        """The stored token with this digest, used or not."""
        with self._begin("look up a join token") as conn:
            found = conn.execute(
                sa.select(join_tokens).where(join_tokens.c.digest == digest)
            ).first()
        return None if found is None else TokenRow(**found._asdict())

    def consume_token(self, digest: str, *, now: float) -> bool:
        """Mark the token used if it is unused and unexpired; whether this call did so.

        The condition and the update are one statement, so of two racing enrolments with the
        same token exactly one wins.
        """
        with self._begin("use a join token") as conn:
            result = conn.execute(
                join_tokens.update()
                .where(
                    join_tokens.c.digest == digest,
                    join_tokens.c.used_at.is_(None),
                    join_tokens.c.expires_at > now,
                )
                .values(used_at=now)
            )
            return result.rowcount == 1

    def add_certificate(self, record: CertificateRecord) -> None:
        """Record an issued certificate."""
        with self._begin("record a certificate") as conn:
            conn.execute(certificates.insert().values(**_fields(record)))

    def revoke(
        self,
        *,
        serial: str | None = None,
        tenant: str | None = None,
        agent: str | None = None,
        reason: str,
        now: float,
        except_serial: str | None = None,
    ) -> list[str]:
        """Revoke one certificate by serial, or every unrevoked one of an agent; the serials.

        Raises:
            StorageError: the database failed.
        """
        conditions: list[sa.ColumnElement[bool]] = [certificates.c.revoked_at.is_(None)]
        if serial is not None:
            conditions.append(certificates.c.serial == (serial.upper().lstrip("0") or "0"))
        if tenant is not None:
            conditions.append(certificates.c.tenant == tenant)
        if agent is not None:
            conditions.append(certificates.c.agent == agent)
        if except_serial is not None:
            conditions.append(certificates.c.serial != except_serial)
        with self._begin("revoke certificates") as conn:
            serials = list(
                conn.execute(sa.select(certificates.c.serial).where(*conditions)).scalars()
            )
            if serials:
                conn.execute(
                    certificates.update()
                    .where(certificates.c.serial.in_(serials))
                    .values(revoked_at=now, revoke_reason=reason[:200])
                )
        return serials

    def revoked_serials(self) -> set[str]:
        """Serials of every revoked certificate."""
        with self._begin("read revocations") as conn:
            return set(
                conn.execute(
                    sa.select(certificates.c.serial).where(certificates.c.revoked_at.is_not(None))
                ).scalars()
            )

    def certificates(
        self, *, tenant: str | None = None, agent: str | None = None
    ) -> list[CertificateRecord]:
        """Issued certificates, newest first."""
        query = sa.select(certificates).order_by(certificates.c.issued_at.desc())
        if tenant is not None:
            query = query.where(certificates.c.tenant == tenant)
        if agent is not None:
            query = query.where(certificates.c.agent == agent)
        with self._begin("list certificates") as conn:
            return [CertificateRecord(**row._asdict()) for row in conn.execute(query)]

    # -- agents ------------------------------------------------------------------------------

    def enrol_agent(self, tenant: str, agent: str, *, now: float) -> int:
        """Create or refresh the agent's row; the sequence number its next report should use.

        A re-enrolled agent (its cell was replaced, its tmpfs lost) continues after the last
        sequence stored, so its new reports never collide with old ones.
        """
        with self._begin("enrol an agent") as conn:
            conn.execute(
                self._insert(agents)
                .values(tenant=tenant, agent=agent, enrolled_at=now, last_seen=now)
                .on_conflict_do_update(
                    index_elements=["tenant", "agent"],
                    set_={"enrolled_at": now, "last_seen": now},
                )
            )
            last = conn.execute(
                sa.select(agents.c.last_sequence).where(
                    agents.c.tenant == tenant, agents.c.agent == agent
                )
            ).scalar_one()
        return int(last) + 1

    def heartbeat(self, tenant: str, agent: str, *, now: float) -> None:
        """Note that the agent is alive."""
        with self._begin("record a heartbeat") as conn:
            conn.execute(
                agents.update()
                .where(agents.c.tenant == tenant, agents.c.agent == agent)
                .values(last_seen=now)
            )

    def agents(self, *, tenant: str | None = None) -> list[AgentRecord]:
        """Enrolled agents with their newest unrevoked certificate's expiry."""
        expiry = (
            sa.select(sa.func.max(certificates.c.not_after))
            .where(
                certificates.c.tenant == agents.c.tenant,
                certificates.c.agent == agents.c.agent,
                certificates.c.revoked_at.is_(None),
            )
            .scalar_subquery()
        )
        query = sa.select(agents, expiry.label("certificate_expires_at")).order_by(
            agents.c.tenant, agents.c.agent
        )
        if tenant is not None:
            query = query.where(agents.c.tenant == tenant)
        with self._begin("list agents") as conn:
            return [AgentRecord(**row._asdict()) for row in conn.execute(query)]

    def agents_seen_since(self, since: float) -> int:
        """How many agents reported or beat since ``since``."""
        with self._begin("count live agents") as conn:
            query = sa.select(sa.func.count()).select_from(agents)
            return int(conn.execute(query.where(agents.c.last_seen >= since)).scalar_one())

    # -- reports -----------------------------------------------------------------------------

    def store_reports(
        self, metric_rows: Sequence[MetricRow], event_rows: Sequence[EventRow], *, now: float
    ) -> set[tuple[str, str, int]]:
        """Store reports from any number of agents in one transaction; the keys that were new.

        Rows whose (tenant, agent, sequence) is already stored are skipped, not errors; the
        returned set tells each caller which of its sequences were stored by this call.
        """
        new: set[tuple[str, str, int]] = set()
        latest: dict[tuple[str, str], int] = {}
        rows: list[MetricRow | EventRow] = [*metric_rows, *event_rows]
        for row in rows:
            if row.sequence is not None:
                key = (row.tenant, row.agent)
                latest[key] = max(latest.get(key, 0), row.sequence)
        with self._begin("store reports") as conn:
            if metric_rows:
                result = conn.execute(
                    self._insert(metric_reports)
                    .on_conflict_do_nothing()
                    .returning(
                        metric_reports.c.tenant, metric_reports.c.agent, metric_reports.c.sequence
                    ),
                    [
                        {
                            "tenant": row.tenant,
                            "agent": row.agent,
                            "sequence": row.sequence,
                            "sampled_at": row.sampled_at,
                            "received_at": now,
                            "metrics": json.dumps(dict(row.metrics), separators=(",", ":")),
                        }
                        for row in metric_rows
                    ],
                )
                new.update((t, a, int(q)) for t, a, q in result.all())
            if event_rows:
                result = conn.execute(
                    self._insert(events)
                    .on_conflict_do_nothing()
                    .returning(events.c.tenant, events.c.agent, events.c.sequence),
                    [_fields(row) for row in event_rows],
                )
                new.update((t, a, int(q)) for t, a, q in result.all() if q is not None)
            if latest:
                # One statement with many parameter sets: far cheaper than one per agent.
                conn.execute(
                    agents.update()
                    .where(
                        agents.c.tenant == sa.bindparam("b_tenant"),
                        agents.c.agent == sa.bindparam("b_agent"),
                    )
                    .values(
                        last_seen=now,
                        last_sequence=sa.case(
                            (
                                agents.c.last_sequence < sa.bindparam("b_sequence"),
                                sa.bindparam("b_sequence"),
                            ),
                            else_=agents.c.last_sequence,
                        ),
                    ),
                    [
                        {"b_tenant": tenant, "b_agent": agent, "b_sequence": sequence}
                        for (tenant, agent), sequence in latest.items()
                    ],
                )
        return new

    def add_event(self, row: EventRow) -> None:
        """Record one event from the control plane itself."""
        self.store_reports((), (row,), now=row.at)

    def stored_sequences(self, tenant: str, agent: str) -> list[int]:
        """Every stored sequence of one agent, metrics and events, ascending (with repeats
        if the store were ever to hold one twice: that is what the fault test looks for)."""
        with self._begin("read sequences") as conn:
            metric = conn.execute(
                sa.select(metric_reports.c.sequence).where(
                    metric_reports.c.tenant == tenant, metric_reports.c.agent == agent
                )
            ).scalars()
            event = conn.execute(
                sa.select(events.c.sequence).where(
                    events.c.tenant == tenant,
                    events.c.agent == agent,
                    events.c.sequence.is_not(None),
                )
            ).scalars()
            return sorted(int(value) for value in (*metric, *event))

    def metric_series(
        self, name: str, *, tenant: str | None = None, agent: str | None = None, limit: int = 30
    ) -> list[MetricPoint]:
        """The last ``limit`` values of metric ``name`` for each agent in scope, oldest first."""
        points: list[MetricPoint] = []
        with self._begin("read metrics") as conn:
            scope = sa.select(agents.c.tenant, agents.c.agent).order_by(
                agents.c.tenant, agents.c.agent
            )
            if tenant is not None:
                scope = scope.where(agents.c.tenant == tenant)
            if agent is not None:
                scope = scope.where(agents.c.agent == agent)
            for owner, who in conn.execute(scope).all():
                rows = conn.execute(
                    sa.select(
                        metric_reports.c.sequence,
                        metric_reports.c.sampled_at,
                        metric_reports.c.metrics,
                    )
                    .where(metric_reports.c.tenant == owner, metric_reports.c.agent == who)
                    .order_by(metric_reports.c.sequence.desc())
                    .limit(limit)
                ).all()
                for sequence, sampled_at, text in reversed(rows):
                    value = _loads(text).get(name)
                    # Skipped, not shown: a NaN or infinity stored before reports were checked
                    # for them would otherwise break this metric for every reader.
                    if (
                        isinstance(value, int | float)
                        and math.isfinite(value)
                        and sampled_at is not None
                        and math.isfinite(sampled_at)
                    ):
                        points.append(
                            MetricPoint(
                                tenant=owner,
                                agent=who,
                                sequence=int(sequence),
                                sampled_at=float(sampled_at),
                                value=float(value),
                            )
                        )
        return points

    def metric_names(self, *, tenant: str | None = None) -> list[str]:
        """Metric names in the newest report of each agent in scope."""
        names: set[str] = set()
        with self._begin("read metric names") as conn:
            latest = sa.select(
                metric_reports.c.tenant,
                metric_reports.c.agent,
                sa.func.max(metric_reports.c.sequence).label("sequence"),
            ).group_by(metric_reports.c.tenant, metric_reports.c.agent)
            if tenant is not None:
                latest = latest.where(metric_reports.c.tenant == tenant)
            for owner, who, sequence in conn.execute(latest).all():
                text = conn.execute(
                    sa.select(metric_reports.c.metrics).where(
                        metric_reports.c.tenant == owner,
                        metric_reports.c.agent == who,
                        metric_reports.c.sequence == sequence,
                    )
                ).scalar_one()
                names.update(_loads(text))
        return sorted(names)

    def events(
        self, *, tenant: str | None = None, agent: str | None = None, limit: int = 50
    ) -> list[EventRow]:
        """The newest ``limit`` events in scope, oldest first."""
        query = sa.select(events).order_by(events.c.at.desc(), events.c.id.desc()).limit(limit)
        if tenant is not None:
            query = query.where(events.c.tenant == tenant)
        if agent is not None:
            query = query.where(events.c.agent == agent)
        with self._begin("read events") as conn:
            rows = conn.execute(query).all()
        return [
            EventRow(
                tenant=row.tenant,
                agent=row.agent,
                sequence=row.sequence,
                at=row.at,
                source=row.source,
                kind=row.kind,
                message=row.message,
            )
            for row in reversed(rows)
            if row.at is not None and math.isfinite(row.at)  # as for metrics: unreadable
        ]

    # -- tenants -----------------------------------------------------------------------------

    def put_tenant(
        self, name: str, document: Mapping[str, Any], *, by: str, now: float
    ) -> tuple[TenantRow, bool]:
        """Make ``document`` the tenant's current one; the row and whether anything changed.

        A document equal to the current one (as canonical JSON) makes no new version. Otherwise
        the version is one more than the tenant's last in its history (deletions count), and
        the config version moves to it only when ``spec.config`` changed.
        """
        text = _canonical(document)
        with self._begin("store a tenant") as conn:
            current = conn.execute(sa.select(tenants).where(tenants.c.name == name)).first()
            if current is not None and current.document == text:
                return _tenant_row(current), False
            last = conn.execute(
                sa.select(tenant_versions.c.version, tenant_versions.c.config_version)
                .where(tenant_versions.c.name == name)
                .order_by(tenant_versions.c.version.desc())
                .limit(1)
            ).first()
            version = (int(last.version) if last is not None else 0) + 1
            previous_config = _config_of(_loads(current.document)) if current is not None else {}
            previous_config_version = int(last.config_version) if last is not None else 0
            config_version = (
                previous_config_version if _config_of(document) == previous_config else version
            )
            values = {
                "document": text,
                "version": version,
                "config_version": config_version,
                "updated_at": now,
                "updated_by": by,
            }
            conn.execute(
                self._insert(tenants)
                .values(name=name, **values)
                .on_conflict_do_update(index_elements=["name"], set_=values)
            )
            conn.execute(
                tenant_versions.insert().values(
                    name=name,
                    version=version,
                    document=text,
                    config_version=config_version,
                    at=now,
                    by=by,
                )
            )
            row = conn.execute(sa.select(tenants).where(tenants.c.name == name)).one()
        return _tenant_row(row), True

    def tenant(self, name: str) -> TenantRow | None:
        """The tenant's current document, or ``None`` when there is none."""
        with self._begin("read a tenant") as conn:
            row = conn.execute(sa.select(tenants).where(tenants.c.name == name)).first()
        return None if row is None else _tenant_row(row)

    def tenants(self) -> list[TenantRow]:
        """Every tenant with a current document, by name."""
        with self._begin("list tenants") as conn:
            rows = conn.execute(sa.select(tenants).order_by(tenants.c.name)).all()
        return [_tenant_row(row) for row in rows]

    def delete_tenant(self, name: str, *, by: str, now: float) -> int | None:
        """Remove the tenant's current document and record the deletion as a version of its
        own; that version, or ``None`` when the tenant had no document."""
        with self._begin("delete a tenant") as conn:
            current = conn.execute(sa.select(tenants).where(tenants.c.name == name)).first()
            if current is None:
                return None
            version = int(current.version) + 1
            # Its agents now read an empty config: a change only if there was one.
            config_version = (
                version if _config_of(_loads(current.document)) else int(current.config_version)
            )
            conn.execute(tenants.delete().where(tenants.c.name == name))
            conn.execute(
                tenant_versions.insert().values(
                    name=name,
                    version=version,
                    document=None,
                    config_version=config_version,
                    at=now,
                    by=by,
                )
            )
        return version

    def tenant_versions(self, name: str) -> list[TenantVersionRow]:
        """Every change of the tenant, oldest first (kept after it is deleted)."""
        with self._begin("read a tenant's history") as conn:
            rows = conn.execute(
                sa.select(tenant_versions)
                .where(tenant_versions.c.name == name)
                .order_by(tenant_versions.c.version)
            ).all()
        return [
            TenantVersionRow(
                name=row.name,
                version=int(row.version),
                document=None if row.document is None else _loads(row.document),
                config_version=int(row.config_version),
                at=float(row.at),
                by=row.by,
            )
            for row in rows
        ]

    def config(self, tenant: str) -> tuple[dict[str, str], int]:
        """The config the tenant's agents read (its document's ``spec.config``) and its
        version: ``{}`` and the last config version when the tenant has no document (0 if it
        never had one)."""
        with self._begin("read a tenant configuration") as conn:
            row = conn.execute(
                sa.select(tenants.c.document, tenants.c.config_version).where(
                    tenants.c.name == tenant
                )
            ).first()
            if row is not None:
                return _config_of(_loads(row.document)), int(row.config_version)
            last = conn.execute(
                sa.select(tenant_versions.c.config_version)
                .where(tenant_versions.c.name == tenant)
                .order_by(tenant_versions.c.version.desc())
                .limit(1)
            ).scalar_one_or_none()
        return {}, int(last or 0)


def _canonical(document: Mapping[str, Any]) -> str:
    """One text per document, so equal documents compare equal as stored."""
    return json.dumps(dict(document), sort_keys=True, separators=(",", ":"))


def _config_of(document: Mapping[str, Any]) -> dict[str, str]:
    """``spec.config`` of a stored document; anything but strings is not config."""
    spec = document.get("spec")
    config = spec.get("config") if isinstance(spec, Mapping) else None
    if not isinstance(config, Mapping):
        return {}
    return {str(key): value for key, value in config.items() if isinstance(value, str)}


def _tenant_row(row: Any) -> TenantRow:
    return TenantRow(
        name=row.name,
        document=_loads(row.document),
        version=int(row.version),
        config_version=int(row.config_version),
        updated_at=float(row.updated_at),
        updated_by=row.updated_by,
    )


def _loads(text: str) -> dict[str, Any]:
    """A stored JSON object; an unreadable or non-object one reads as empty."""
    try:
        loaded = json.loads(text)
    except ValueError:
        return {}
    return loaded if isinstance(loaded, dict) else {}


def _fields(record: CertificateRecord | EventRow) -> dict[str, Any]:
    return asdict(record)
