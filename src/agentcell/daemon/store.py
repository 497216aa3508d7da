"""The host service's database: SQLAlchemy Core over SQLite at ``<state>/daemon/daemon.db``.

Two tables, each with one owner:

- ``tenant_tokens``: the tenant API tokens, by id, as the SHA-256 of the secret only (the
  secret is printed once by ``agentcell daemon token create`` and never stored).
  :class:`TokenStore` reads and writes them; :mod:`agentcell.daemon.tokens` decides what a
  presented token means.
- ``sandboxes``: what the sandbox engine must remember across a restart.
  :class:`SandboxStore` is a :class:`~agentcell.daemon.records.SandboxRecords`: ``save(record)``
  writes (or replaces) one :class:`~agentcell.daemon.records.SandboxRecord`, ``load()`` reads
  them all back, ``delete(id)`` forgets one. The calls block; the engine runs them on its
  threads.

The database file is 0600 in a 0700 directory: it holds token digests, and nobody but the
service's owner has a reason to read it. SQLite runs in WAL mode, so the CLI's token commands
and the running service use it at the same time.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from agentcell.daemon.records import SandboxRecord
from agentcell.errors import Error

__all__ = ["DaemonStore", "SandboxStore", "ServiceStorageError", "TokenRow", "TokenStore"]

DATABASE_FILE = "daemon.db"
BUSY_TIMEOUT_MS = 5000


class ServiceStorageError(Error):
    """The service's database refused or failed an operation."""

    exit_code = 3


metadata = sa.MetaData()

