"""One-time join tokens: how a new cell proves it is the cell ``up`` launched.

A token is 256 random bits bound, on the control plane, to one tenant and one agent name. Only
its SHA-256 is stored: the token has full entropy, so a slow password hash would add nothing,
and a leaked database cannot be replayed. Use is a single conditional update (unused and not
expired -> used), so two racing enrolments cannot both win.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass
from typing import Literal

from agentcell.identity.spiffe import SpiffeId

__all__ = [
    "TOKEN_PREFIX",
    "JoinToken",
    "TokenRecord",
    "TokenVerdict",
    "hash_token",
    "judge_token",
    "new_token",
]

TOKEN_PREFIX = "acjt_"  # noqa: S105 - a marker that makes leaked tokens easy to grep for
_TOKEN_BYTES = 32

TokenVerdict = Literal["ok", "unknown", "used", "expired"]


@dataclass(frozen=True, kw_only=True)
class JoinToken:
    """A freshly issued token: the secret (shown once) and what it grants."""

    secret: str
    identity: SpiffeId
    expires_at: dt.datetime

    @property
    def digest(self) -> str:
        """What the control plane stores instead of the secret."""
        return hash_token(self.secret)


@dataclass(frozen=True, kw_only=True)
class TokenRecord:
    """What the control plane knows of a token."""

    digest: str
    tenant: str
    agent: str
    expires_at: dt.datetime
    used_at: dt.datetime | None


def new_token(identity: SpiffeId, *, ttl: dt.timedelta, now: dt.datetime) -> JoinToken:
    """A new random token for ``identity`` that expires ``ttl`` after ``now``."""
    secret = TOKEN_PREFIX + secrets.token_urlsafe(_TOKEN_BYTES)
    return JoinToken(secret=secret, identity=identity, expires_at=now + ttl)


def hash_token(secret: str) -> str:
    """The hex SHA-256 of a token, its lookup key at rest."""
    return hashlib.sha256(secret.strip().encode("utf-8")).hexdigest()


def judge_token(record: TokenRecord | None, *, now: dt.datetime) -> TokenVerdict:
    """Whether a stored token may enrol now. Used beats expired: reuse is the louder signal."""
    if record is None:
        return "unknown"
    if record.used_at is not None:
        return "used"
    if now >= record.expires_at:
        return "expired"
    return "ok"
