"""The strict seccomp profile, and what any profile lets through.

The shipped profile is read and parsed once per process. The analysis reads Docker's JSON
profile format: a syscall counts as allowed when any rule naming it allows it (under whatever
argument or architecture condition), or when no rule names it and the default action allows.
Policy (for specs and containers alike) and verify use the same answers.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from agentcell.cell.paths import asset

__all__ = [
    "IO_URING_SYSCALLS",
    "allowed_syscalls",
    "blocks_io_uring",
    "is_strict_profile",
    "load_profile",
    "strict_profile",
    "strict_profile_json",
    "strict_profile_path",
]

IO_URING_SYSCALLS = ("io_uring_setup", "io_uring_enter", "io_uring_register")
_ALLOWING_ACTIONS = frozenset({"SCMP_ACT_ALLOW", "SCMP_ACT_LOG"})


def strict_profile_path() -> Path:
    """The strict profile's file, for ``docker run --security-opt seccomp=FILE``."""
    return Path(str(asset("seccomp", "strict.json")))


@functools.cache
def strict_profile() -> Mapping[str, Any]:
    """The strict profile, parsed (once)."""
    loaded: dict[str, Any] = json.loads(asset("seccomp", "strict.json").read_text("utf-8"))
    return loaded


@functools.cache
def strict_profile_json() -> str:
    """The strict profile as compact JSON: the engine wants a profile's content, not a path."""
    return json.dumps(strict_profile(), separators=(",", ":"))


def load_profile(text: str) -> Mapping[str, Any] | None:
    """A profile from its JSON text; None when the text is not a profile."""
    try:
        profile = json.loads(text)
    except json.JSONDecodeError:
        return None
    if not isinstance(profile, dict) or not isinstance(profile.get("defaultAction"), str):
        return None
    if not isinstance(profile.get("syscalls") or [], list):
        return None
    return profile


def is_strict_profile(profile: Mapping[str, Any] | None) -> bool:
    """``profile`` is agentcell's shipped strict profile (whitespace and key order aside)."""
    return profile is not None and dict(profile) == dict(strict_profile())


def allowed_syscalls(profile: Mapping[str, Any], names: Iterable[str]) -> frozenset[str]:
    """Which of ``names`` the profile lets through, under some condition at least."""
    default_allows = profile.get("defaultAction") in _ALLOWING_ACTIONS
    rules = [rule for rule in profile.get("syscalls") or [] if isinstance(rule, dict)]
    allowed = set()
    for syscall in names:
        named = False
        for rule in rules:
            rule_names = rule.get("names") or ([rule["name"]] if "name" in rule else [])
            if syscall in rule_names:
                named = True
                if rule.get("action") in _ALLOWING_ACTIONS:
                    allowed.add(syscall)
                    break
        if not named and default_allows:
            allowed.add(syscall)
    return frozenset(allowed)


def blocks_io_uring(profile: Mapping[str, Any] | None) -> bool | None:
    """Whether the profile refuses every io_uring syscall; None when there is no profile."""
    if profile is None:
        return None
    return not allowed_syscalls(profile, IO_URING_SYSCALLS)
