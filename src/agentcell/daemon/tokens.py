"""Who a bearer token is: a tenant (its API token) or the host's administrator.

- A **tenant token** is ``acs_`` and 43 random URL-safe characters. It is shown once, when
  ``agentcell daemon token create TENANT`` makes it; the store keeps its SHA-256 only
  (:func:`agentcell.identity.tokens.hash_token`, the control plane's join-token digest), so a
  copy of the database names tenants but lets nobody act as one. Revoked tokens stay listed.
- The **admin token** is a file, ``<state>/daemon/admin.token`` (0600), made at the service's
  first start; it may act for any tenant.

Digests are compared with :func:`hmac.compare_digest`. Nothing else of a request (a header, a
query parameter) says who is calling.

A token found valid is remembered until the next commit to the database by anyone (SQLite's
``data_version``), so a revocation, from this process or from the CLI, holds from the next
request on, and a token in use costs no database read per request.
"""

from __future__ import annotations

import hmac
import re
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path

from agentcell.daemon.store import TokenRow, TokenStore
from agentcell.errors import InvalidInput
from agentcell.identity.files import read_text, write_file
from agentcell.identity.tokens import hash_token

__all__ = [
    "ADMIN_TOKEN_FILE",
    "Principal",
    "TokenAuthority",
    "bearer_token",
    "ensure_admin_token",
    "read_admin_token",
    "validate_tenant",
]

ADMIN_TOKEN_FILE = "admin.token"  # noqa: S105 - a file name
TOKEN_PREFIX = "acs_"  # noqa: S105 - the public prefix of every tenant token
_TENANT = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
MAX_TENANT_LENGTH = 12
MAX_TOKEN_LENGTH = 256
MAX_KNOWN = 1024
"""Valid tokens remembered between database commits at most (forgotten all at once)."""


@dataclass(frozen=True, kw_only=True)
class Principal:
    """An authenticated caller: ``tenant`` is None for the admin token."""

    tenant: str | None
    token_id: str

    @property
    def is_admin(self) -> bool:
        return self.tenant is None


ADMIN = Principal(tenant=None, token_id="admin")  # noqa: S106 - an id, not a secret


def validate_tenant(name: str) -> str:
    """``name`` when it is a tenant name (a DNS label of at most 12 characters).

    Raises:
        InvalidInput: it is not.
    """
    if len(name) > MAX_TENANT_LENGTH or not _TENANT.match(name):
        raise InvalidInput(
            f"{name!r} is not a tenant name",
            fix="tenant names are DNS labels of at most 12 characters (a-z, 0-9, '-')",
        )
    return name


def bearer_token(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None when there is none
    (another scheme, an empty or oversized token)."""
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > MAX_TOKEN_LENGTH:
        return None
    return token


def ensure_admin_token(daemon_dir: Path) -> Path:
    """Make ``admin.token`` (0600) unless it exists; its path.

    Raises:
        IdentityError: it cannot be written.
    """
    path = daemon_dir / ADMIN_TOKEN_FILE
    if not path.exists():
        write_file(path, (secrets.token_urlsafe(32) + "\n").encode(), mode=0o600)
    return path


def read_admin_token(daemon_dir: Path) -> str:
    """The admin token.

    Raises:
        IdentityError: it cannot be read.
    """
    return read_text(daemon_dir / ADMIN_TOKEN_FILE, what="service admin token").strip()


class TokenAuthority:
    """Issues tenant tokens and says whose a presented token is."""

    def __init__(self, store: TokenStore, *, admin_token: str | None = None) -> None:
        self._store = store
        self._admin_digest = hash_token(admin_token) if admin_token else None
        self._known: dict[str, tuple[int, Principal]] = {}
        """digest -> (the database's version when it was read, whose it is): valid tokens
        only, each good while nothing has been committed to the database since."""
        self._known_lock = threading.Lock()

    def issue(self, tenant: str) -> tuple[TokenRow, str]:
        """A new token for ``tenant``: its stored row and the secret (shown once).

        Raises:
            InvalidInput: ``tenant`` is not a tenant name.
            ServiceStorageError: the database failed.
        """
        validate_tenant(tenant)
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        row = self._store.add(
            token_id=f"tok-{secrets.token_hex(6)}", tenant=tenant, digest=hash_token(secret)
        )
        return row, secret

    def identify(self, token: str) -> Principal | None:
        """Whose ``token`` is; None for an unknown or revoked one.

        Raises:
            ServiceStorageError: the database failed.
        """
        digest = hash_token(token)
        if self._admin_digest is not None and hmac.compare_digest(digest, self._admin_digest):
            return ADMIN
        if not token.startswith(TOKEN_PREFIX):
            return None
        # Read the version first: a revocation committed after it changes it, and one
        # committed before it shows in the row.
        version = self._store.version()
        row = self._store.by_digest(digest)
        if row is None or row.revoked_at is not None:
            return None
        if not hmac.compare_digest(row.digest, digest):
            return None
        principal = Principal(tenant=row.tenant, token_id=row.id)
        with self._known_lock:
            if len(self._known) >= MAX_KNOWN:
                self._known.clear()
            self._known[digest] = (version, principal)
        return principal

    def known(self, token: str) -> Principal | None:
        """Whose ``token`` is, when that needs no database read: the admin token, or a
        tenant token :meth:`identify` found valid while nothing was committed to the database
        since (a revocation, by this process or the CLI, is a commit). None means "ask
        :meth:`identify`", not "refused"; it never blocks for longer than SQLite's version read.

        Raises:
            ServiceStorageError: the database failed.
        """
        digest = hash_token(token)
        if self._admin_digest is not None and hmac.compare_digest(digest, self._admin_digest):
            return ADMIN
        with self._known_lock:
            found = self._known.get(digest)
        if found is None or found[0] != self._store.version():
            return None
        return found[1]
