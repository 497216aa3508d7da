"""Rate-limited logging: a flood of one message becomes a few lines and a count.

A server under abuse repeats itself: the same refusal, the same ``accept()`` error from asyncio,
thousands of times a second. :class:`RepeatFilter` lets at most ``per_second`` records of one
kind (logger, level and message template, before its arguments are filled in) through each
second and counts the rest; :meth:`RepeatFilter.flush` logs one ``suppressed N lines`` summary
per kind that lost lines. It is attached to the *handlers* (a logger's own filters do not see
records propagated from its children, and asyncio and aiohttp log under their own names), so
every line the process writes goes through it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

__all__ = ["RepeatFilter", "rate_limited_logging"]

# Records that carry this attribute are the filter's own summaries and always pass.
_SUMMARY = "agentcell_log_summary"
# Distinct kinds tracked at once; beyond it, new kinds share one budget. Templates are few (they
# are in the code), but a caller that formats its message itself makes one kind per line.
_MAX_KINDS = 1024
_OVERFLOW = ("", 0, "")


@dataclass
class _Kind:
    window_start: float
    passed: int
    suppressed: int
    example: str
    name: str
    level: int


class RepeatFilter(logging.Filter):
    """At most ``per_second`` records of each kind per second; the rest are counted."""

    def __init__(self, *, per_second: int, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.per_second = per_second
        self.clock = clock
        self._kinds: dict[tuple[str, int, str], _Kind] = {}
        # Lines lost in windows that have ended, per kind, not yet summarised.
        self._unreported: dict[tuple[str, int, str], _Kind] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        """Whether ``record`` is written."""
        if getattr(record, _SUMMARY, False):
            return True
        key = (record.name, record.levelno, str(record.msg))
        now = self.clock()
        with self._lock:
            if key not in self._kinds and len(self._kinds) >= _MAX_KINDS:
                key = _OVERFLOW
            kind = self._kinds.get(key)
            if kind is None or now - kind.window_start >= 1.0:
                if kind is not None:
                    self._carry(key, kind)
                self._kinds[key] = _Kind(
                    window_start=now,
                    passed=1,
                    suppressed=0,
                    example=str(record.msg),
                    name=record.name,
                    level=record.levelno,
                )
                return True
            if kind.passed < self.per_second:
                kind.passed += 1
                return True
            kind.suppressed += 1
            return False

    def _carry(self, key: tuple[str, int, str], kind: _Kind) -> None:
        if not kind.suppressed:
            return
        pending = self._unreported.get(key)
        if pending is None:
            self._unreported[key] = kind
        else:
            pending.suppressed += kind.suppressed

    def pending(self) -> list[tuple[str, int, int, str]]:
        """Take the counts of lines lost in windows that have ended: (logger name, level,
        count, message template) each; they are not reported again."""
        now = self.clock()
        with self._lock:
            for key, kind in list(self._kinds.items()):
                if now - kind.window_start >= 1.0:
                    self._carry(key, kind)
                    del self._kinds[key]  # also what keeps the table small
            taken, self._unreported = self._unreported, {}
        return [(kind.name, kind.level, kind.suppressed, kind.example) for kind in taken.values()]

    def flush(self) -> None:
        """Log one summary line for each kind that lost lines in an ended window."""
        for name, level, count, example in self.pending():
            logging.getLogger(name or "agentcell.controlplane").log(
                level,
                "suppressed %d more lines like %r (at most %d per second are written)",
                count,
                example[:200],
                self.per_second,
                extra={_SUMMARY: True},
            )


@contextmanager
def rate_limited_logging(
    per_second: int, *, handlers: Sequence[logging.Handler] | None = None
) -> Iterator[RepeatFilter]:
    """Attach one :class:`RepeatFilter` to ``handlers`` (default: the root logger's, or
    :data:`logging.lastResort` when logging is not configured) for the duration of the block;
    flush it at the end."""
    chosen = list(handlers if handlers is not None else logging.getLogger().handlers)
    if not chosen and logging.lastResort is not None:
        chosen = [logging.lastResort]
    repeat = RepeatFilter(per_second=per_second)
    for handler in chosen:
        handler.addFilter(repeat)
    try:
        yield repeat
    finally:
        for handler in chosen:
            handler.removeFilter(repeat)
        # Final counts, written without the filter (nothing is left to collapse them against).
        repeat.clock = lambda: float("inf")
        repeat.flush()
