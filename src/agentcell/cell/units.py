"""CPU limits in the engine's unit: billionths of a core."""

from __future__ import annotations

__all__ = ["NANO", "cpus_from_nanos", "nanos_from_cpus"]

NANO = 1_000_000_000


def nanos_from_cpus(cpus: float) -> int:
    """``0.5`` cores -> ``500_000_000`` (Docker's ``NanoCpus``)."""
    return round(cpus * NANO)


def cpus_from_nanos(nanos: int) -> float:
    """``500_000_000`` -> ``0.5`` cores."""
    return nanos / NANO
