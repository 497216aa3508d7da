"""Paths to a field of a spec or of an engine document, for locating findings."""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["FieldPath", "dotted"]

FieldPath = tuple[str | int, ...]
"""``("spec", "host", "mounts", 0)``: keys and list indexes from the document's root."""


def dotted(path: Iterable[str | int]) -> str:
    """``("spec", "host", "mounts", 0, "source")`` -> ``spec.host.mounts[0].source``."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    return text
