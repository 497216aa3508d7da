"""Bookkeeping behind the control plane's limits: open connections per peer, enrolment attempts
per peer, and refused enrolments summarised per window.

Pure and synchronous, with the clock passed in: the listeners (:mod:`.listeners`), the handlers
and the service call these, and the unit tests drive them without a server. A *peer* is a short
text naming who connects: ``uid 1001`` on the agents' Unix socket (from ``SO_PEERCRED``, so it
cannot be claimed, only had) and the IP address on TCP.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "Admission",
    "ConnectionTable",
    "PeerRateLimiter",
    "RefusalDigest",
    "RefusalSummary",
]

Admission = Literal["ok", "peer_limit", "total_limit"]


class ConnectionTable:
    """Open connections, in all and per peer. Used from the event loop only."""

    def __init__(self, *, max_total: int, max_per_peer: int) -> None:
        self.max_total = max_total
        self.max_per_peer = max_per_peer
        self._open: Counter[str] = Counter()
        self._total = 0

    @property
    def total(self) -> int:
        """Connections open now."""
        return self._total

    def open_from(self, peer: str) -> int:
        """Connections ``peer`` has open now."""
        return self._open[peer]

    def admit(self, peer: str) -> Admission:
        """Count a new connection of ``peer``, or say which limit refuses it (then it is not
        counted and must be closed)."""
        # The peer's own limit is checked first, so a flood from one peer is reported as that
        # peer's, even when it also fills the server.
        if self._open[peer] >= self.max_per_peer:
            return "peer_limit"
        if self._total >= self.max_total:
            return "total_limit"
        self._open[peer] += 1
        self._total += 1
        return "ok"

    def release(self, peer: str) -> None:
        """Forget one admitted connection of ``peer`` (it closed)."""
        if self._open[peer] <= 0:
            return
        self._open[peer] -= 1
        self._total -= 1
        if not self._open[peer]:
            del self._open[peer]  # peers come and go; keep only those with open connections


@dataclass
class _Bucket:
    tokens: float
    updated: float


class PeerRateLimiter:
    """A token bucket per peer: ``burst`` attempts at once, refilled at ``per_minute``.

    Thread-safe. Idle peers' buckets are dropped once full, so memory follows the number of
    recently active peers, not of every peer ever seen.
    """

    def __init__(self, *, burst: int, per_minute: float, max_peers: int = 4096) -> None:
        self.burst = burst
        self.per_second = per_minute / 60.0
        self.max_peers = max_peers
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def _refilled(self, bucket: _Bucket, now: float) -> float:
        return min(float(self.burst), bucket.tokens + (now - bucket.updated) * self.per_second)

    def allow(self, peer: str, *, now: float) -> bool:
        """Take one attempt from ``peer``'s bucket; whether there was one to take."""
        with self._lock:
            bucket = self._buckets.get(peer)
            if bucket is None:
                if len(self._buckets) >= self.max_peers:
                    self._forget_full(now)
                bucket = self._buckets[peer] = _Bucket(tokens=float(self.burst), updated=now)
            bucket.tokens = self._refilled(bucket, now)
            bucket.updated = now
            if bucket.tokens < 1.0:
                return False
            bucket.tokens -= 1.0
            return True

    def retry_after(self, peer: str, *, now: float) -> float:
        """Seconds until ``peer`` has an attempt again (0 when it has one now)."""
        with self._lock:
            bucket = self._buckets.get(peer)
            if bucket is None:
                return 0.0
            missing = 1.0 - self._refilled(bucket, now)
        return max(0.0, missing / self.per_second) if self.per_second > 0 else float("inf")

    def _forget_full(self, now: float) -> None:
        full = [peer for peer, b in self._buckets.items() if self._refilled(b, now) >= self.burst]
        for peer in full:
            del self._buckets[peer]
        if len(self._buckets) >= self.max_peers:
            # Every tracked peer is active: forget the stalest rather than grow without bound.
            stalest = min(self._buckets, key=lambda peer: self._buckets[peer].updated)
            del self._buckets[stalest]


@dataclass(frozen=True, kw_only=True)
class RefusalSummary:
    """Refused enrolments of one (tenant, agent, peer) within one window."""

    tenant: str
    agent: str
    peer: str
    count: int
    reasons: tuple[tuple[str, int], ...]
    started: float
    ended: float

    def message(self) -> str:
        """The event text, e.g. ``12 refused enrolments from uid 1001 in the last 60 s
        (used_token: 12)``."""
        reasons = ", ".join(f"{reason}: {count}" for reason, count in self.reasons)
        noun = "enrolment" if self.count == 1 else "enrolments"
        span = max(self.ended - self.started, 0.0)
        return f"{self.count} refused {noun} from {self.peer} in the last {span:.0f} s ({reasons})"


@dataclass
class _Window:
    started: float
    reasons: Counter[str]


class RefusalDigest:
    """Collects refused enrolments and hands them back as one summary per key and window.

    A window starts at a key's first refusal and lasts ``window`` seconds; a caller asks for
    the finished ones with :meth:`due` and records each as a single event. So a cell retrying
    a spent token in a loop costs one row per window, not one per attempt. Thread-safe.
    """

    def __init__(self, *, window: float) -> None:
        self.window = window
        self._open: dict[tuple[str, str, str], _Window] = {}
        self._lock = threading.Lock()

    def add(self, *, tenant: str, agent: str, peer: str, reason: str, now: float) -> None:
        """Count one refusal."""
        key = (tenant, agent, peer)
        with self._lock:
            current = self._open.get(key)
            if current is None:
                current = self._open[key] = _Window(started=now, reasons=Counter())
            current.reasons[reason] += 1

    def due(self, *, now: float) -> list[RefusalSummary]:
        """Summaries of the windows that have ended by ``now``; they are forgotten here."""
        return self._take(lambda window: now - window.started >= self.window, now=now)

    def drain(self, *, now: float) -> list[RefusalSummary]:
        """Summaries of every window, ended or not (at shutdown)."""
        return self._take(lambda _window: True, now=now)

    def _take(self, ended: Callable[[_Window], bool], *, now: float) -> list[RefusalSummary]:
        with self._lock:
            keys = [key for key, window in self._open.items() if ended(window)]
            taken = [(key, self._open.pop(key)) for key in keys]
        return [
            RefusalSummary(
                tenant=tenant,
                agent=agent,
                peer=peer,
                count=sum(window.reasons.values()),
                reasons=tuple(sorted(window.reasons.items())),
                started=window.started,
                ended=min(now, window.started + self.window),
            )
            for (tenant, agent, peer), window in taken
        ]
