"""What a rule is: :class:`Rule`, the :class:`Violation` its check returns, and the
:data:`Check` signature every theme module's checks share."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from agentcell.cell.fields import FieldPath
from agentcell.policy.admission import SEVERITY_RANK, Finding, Severity
from agentcell.policy.view import CellView

__all__ = ["RULE_ID", "Check", "PssLevel", "Rule", "Violation"]

PssLevel = Literal["baseline", "restricted"]
RULE_ID = re.compile(r"^[A-Z]+-\d{3}$")


@dataclass(frozen=True, kw_only=True)
class Violation:
    """One thing a rule found wrong in one view."""

    message: str
    fact: str
    """The :class:`CellView` field at fault, to locate the finding."""
    item: FieldPath | None = None
    """The source path of the one list item at fault (a mount, a port), if it is one."""
    fix: str | None = None
    """A fix more specific than the rule's remediation."""
    severity: Severity | None = None
    """Lowers the finding below the rule's severity, e.g. when a fact is only unknown."""


Check = Callable[[CellView], Sequence[Violation]]


def _always(view: CellView) -> bool:
    return True


@dataclass(frozen=True, kw_only=True)
class Rule:
    """One check, with everything a user needs to understand and fix what it reports."""

    id: str
    severity: Severity
    """The severity in the ``restricted`` preset; presets may lower or raise it."""
    title: str
    rationale: str
    remediation: str
    cis: tuple[str, ...] = ()
    """CIS Docker Benchmark v1.6.0 control ids, e.g. ``("5.5",)``."""
    pss: PssLevel | None = None
    """The Kubernetes Pod Security Standards level whose controls this rule mirrors."""
    security_severity: float = 5.0
    """0-10, as SARIF consumers (GitHub code scanning) rank security results."""
    check: Check = field(compare=False, repr=False)
    applies: Callable[[CellView], bool] = field(default=_always, compare=False, repr=False)
    """False when the rule has nothing to judge in a view (it then does not count in scores)."""

    def __post_init__(self) -> None:
        if not RULE_ID.match(self.id):
            raise ValueError(f"rule id {self.id!r} does not match {RULE_ID.pattern}")

    def findings(self, view: CellView, *, severity: Severity | None = None) -> list[Finding]:
        """The rule's findings for ``view`` at ``severity`` (default: the rule's own)."""
        ceiling = severity or self.severity
        findings = []
        for violation in self.check(view):
            level = ceiling
            if (
                violation.severity is not None
                and SEVERITY_RANK[violation.severity] < SEVERITY_RANK[ceiling]
            ):
                level = violation.severity
            findings.append(
                Finding(
                    rule=self.id,
                    severity=level,
                    message=violation.message,
                    where=view.where(violation.fact, violation.item),
                    fix=violation.fix or self.remediation,
                )
            )
        return findings
