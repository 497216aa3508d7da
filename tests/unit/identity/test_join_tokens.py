"""Join tokens: random, stored as a hash, judged by use and expiry."""

from __future__ import annotations

import datetime as dt

from agentcell.identity.spiffe import SpiffeId
from agentcell.identity.tokens import TOKEN_PREFIX, TokenRecord, hash_token, judge_token, new_token

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
IDENTITY = SpiffeId("agentcell.local", "acme", "probe")


def _record(*, expires_in: float, used: bool) -> TokenRecord:
    return TokenRecord(
        digest="d",
        tenant="acme",
        agent="probe",
        expires_at=NOW + dt.timedelta(seconds=expires_in),
        used_at=NOW if used else None,
    )


def test_tokens_are_unique_prefixed_and_stored_only_as_hashes() -> None:
    tokens = {new_token(IDENTITY, ttl=dt.timedelta(minutes=5), now=NOW).secret for _ in range(200)}
    assert len(tokens) == 200
    token = new_token(IDENTITY, ttl=dt.timedelta(minutes=5), now=NOW)
    assert token.secret.startswith(TOKEN_PREFIX)
    assert len(token.secret) > 40
    assert token.digest == hash_token(token.secret)
    assert token.secret not in token.digest
    assert token.expires_at == NOW + dt.timedelta(minutes=5)


def test_hash_ignores_surrounding_whitespace_from_a_token_file() -> None:
    assert hash_token("acjt_x\n") == hash_token("acjt_x")


def test_verdicts() -> None:
    assert judge_token(None, now=NOW) == "unknown"
    assert judge_token(_record(expires_in=60, used=False), now=NOW) == "ok"
    assert judge_token(_record(expires_in=0, used=False), now=NOW) == "expired"
    assert judge_token(_record(expires_in=-1, used=False), now=NOW) == "expired"
    # Reuse is reported even once the token has also expired: it is the louder signal.
    assert judge_token(_record(expires_in=-1, used=True), now=NOW) == "used"
    assert judge_token(_record(expires_in=60, used=True), now=NOW) == "used"
