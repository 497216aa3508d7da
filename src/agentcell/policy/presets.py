"""Named policy presets."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from agentcell.errors import SpecError
from agentcell.policy.admission import AllOf, Finding, Policy
from agentcell.spec.load import SpecDocument

__all__ = ["PRESETS", "preset"]


@dataclass(frozen=True)
class _NoRules:
    name: str = "baseline"

    def evaluate(self, doc: SpecDocument) -> Sequence[Finding]:
        return ()


PRESETS = ("restricted",)


def preset(name: str) -> Policy:
    """The policy preset called ``name``.

    Raises:
        SpecError: no preset has that name.
    """
    if name not in PRESETS:
        raise SpecError(f"unknown policy preset {name!r}", fix=f"use one of {', '.join(PRESETS)}")
    return AllOf((_NoRules(),), name=name)
