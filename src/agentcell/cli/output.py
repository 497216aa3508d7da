"""The one shape of every ``-o json`` answer, and the shared ``-o``/``--json`` choice.

Every command that prints data, or acts, can answer in JSON; all of them write one envelope::

    {"api_version": "agentcell/v1", "kind": "CellList", "items": [...]}

``kind`` names what ``items`` holds (``CellList``, ``VerifyReport``, ``UpResult``, ...);
``items`` is always a list, also when a command speaks of one thing. A kind may add a few
fields beside ``items`` that describe the whole answer (``lint``: ``policy``, ``summary``,
``problems``). Keys are snake_case, numbers are numbers, durations say their unit in the key
(``elapsed_s``), sizes are bytes (``memory_bytes``), absent values are ``null``. SARIF output
is SARIF 2.1.0 as its schema says, not wrapped.

Imported by commands only; standard library alone, so ``agentcell --help`` stays light.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["API_VERSION", "envelope", "print_json", "wants_json"]

API_VERSION = "agentcell/v1"


def envelope(kind: str, items: Iterable[Any], **fields: Any) -> dict[str, Any]:
    """The answer of ``kind``: its items and the fields that describe the whole of it."""
    return {"api_version": API_VERSION, "kind": kind, **fields, "items": list(items)}


def print_json(kind: str, items: Iterable[Any], **fields: Any) -> None:
    """Write the envelope to stdout.

    ``json.dumps`` escapes every non-ASCII character, control characters a cell sent
    included, so the JSON is safe on a terminal as well as in a pipe.
    """
    sys.stdout.write(json.dumps(envelope(kind, items, **fields), indent=2) + "\n")


def wants_json(output: str, json_alias: bool) -> bool:
    """Whether ``-o json`` (or its older spelling ``--json``) was asked for."""
    return json_alias or output == "json"


def snake(mapping: Mapping[str, Any]) -> dict[str, Any]:
    """``mapping`` with its keys in snake_case (``read-only rootfs`` -> ``read_only_rootfs``)."""
    return {
        key.replace("+", "_").replace("-", "_").replace(" ", "_"): value
        for key, value in mapping.items()
    }
