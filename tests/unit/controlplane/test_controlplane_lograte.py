"""Rate-limited logging: a repeated message becomes a few lines and a count."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from agentcell.controlplane.lograte import RepeatFilter, rate_limited_logging


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def logger() -> Iterator[logging.Logger]:
    named = logging.getLogger("agentcell.test.lograte")
    named.propagate = False
    named.setLevel(logging.INFO)
    yield named
    named.propagate = True
    named.handlers.clear()


def _attach(logger: logging.Logger, repeat: RepeatFilter) -> Lines:
    lines = Lines()
    lines.addFilter(repeat)
    logger.addHandler(lines)
    return lines


def test_a_repeated_message_is_cut_to_the_rate_and_summarised(logger: logging.Logger) -> None:
    clock = Clock()
    repeat = RepeatFilter(per_second=3, clock=clock)
    lines = _attach(logger, repeat)
    for peer in range(1000):
        logger.warning("refused a connection from %s", f"uid {peer}")
    assert lines.lines == [f"refused a connection from uid {peer}" for peer in range(3)]
    repeat.flush()
    assert len(lines.lines) == 3  # the second is not over yet: nothing to summarise
    clock.now += 1.0
    repeat.flush()
    assert lines.lines[3] == (
        "suppressed 997 more lines like 'refused a connection from %s' "
        "(at most 3 per second are written)"
    )
    repeat.flush()
    assert len(lines.lines) == 4  # counted once
    logger.warning("refused a connection from %s", "uid 5")
    assert lines.lines[-1] == "refused a connection from uid 5"


def test_different_messages_and_levels_have_their_own_budget(logger: logging.Logger) -> None:
    repeat = RepeatFilter(per_second=1, clock=Clock())
    lines = _attach(logger, repeat)
    for _ in range(10):
        logger.warning("one %s", "x")
        logger.warning("two %s", "y")
        logger.error("one %s", "x")
    assert lines.lines == ["one x", "two y", "one x"]


def test_counts_from_several_seconds_add_up(logger: logging.Logger) -> None:
    clock = Clock()
    repeat = RepeatFilter(per_second=1, clock=clock)
    lines = _attach(logger, repeat)
    for _ in range(3):
        for _ in range(5):
            logger.info("tick")
        clock.now += 1.0
    repeat.flush()
    assert lines.lines == [
        "tick",
        "tick",
        "tick",
        "suppressed 12 more lines like 'tick' (at most 1 per second are written)",
    ]


def test_the_context_attaches_to_handlers_and_reports_what_was_left(
    logger: logging.Logger,
) -> None:
    lines = Lines()
    logger.addHandler(lines)
    with rate_limited_logging(2, handlers=[lines]):
        for _ in range(10):
            logger.info("same")
    assert lines.lines[:2] == ["same", "same"]
    assert lines.lines[2].startswith("suppressed 8 more lines like 'same'")
    assert not lines.filters  # detached
    logger.info("same")
    assert lines.lines[-1] == "same"
