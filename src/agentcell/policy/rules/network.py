"""Rules about a tenant's network rather than one cell: an egress allow-list that lets
everything out. They judge a Tenant document (:func:`agentcell.policy.tenants.tenant_findings`),
so their cell check finds nothing; they are in the catalogue so that ``agentcell rules`` lists
them and findings carry a stable id."""

from __future__ import annotations

from agentcell.policy.rules.base import Rule, Violation
from agentcell.policy.view import CellView

__all__ = ["OPEN_EGRESS", "RULES"]


def _tenant_level(view: CellView) -> list[Violation]:
    return []


def _never(view: CellView) -> bool:
    return False


OPEN_EGRESS = Rule(
    id="AC-043",
    severity="warning",
    title="Tenant egress open to everything",
    rationale="An egress allow-list entry of 0.0.0.0/0, ::/0 or the name * lets the tenant's "
    "cells reach, and send data to, any address or name through the egress gateway: the "
    "allow-list no longer limits exfiltration, only the protected ranges (loopback, "
    "link-local, the metadata service, the tenant's own subnet) stay closed.",
    remediation="List the names (*.pypi.org) and address ranges the tenant's cells need in "
    "spec.network.egress.allow instead of everything.",
    security_severity=6.0,
    check=_tenant_level,
    applies=_never,
)

RULES: tuple[Rule, ...] = (OPEN_EGRESS,)
