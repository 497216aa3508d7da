"""Findings about a Tenant document as a whole (today: AC-043, egress open to everything).

Pure. ``lint`` reports them for every Tenant document it reads; ``apply`` can call
:func:`tenant_findings` before storing a document.
"""

from __future__ import annotations

from collections.abc import Callable

from agentcell.errors import Location
from agentcell.policy.admission import Finding
from agentcell.policy.rules.network import OPEN_EGRESS
from agentcell.spec.tenant import EgressRule, TenantDocument

__all__ = ["OPEN_CIDRS", "OPEN_NAME", "tenant_findings"]

OPEN_CIDRS = frozenset({"0.0.0.0/0", "::/0"})
OPEN_NAME = "*"

Locate = Callable[..., Location]


def _opens_everything(rule: EgressRule) -> bool:
    return rule.name == OPEN_NAME or rule.cidr in OPEN_CIDRS


def tenant_findings(doc: TenantDocument, *, locate: Locate | None = None) -> list[Finding]:
    """Every finding about ``doc``. ``locate(*path)`` gives the location of a field (a loaded
    document's ``where``); without it a finding names the field alone."""

    def where(*path: str | int) -> Location:
        if locate is not None:
            return locate(*path)
        text = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)
        return Location(field=text.lstrip("."))

    findings = []
    for index, rule in enumerate(doc.spec.network.allow):
        if not _opens_everything(rule):
            continue
        denied = len(doc.spec.network.deny)
        findings.append(
            Finding(
                rule=OPEN_EGRESS.id,
                severity=OPEN_EGRESS.severity,
                message=f"tenant {doc.name}: egress open to everything: allow "
                f"{rule.describe()} lets its cells reach any "
                + ("name" if rule.name else "address")
                + f" on those ports ({denied} deny rule(s) carve exceptions)",
                where=where("spec", "network", "egress", "allow", index),
                fix=OPEN_EGRESS.remediation,
            )
        )
    return findings
