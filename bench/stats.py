"""What every benchmark here reports: medians and spread of timed samples."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

__all__ = ["summary", "timed_ms"]


def summary(samples: list[float]) -> dict[str, float]:
    """Median, 10th and 90th percentile (ms) and the run count; medians, since the machine is
    shared."""
    ordered = sorted(samples)
    return {
        "median_ms": statistics.median(ordered),
        "p10_ms": ordered[len(ordered) // 10],
        "p90_ms": ordered[(len(ordered) * 9) // 10],
        "runs": len(ordered),
    }


def timed_ms(action: Callable[[], object]) -> float:
    """Milliseconds that ``action`` took."""
    start = time.perf_counter()
    action()
    return (time.perf_counter() - start) * 1000
