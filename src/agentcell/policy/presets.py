"""Named policy presets, built from the rule catalogue.

``restricted``
    Every rule at its catalogue severity: no host namespaces, no host mounts of system
    directories, no engine socket, all limits set, non-root, all capabilities dropped.

``monitoring-agent``
    For agents whose job is to watch the host. Read-only mounts of /proc, /sys and other system
    directories, the host PID namespace and a read-only Docker socket become warnings instead of
    errors (the socket stays flagged high risk). Everything that would let the agent *change*
    the host is still an error.

A preset can carry a :class:`TenantPolicy`: what the tenant's isolation level demands of every
cell, such as a required runtime. Tenants do not exist yet, so ``preset(name)`` uses the empty
one, which demands nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from types import MappingProxyType
from typing import Literal

from agentcell.errors import SpecError
from agentcell.policy.admission import Finding, Severity
from agentcell.policy.rules import CATALOGUE, Rule, requires_runtime
from agentcell.policy.view import CellView, view_of_spec
from agentcell.spec.load import SpecDocument
from agentcell.spec.model import RuntimeName
from agentcell.spec.tenant import IsolationLevel

__all__ = ["PRESETS", "RulePolicy", "RuleVerdict", "TenantPolicy", "preset"]

PresetName = Literal["restricted", "monitoring-agent"]
PRESETS: tuple[PresetName, ...] = ("restricted", "monitoring-agent")


@dataclass(frozen=True, kw_only=True)
class TenantPolicy:
    """What a tenant's isolation level demands of each of its cells."""

    required_runtime: RuntimeName | None = None
    """Every cell must run under this OCI runtime (AC-035); None demands none."""
    isolation: IsolationLevel = "standard"
    """The tenant's isolation level; ``strict`` also refuses relaxed seccomp and host access."""

    @classmethod
    def for_isolation(cls, isolation: IsolationLevel) -> TenantPolicy:
        """What an isolation level demands: ``strict`` is gVisor (runsc), the strict seccomp
        profile and no host mounts or namespaces."""
        if isolation == "strict":
            return cls(required_runtime="runsc", isolation="strict")
        return cls()


@dataclass(frozen=True, kw_only=True)
class RuleVerdict:
    """One rule's judgement of one view: whether it applied, and what it found."""

    rule: Rule
    severity: Severity
    applicable: bool
    findings: tuple[Finding, ...]


@dataclass(frozen=True, kw_only=True)
class RulePolicy:
    """A policy made of catalogue rules, each at a severity the preset chose."""

    name: str
    rules: tuple[Rule, ...]
    severities: Mapping[str, Severity] = field(default_factory=lambda: MappingProxyType({}))
    """Rule id -> severity in this policy, for rules whose severity differs from the catalogue."""

    def severity_of(self, rule: Rule) -> Severity:
        """The severity this policy gives ``rule``."""
        return self.severities.get(rule.id, rule.severity)

    def evaluate(self, doc: SpecDocument) -> Sequence[Finding]:
        return self.judge(view_of_spec(doc))

    @cached_property
    def _plan(self) -> tuple[tuple[Rule, Severity], ...]:
        return tuple((rule, self.severity_of(rule)) for rule in self.rules)

    def judge(self, view: CellView) -> Sequence[Finding]:
        return [
            finding
            for rule, severity in self._plan
            if rule.applies(view)
            for finding in rule.findings(view, severity=severity)
        ]

    def verdicts(self, view: CellView) -> tuple[RuleVerdict, ...]:
        """Every rule's judgement of ``view``, including the rules that found nothing."""
        verdicts = []
        for rule in self.rules:
            severity = self.severity_of(rule)
            applicable = rule.applies(view)
            findings = tuple(rule.findings(view, severity=severity)) if applicable else ()
            verdicts.append(
                RuleVerdict(rule=rule, severity=severity, applicable=applicable, findings=findings)
            )
        return tuple(verdicts)


_MONITORING_AGENT: Mapping[str, Severity] = MappingProxyType(
    {
        "AC-017": "warning",  # host PID namespace: process monitoring
        "AC-023": "warning",  # read-only engine socket: container monitoring, still high risk
        "AC-025": "warning",  # read-only /proc, /sys, ...
        "AC-027": "info",  # read-only mounts of other host paths (logs)
    }
)


def _rules_for(tenant: TenantPolicy) -> tuple[Rule, ...]:
    required = tenant.required_runtime
    strict = tenant.isolation == "strict"
    if required is None and not strict:
        return CATALOGUE
    rules = []
    for rule in CATALOGUE:
        if rule.id == "AC-035" and required is not None:
            rule = replace(rule, check=requires_runtime(required), applies=_always)
        elif rule.id == "AC-041" and strict:
            rule = replace(rule, applies=_always)
        rules.append(rule)
    return tuple(rules)


def _always(view: CellView) -> bool:
    return True


def preset(name: str, *, tenant: TenantPolicy | None = None) -> RulePolicy:
    """The policy preset called ``name``, for a tenant with isolation demands ``tenant``.

    Raises:
        SpecError: no preset has that name.
    """
    rules = _rules_for(tenant or TenantPolicy())
    if name == "restricted":
        return RulePolicy(name=name, rules=rules)
    if name == "monitoring-agent":
        return RulePolicy(name=name, rules=rules, severities=_MONITORING_AGENT)
    raise SpecError(f"unknown policy preset {name!r}", fix=f"use one of {', '.join(PRESETS)}")