tenant_tokens = sa.Table(
    "tenant_tokens",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("tenant", sa.String(64), nullable=False, index=True),
    sa.Column("digest", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("revoked_at", sa.Double, nullable=True),
)

sandboxes = sa.Table(
    "sandboxes",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("tenant", sa.String(64), nullable=False, index=True),
    sa.Column("template", sa.String(128), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("cell", sa.String(256), nullable=False),
    sa.Column("warm", sa.Boolean, nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("expires_at", sa.Double, nullable=False),
    sa.Column("acquire_ms", sa.Double, nullable=False),
    sa.Column("ended_at", sa.Double, nullable=True),
)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


@dataclass(frozen=True, kw_only=True)
class TokenRow:
    """A tenant token as stored: never the secret."""

    id: str
    tenant: str
    digest: str
    created_at: float
    revoked_at: float | None


class DaemonStore:
    """The open database; :attr:`tokens` and :attr:`sandboxes` are its two views."""

    def __init__(self, engine: Engine, path: Path) -> None:
        self.engine = engine
        self.path = path
        self.tokens = TokenStore(self)
        self.sandboxes = SandboxStore(self)

    @classmethod
    def open(cls, daemon_dir: Path) -> DaemonStore:
        """Open (and make, 0600 in a 0700 directory) ``<daemon_dir>/daemon.db``.

        Raises:
            ServiceStorageError: the directory or the database cannot be made or opened.
        """
        path = daemon_dir / DATABASE_FILE
        try:
            daemon_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            # Made empty with its mode first, so SQLite never creates it with the umask's.
            os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))
        except OSError as exc:
            raise ServiceStorageError(
                f"cannot open the service's database {path}: {exc.strerror}",
                fix="run as the state directory's owner, or set AGENTCELL_HOME to a writable place",
            ) from exc
        engine = sa.create_engine(f"sqlite:///{path}")
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        store = cls(engine, path)
        with store.begin("create the schema") as conn:
            metadata.create_all(conn)
        return store

    def close(self) -> None:
        """Close every pooled connection."""
        self.tokens.close()
        self.engine.dispose()

    @contextmanager
    def begin(self, action: str) -> Iterator[Connection]:
        """A transaction; database failures become :class:`ServiceStorageError` naming ``action``.

        Raises:
            ServiceStorageError: the database failed.
        """
        try:
            with self.engine.begin() as conn:
                yield conn
        except sa.exc.SQLAlchemyError as exc:
            raise ServiceStorageError(
                f"cannot {action} in {self.path}: {exc.__class__.__name__}: {exc.args[0]}"
                if exc.args
                else f"cannot {action} in {self.path}",
                fix="check the disk and the file's owner; the service keeps serving",
            ) from exc


class TokenStore:
    """Tenant tokens, by id and by digest."""

    def __init__(self, store: DaemonStore) -> None:
        self._store = store
        self._watch: sqlite3.Connection | None = None
        self._watch_lock = threading.Lock()

    def version(self) -> int:
        """A number that changes whenever any connection, of this process or another (the
        CLI's token commands), commits to the database: SQLite's ``data_version``, read on
        a read-only connection of its own that never writes.

        Raises:
            ServiceStorageError: the database failed.
        """
        with self._watch_lock:
            try:
                if self._watch is None:
                    self._watch = sqlite3.connect(
                        f"{self._store.path.as_uri()}?mode=ro",
                        uri=True,
                        check_same_thread=False,
                        isolation_level=None,
                    )
                return int(self._watch.execute("PRAGMA data_version").fetchone()[0])
            except sqlite3.Error as exc:
                raise ServiceStorageError(
                    f"cannot read the version of {self._store.path}: {exc}",
                    fix="check the disk and the file's owner; the service keeps serving",
                ) from exc

    def close(self) -> None:
        with self._watch_lock:
            if self._watch is not None:
                self._watch.close()
                self._watch = None

    def add(self, *, token_id: str, tenant: str, digest: str) -> TokenRow:
        """Record a new token's digest.

        Raises:
            ServiceStorageError: the database failed (or the id or digest exists already).
        """
        row = TokenRow(
            id=token_id, tenant=tenant, digest=digest, created_at=time.time(), revoked_at=None
        )
        with self._store.begin("store a tenant token") as conn:
            conn.execute(
                tenant_tokens.insert().values(
                    id=row.id, tenant=row.tenant, digest=row.digest, created_at=row.created_at
                )
            )
        return row

    def by_digest(self, digest: str) -> TokenRow | None:
        """The token with this digest, revoked or not; None when there is none.

        Raises:
            ServiceStorageError: the database failed.
        """
        with self._store.begin("read a tenant token") as conn:
            found = conn.execute(
                sa.select(tenant_tokens).where(tenant_tokens.c.digest == digest)
            ).first()
        return None if found is None else TokenRow(**found._mapping)

    def all(self, tenant: str | None = None) -> list[TokenRow]:
        """Every token (of ``tenant``), oldest first.

        Raises:
            ServiceStorageError: the database failed.
        """
        query = sa.select(tenant_tokens).order_by(tenant_tokens.c.created_at, tenant_tokens.c.id)
        if tenant is not None:
            query = query.where(tenant_tokens.c.tenant == tenant)
        with self._store.begin("list tenant tokens") as conn:
            return [TokenRow(**row._mapping) for row in conn.execute(query)]

    def revoke(self, token_id: str) -> bool:
        """Revoke one token; False when no unrevoked token has that id.

        Raises:
            ServiceStorageError: the database failed.
        """
        with self._store.begin("revoke a tenant token") as conn:
            result = conn.execute(
                tenant_tokens.update()
                .where(tenant_tokens.c.id == token_id, tenant_tokens.c.revoked_at.is_(None))
                .values(revoked_at=time.time())
            )
        return bool(result.rowcount)


class SandboxStore:
    """Sandbox records in the ``sandboxes`` table (the engine's
    :class:`~agentcell.daemon.records.SandboxRecords`)."""

    def __init__(self, store: DaemonStore) -> None:
        self._store = store

    def save(self, record: SandboxRecord) -> None:
        """Write ``record``, replacing the one with its id.

        Raises:
            ServiceStorageError: the database failed.
        """
        values = {
            "id": record.id,
            "tenant": record.tenant,
            "template": record.template,
            "state": record.state,
            "cell": record.cell,
            "warm": record.warm,
            "created_at": record.created_at,
            "expires_at": record.expires_at,
            "acquire_ms": record.acquire_ms,
            "ended_at": record.ended_at,
        }
        with self._store.begin("save a sandbox record") as conn:
            conn.execute(sandboxes.delete().where(sandboxes.c.id == record.id))
            conn.execute(sandboxes.insert().values(**values))

    def load(self) -> list[SandboxRecord]:
        """Every record, oldest first.

        Raises:
            ServiceStorageError: the database failed.
        """
        with self._store.begin("read the sandbox records") as conn:
            rows = conn.execute(sa.select(sandboxes).order_by(sandboxes.c.created_at)).all()
        return [SandboxRecord(**row._mapping) for row in rows]

    def delete(self, sandbox_id: str) -> None:
        """Forget one sandbox (nothing happens when there is no such record).

        Raises:
            ServiceStorageError: the database failed.
        """
        with self._store.begin("delete a sandbox record") as conn:
            conn.execute(sandboxes.delete().where(sandboxes.c.id == sandbox_id))
