"""Admission: the one gate between a spec and a launch.

A backend launches only an :class:`AdmittedSpec`, and only :func:`admit` can make one, after a
policy has found no error in the spec. Policies are composable: :class:`AllOf` and
:class:`AnyOf` both fail closed when given nothing to combine.

A policy judges a :class:`~agentcell.policy.view.CellView`, the backend-neutral view of a cell,
so the policy that admits a spec also audits a running container (``judge``); ``evaluate`` is
``judge`` of the spec's view.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal, Protocol, final

from agentcell.errors import AdmissionError, Location
from agentcell.policy.view import CellView, view_of_spec
from agentcell.spec.load import SpecDocument

__all__ = [
    "UNEXCEPTABLE_RULES",
    "AdmittedSpec",
    "AllOf",
    "AnyOf",
    "Finding",
    "Policy",
    "Severity",
    "admit",
    "apply_exceptions",
    "except_findings",
]

Severity = Literal["error", "warning", "info"]
SEVERITY_RANK: dict[Severity, int] = {"info": 0, "warning": 1, "error": 2}
UNEXCEPTABLE_RULES = frozenset({"AC-000", "AC-035", "AC-040", "AC-041"})
"""Rules no written reason can except (see :func:`except_findings`)."""


@dataclass(frozen=True, kw_only=True)
class Finding:
    """One rule's verdict on one spec: what is wrong, where, and how to fix it."""

    rule: str
    severity: Severity
    message: str
    where: Location
    fix: str
    excepted: str | None = None
    """The reason written in the spec's exception for this rule, when there is one."""

    @property
    def blocking(self) -> bool:
        """An error that no written exception covers refuses the launch."""
        return self.severity == "error" and self.excepted is None

    def describe(self) -> str:
        """One line for a terminal, plus the fix."""
        tag = f"{self.severity.upper()} {self.rule}"
        if self.excepted is not None:
            tag += f" (excepted: {self.excepted})"
        return f"{self.where}: {tag}: {self.message}\n  fix: {self.fix}"


class Policy(Protocol):
    """Anything that judges a spec. Returns every finding; never raises for a bad spec."""

    @property
    def name(self) -> str:
        """A short name shown in output, e.g. ``restricted``."""
        ...

    def evaluate(self, doc: SpecDocument) -> Sequence[Finding]:
        """Every finding about ``doc``, in rule order."""
        ...

    def judge(self, view: CellView) -> Sequence[Finding]:
        """Every finding about a cell's view, spec or running container, in rule order."""
        ...


def _empty(policy_name: str, view: CellView) -> Finding:
    return Finding(
        rule="AC-000",
        severity="error",
        message=f"policy {policy_name} combines no policies and so admits nothing",
        where=view.where("name"),
        fix="configure at least one policy",
    )


@dataclass(frozen=True)
class AllOf:
    """Admits a spec only if every policy admits it; reports every finding of each."""

    policies: tuple[Policy, ...]
    name: str = "all-of"

    def evaluate(self, doc: SpecDocument) -> Sequence[Finding]:
        return self.judge(view_of_spec(doc))

    def judge(self, view: CellView) -> Sequence[Finding]:
        if not self.policies:
            return [_empty(self.name, view)]
        return [finding for policy in self.policies for finding in policy.judge(view)]


@dataclass(frozen=True)
class AnyOf:
    """Admits a spec if at least one policy admits it; otherwise reports all their findings.

    Whether a policy admits takes the view's written exceptions into account, as admission
    does: a spec that excepts the one error a policy reports is admitted by that policy.
    """

    policies: tuple[Policy, ...]
    name: str = "any-of"

    def evaluate(self, doc: SpecDocument) -> Sequence[Finding]:
        return self.judge(view_of_spec(doc))

    def judge(self, view: CellView) -> Sequence[Finding]:
        if not self.policies:
            return [_empty(self.name, view)]
        reasons = view.exception_reasons
        results = [except_findings(policy.judge(view), reasons) for policy in self.policies]
        for findings in results:
            if not any(finding.blocking for finding in findings):
                return findings
        return [finding for findings in results for finding in findings]


_ADMISSION_KEY = object()


@final
class AdmittedSpec:
    """A spec that passed a policy. Only :func:`admit` constructs one."""

    __slots__ = ("doc", "findings", "policy_name")

    def __init__(
        self, doc: SpecDocument, findings: tuple[Finding, ...], policy_name: str, *, _key: object
    ) -> None:
        if _key is not _ADMISSION_KEY:
            raise TypeError("an AdmittedSpec comes only from agentcell.policy.admit()")
        self.doc = doc
        self.findings = findings
        self.policy_name = policy_name

    def __repr__(self) -> str:
        return f"AdmittedSpec({self.doc.tenant}/{self.doc.name}, policy={self.policy_name})"

    @property
    def exceptions(self) -> dict[str, str]:
        """Rule id -> written reason, for each exception that covered a finding."""
        return {f.rule: f.excepted for f in self.findings if f.excepted is not None}


def except_findings(findings: Sequence[Finding], reasons: Mapping[str, str]) -> list[Finding]:
    """Mark findings whose rule has a written exception (rule id -> reason) with the reason.

    Rules in :data:`UNEXCEPTABLE_RULES` cannot be excepted: AC-000 (a policy that combines
    nothing) is a configuration error, AC-040 (agentcell's own state mounted into a cell)
    would hand the cell every tenant's identity whatever the reason, and AC-035 and AC-041
    are the tenant's isolation level, which no spec of the tenant may lower.
    """
    if not reasons:
        return list(findings)
    return [
        replace(finding, excepted=reasons[finding.rule])
        if finding.rule in reasons and finding.rule not in UNEXCEPTABLE_RULES
        else finding
        for finding in findings
    ]


def apply_exceptions(doc: SpecDocument, findings: Sequence[Finding]) -> list[Finding]:
    """Mark findings whose rule the spec excepts, with the written reason."""
    reasons = {exception.rule: exception.reason for exception in doc.document.spec.exceptions}
    return except_findings(findings, reasons)


def admit(doc: SpecDocument, policy: Policy) -> AdmittedSpec:
    """Judge ``doc`` by ``policy``; return it admitted, or refuse with every blocking finding.

    Raises:
        AdmissionError: some error-level finding is not covered by a written exception.
    """
    findings = tuple(apply_exceptions(doc, policy.evaluate(doc)))
    blocking = [finding for finding in findings if finding.blocking]
    if blocking:
        lines = [f"{doc.tenant}/{doc.name} refused by policy {policy.name}:"]
        lines += [finding.describe() for finding in blocking]
        raise AdmissionError(
            "\n".join(lines),
            where=Location(file=doc.file, line=doc.line),
            fix="change the spec as each finding says, or add a reasoned exception",
        )
    return AdmittedSpec(doc, findings, policy.name, _key=_ADMISSION_KEY)
