"""Sizes and durations as people write them in specs ("256m", "64MiB", "30s")."""

from __future__ import annotations

import re

__all__ = ["format_bytes", "parse_bytes", "parse_duration_ns"]

# Docker's convention: every unit is binary, so "512m" and "512MiB" mean the same.
_BYTE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1024,
    "kb": 1024,
    "ki": 1024,
    "kib": 1024,
    "m": 1024**2,
    "mb": 1024**2,
    "mi": 1024**2,
    "mib": 1024**2,
    "g": 1024**3,
    "gb": 1024**3,
    "gi": 1024**3,
    "gib": 1024**3,
    "t": 1024**4,
    "tb": 1024**4,
    "ti": 1024**4,
    "tib": 1024**4,
}
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*")
_DURATION_UNITS = {"ms": 10**6, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9}
_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)\s*")


def parse_bytes(value: str | int) -> int:
    """Bytes from an int or a string such as ``"256m"`` (units are binary, as in Docker).

    Raises:
        ValueError: the text is not a size.
    """
    if isinstance(value, bool):
        raise ValueError("a size must be a number of bytes or a string like '256m'")
    if isinstance(value, int):
        return value
    match = _SIZE.fullmatch(value)
    if match is None or match.group(2).lower() not in _BYTE_UNITS:
        raise ValueError(f"{value!r} is not a size: write e.g. 256m, 64MiB, 1g or a byte count")
    number, unit = match.groups()
    return int(float(number) * _BYTE_UNITS[unit.lower()])


def format_bytes(size: int) -> str:
    """The shortest exact Docker-style spelling of ``size`` (``268435456`` -> ``"256m"``)."""
    for suffix, factor in (("t", 1024**4), ("g", 1024**3), ("m", 1024**2), ("k", 1024)):
        if size and size % factor == 0:
            return f"{size // factor}{suffix}"
    return str(size)


def parse_duration_ns(value: str | int | float) -> int:
    """Nanoseconds from seconds (a number) or a string such as ``"30s"``, ``"500ms"``, ``"2m"``.

    Raises:
        ValueError: the text is not a duration.
    """
    if isinstance(value, bool):
        raise ValueError("a duration must be a number of seconds or a string like '30s'")
    if isinstance(value, int | float):
        return int(value * 10**9)
    match = _DURATION.fullmatch(value)
    if match is None:
        raise ValueError(f"{value!r} is not a duration: write e.g. 500ms, 30s, 2m or seconds")
    number, unit = match.groups()
    return int(float(number) * _DURATION_UNITS[unit])
