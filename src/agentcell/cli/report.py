"""Policy results shown: text for people, JSON for scripts, SARIF 2.1.0 for code scanning.

``lint``, ``audit`` and ``rules`` print through here; the policy layer only judges.

Text goes through rich ``Text`` objects, never markup strings, so a spec or a container name
that looks like ``[bold]`` markup prints as written. SARIF follows the OASIS SARIF 2.1.0
schema (errata 01); spec findings carry file and line, audit findings a logical location
(``container/HostConfig.CapAdd``), and excepted findings a suppression with the written reason.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from rich.console import Console
from rich.table import Table
from rich.text import Text

from agentcell import __version__
from agentcell.cli.output import envelope
from agentcell.cli.terminal import printable
from agentcell.errors import Location, SpecError
from agentcell.policy.admission import Finding, Severity
from agentcell.policy.audit import AuditReport, CisRow
from agentcell.policy.lint import LintReport
from agentcell.policy.presets import RulePolicy
from agentcell.policy.rules import CATALOGUE, Rule

__all__ = [
    "SARIF_SCHEMA_URI",
    "audit_json",
    "audit_sarif",
    "lint_json",
    "lint_sarif",
    "print_audit",
    "print_cis",
    "print_lint",
    "print_rule",
    "print_rules",
    "rules_json",
]

SARIF_SCHEMA_URI = (
    "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
)
_SARIF_LEVEL: dict[Severity, str] = {"error": "error", "warning": "warning", "info": "note"}
_STYLE: dict[str, str] = {
    "error": "bold red",
    "warning": "yellow",
    "info": "cyan",
    "excepted": "magenta",
    "PASS": "green",
    "WARN": "bold yellow",
    "INFO": "cyan",
    "NOTE": "dim",
}
_RULES_BY_ID = {rule.id: rule for rule in CATALOGUE}


# -- text --------------------------------------------------------------------------------------


def _finding_text(finding: Finding, *, indent: str = "  ") -> Text:
    label = "excepted" if finding.excepted is not None else finding.severity
    text = Text(indent)
    text.append(f"{label.upper():8}", style=_STYLE[label])
    text.append(f" {finding.rule}  ", style="bold")
    # Findings quote what specs and containers hold (names, labels, paths).
    text.append(printable(f"{finding.where}: "), style="dim")
    text.append(printable(finding.message))
    if finding.excepted is not None:
        text.append(printable(f"\n{indent}{'':8}  excepted: {finding.excepted}"), style="magenta")
    else:
        text.append(printable(f"\n{indent}{'':8}  fix: {finding.fix}"), style="dim")
    return text


def _problem_text(problem: SpecError) -> Text:
    text = Text("  ")
    text.append("INVALID ", style="bold red")
    text.append(printable(f"{problem.where}: ") if problem.where else "", style="dim")
    text.append(printable(problem.what))
    if problem.fix:
        text.append(printable(f"\n  {'':8}fix: {problem.fix}"), style="dim")
    return text


def _summary(counts: Mapping[str, int]) -> Text:
    text = Text()
    for index, key in enumerate(("error", "warning", "info", "excepted")):
        if index:
            text.append(", ")
        text.append(f"{counts.get(key, 0)} {key}", style=_STYLE[key] if counts.get(key) else "")
    return text


def print_lint(report: LintReport, console: Console) -> None:
    """Findings grouped by document, input problems, and a summary line."""
    for result in report.results:
        doc = result.doc
        head = Text(printable(f"{doc.file}:{doc.line}  "), style="bold")
        head.append(printable(f"{doc.tenant}/{doc.name}"), style="bold")
        if not result.findings:
            head.append("  clean", style="green")
        console.print(head)
        for finding in result.findings:
            console.print(_finding_text(finding))
    for tenant in report.tenant_results:
        head = Text(printable(f"{tenant.doc.file}:{tenant.doc.line}  "), style="bold")
        head.append(printable(f"tenant {tenant.doc.name}"), style="bold")
        if not tenant.findings:
            head.append("  clean", style="green")
        console.print(head)
        for finding in tenant.findings:
            console.print(_finding_text(finding))
    if report.problems:
        console.print(Text("invalid input (nothing judged in these documents):", style="bold red"))
        for problem in report.problems:
            console.print(_problem_text(problem))
    judged = len(report.results) + len(report.tenant_results)
    summary = Text(f"{judged} document(s) judged by policy {report.policy}: ")
    summary.append_text(_summary(report.counts()))
    if report.problems:
        summary.append(f"; {len(report.problems)} input problem(s)", style="bold red")
    console.print(summary)


def print_audit(report: AuditReport, console: Console) -> None:
    """A score table of every container, then each container's findings."""
    if not report.containers:
        console.print(Text("no containers on this host"))
        return
    table = Table(
        "CONTAINER",
        "TENANT",
        "STATE",
        "SCORE",
        "ERRORS",
        "WARNINGS",
        "INFO",
        "EXCEPTED",
        box=None,
        title=f"audit by policy {report.policy}",
    )
    for audit in report.containers:
        counts = _counts(audit.findings)
        view = audit.container.view
        table.add_row(
            Text(printable(view.name)),
            Text(printable(view.tenant or "-")),
            Text(printable(audit.container.state)),
            Text(f"{audit.score:.0f}", style=_score_style(audit.score)),
            Text(str(counts["error"]), style=_STYLE["error"] if counts["error"] else ""),
            Text(str(counts["warning"]), style=_STYLE["warning"] if counts["warning"] else ""),
            Text(str(counts["info"])),
            Text(str(counts["excepted"])),
        )
    console.print(table)
    for audit in report.containers:
        if not audit.findings:
            continue
        view = audit.container.view
        head = Text("\n" + printable(view.name), style="bold")
        head.append(
            printable(f"  ({audit.container.state}, image {view.image}, score {audit.score:.0f})")
        )
        console.print(head)
        for finding in audit.findings:
            console.print(_finding_text(finding))
    overall = report.overall
    line = Text(f"\noverall score: {overall:.0f}/100", style=_score_style(overall or 0.0))
    line.append(f" over {len(report.containers)} container(s)")
    console.print(line)


def print_cis(report: AuditReport, console: Console) -> None:
    """The CIS Docker Benchmark v1.6.0 view, one line per control, as docker-bench prints it."""
    for row in report.cis():
        console.print(_cis_text(row))
    totals = {status: 0 for status in ("PASS", "WARN", "INFO", "NOTE")}
    for row in report.cis():
        totals[row.status] += 1
    line = Text("\n")
    for status, count in totals.items():
        line.append(f"{status} {count}  ", style=_STYLE[status])
    if report.overall is not None:
        line.append(f"overall score {report.overall:.0f}/100")
    console.print(line)


def _cis_text(row: CisRow) -> Text:
    text = Text()
    text.append(f"[{row.status}]", style=_STYLE[row.status])
    text.append(f" {row.id:5}- {row.title}")
    if row.rules:
        text.append(f"  ({', '.join(row.rules)})", style="dim")
    for offender in row.offenders:
        finding = offender.finding
        text.append(
            printable(f"\n       * {offender.container}: {finding.message} [{finding.rule}]")
        )
        if finding.excepted is not None:
            text.append(printable(f" (excepted: {finding.excepted})"), style="magenta")
    if row.note:
        text.append(printable(f"\n       note: {row.note}"), style="dim")
    return text


def print_rules(rules: Sequence[Rule], policies: Sequence[RulePolicy], console: Console) -> None:
    """The catalogue as a table, with each preset's severity."""
    table = Table("ID", *(p.name.upper() for p in policies), "TITLE", "CIS", "PSS", box=None)
    for rule in rules:
        severities = [policy.severity_of(rule) for policy in policies]
        table.add_row(
            rule.id,
            *(Text(severity, style=_STYLE[severity]) for severity in severities),
            rule.title,
            ", ".join(rule.cis) or "-",
            rule.pss or "-",
        )
    console.print(table)


def print_rule(rule: Rule, policies: Sequence[RulePolicy], console: Console) -> None:
    """One rule in full: why it exists and how to fix what it reports."""
    console.print(Text(f"{rule.id}  {rule.title}", style="bold"))
    for policy in policies:
        severity = policy.severity_of(rule)
        line = Text(f"  {policy.name}: ")
        line.append(severity, style=_STYLE[severity])
        console.print(line)
    console.print(Text(f"  CIS Docker Benchmark v1.6.0: {', '.join(rule.cis) or '-'}"))
    console.print(Text(f"  Pod Security Standards: {rule.pss or '-'}"))
    console.print(Text(f"  why: {rule.rationale}"))
    console.print(Text(f"  fix: {rule.remediation}"))


def _counts(findings: Iterable[Finding]) -> dict[str, int]:
    counts = {"error": 0, "warning": 0, "info": 0, "excepted": 0}
    for finding in findings:
        counts["excepted" if finding.excepted is not None else finding.severity] += 1
    return counts


def _score_style(score: float) -> str:
    return "green" if score >= 90 else "yellow" if score >= 70 else "bold red"


# -- JSON --------------------------------------------------------------------------------------


def _location_json(where: Location) -> dict[str, Any]:
    return {"file": where.file, "line": where.line, "column": where.column, "field": where.field}


def _finding_json(finding: Finding) -> dict[str, Any]:
    rule = _RULES_BY_ID.get(finding.rule)
    return {
        "rule": finding.rule,
        "severity": finding.severity,
        "title": rule.title if rule else None,
        "message": finding.message,
        "where": _location_json(finding.where),
        "fix": finding.fix,
        "excepted": finding.excepted,
        "cis": list(rule.cis) if rule else [],
        "pss": rule.pss if rule else None,
    }


def _problem_json(problem: SpecError) -> dict[str, Any]:
    return {
        "message": problem.what,
        "where": _location_json(problem.where) if problem.where else None,
        "fix": problem.fix,
    }


def lint_json(report: LintReport) -> str:
    """The lint report as a ``LintReport`` envelope: one item per judged document."""
    agents = [
        {
            "kind": "Agent",
            "tenant": result.doc.tenant,
            "name": result.doc.name,
            "file": result.doc.file,
            "line": result.doc.line,
            "findings": [_finding_json(f) for f in result.findings],
        }
        for result in report.results
    ]
    tenants = [
        {
            "kind": "Tenant",
            "tenant": tenant.doc.name,
            "name": tenant.doc.name,
            "file": tenant.doc.file,
            "line": tenant.doc.line,
            "findings": [_finding_json(f) for f in tenant.findings],
        }
        for tenant in report.tenant_results
    ]
    document = envelope(
        "LintReport",
        [*agents, *tenants],
        agentcell_version=__version__,
        policy=report.policy,
        summary={
            "documents": len(report.results) + len(report.tenant_results),
            **report.counts(),
            "problems": len(report.problems),
        },
        problems=[_problem_json(problem) for problem in report.problems],
    )
    return json.dumps(document, indent=2)


def audit_json(report: AuditReport) -> str:
    """The audit report as an ``AuditReport`` envelope: one item per container, with the
    CIS view beside them."""
    document = envelope(
        "AuditReport",
        (
            {
                "name": audit.container.view.name,
                "id": audit.container.container_id,
                "tenant": audit.container.view.tenant,
                "managed": audit.container.managed,
                "state": audit.container.state,
                "image": audit.container.view.image,
                "score": _round(audit.score),
                "applicable_rules": audit.applicable,
                "failed_rules": list(audit.failed_rules),
                "exceptions": audit.container.view.exception_reasons,
                "findings": [_finding_json(f) for f in audit.findings],
            }
            for audit in report.containers
        ),
        agentcell_version=__version__,
        policy=report.policy,
        overall_score=_round(report.overall),
        cis=[
            {
                "id": row.id,
                "title": row.title,
                "status": row.status,
                "rules": list(row.rules),
                "containers": sorted({o.container for o in row.offenders}),
                "note": row.note,
            }
            for row in report.cis()
        ],
    )
    return json.dumps(document, indent=2)


def rules_json(rules: Sequence[Rule], policies: Sequence[RulePolicy]) -> str:
    """The catalogue as a ``RuleList`` envelope, with each preset's severity."""
    document = envelope(
        "RuleList",
        (
            {
                "id": rule.id,
                "title": rule.title,
                "severity": {policy.name: policy.severity_of(rule) for policy in policies},
                "rationale": rule.rationale,
                "remediation": rule.remediation,
                "cis": list(rule.cis),
                "pss": rule.pss,
                "security_severity": rule.security_severity,
            }
            for rule in rules
        ),
    )
    return json.dumps(document, indent=2)


def _round(score: float | None) -> float | None:
    return None if score is None else round(score, 1)


# -- SARIF 2.1.0 -------------------------------------------------------------------------------


def _camel(title: str) -> str:
    return "".join(word[:1].upper() + word[1:] for word in title.replace("-", " ").split())


def _descriptor(rule: Rule, severity: Severity) -> dict[str, Any]:
    tags = ["security", *(f"cis-docker-{control}" for control in rule.cis)]
    if rule.pss:
        tags.append(f"pss-{rule.pss}")
    return {
        "id": rule.id,
        "name": _camel(rule.title),
        "shortDescription": {"text": rule.title},
        "fullDescription": {"text": rule.rationale},
        "help": {"text": rule.remediation},
        "defaultConfiguration": {"level": _SARIF_LEVEL[severity]},
        "properties": {
            "tags": tags,
            "security-severity": f"{rule.security_severity:.1f}",
            "cis-docker-benchmark-v1.6.0": list(rule.cis),
            "pod-security-standard": rule.pss,
        },
    }


def _artifact_uri(file: str) -> str:
    path = Path(file)
    if path.is_absolute():
        try:
            path = path.relative_to(Path.cwd())
        except ValueError:
            return "file://" + quote(path.as_posix())
    return quote(path.as_posix().replace(os.sep, "/"))


def _spec_location(where: Location) -> dict[str, Any]:
    location: dict[str, Any] = {}
    if where.file is not None:
        physical: dict[str, Any] = {"artifactLocation": {"uri": _artifact_uri(where.file)}}
        if where.line is not None and where.line >= 1:
            region: dict[str, Any] = {"startLine": where.line}
            if where.column is not None and where.column >= 1:
                region["startColumn"] = where.column
            physical["region"] = region
        location["physicalLocation"] = physical
    if where.field:
        location["logicalLocations"] = [{"fullyQualifiedName": where.field, "kind": "member"}]
    return location


def _container_location(container: str, where: Location) -> dict[str, Any]:
    qualified = f"{container}/{where.field}" if where.field else container
    return {
        "logicalLocations": [
            {"name": container, "fullyQualifiedName": qualified, "kind": "resource"}
        ]
    }


def _result(finding: Finding, index: Mapping[str, int], location: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = {
        "ruleId": finding.rule,
        "level": _SARIF_LEVEL[finding.severity],
        "message": {"text": f"{finding.message}. Fix: {finding.fix}"},
        "locations": [location] if location else [],
        "properties": {"fix": finding.fix},
    }
    if finding.rule in index:
        result["ruleIndex"] = index[finding.rule]
    if finding.excepted is not None:
        result["suppressions"] = [
            {"kind": "inSource", "status": "accepted", "justification": finding.excepted}
        ]
    return result


def _run(
    policy: RulePolicy,
    results: list[dict[str, Any]],
    notifications: list[dict[str, Any]],
    properties: dict[str, Any],
) -> dict[str, Any]:
    return {
        "$schema": SARIF_SCHEMA_URI,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "agentcell",
                        "version": __version__,
                        "semanticVersion": __version__,
                        "rules": [
                            _descriptor(rule, policy.severity_of(rule)) for rule in policy.rules
                        ],
                    }
                },
                "invocations": [
                    {
                        "executionSuccessful": not notifications,
                        "toolExecutionNotifications": notifications,
                    }
                ],
                "results": results,
                "properties": properties,
            }
        ],
    }


def _rule_index(policy: RulePolicy) -> dict[str, int]:
    return {rule.id: position for position, rule in enumerate(policy.rules)}


def lint_sarif(report: LintReport, policy: RulePolicy) -> dict[str, Any]:
    """The lint report as a SARIF 2.1.0 log (a JSON-ready dict)."""
    index = _rule_index(policy)
    results = [
        _result(finding, index, _spec_location(finding.where)) for finding in report.findings
    ]
    notifications = [
        {
            "level": "error",
            "message": {"text": problem.what + (f" Fix: {problem.fix}" if problem.fix else "")},
            "locations": [_spec_location(problem.where)] if problem.where else [],
        }
        for problem in report.problems
    ]
    return _run(policy, results, notifications, {"kind": "lint", "policy": report.policy})


def audit_sarif(report: AuditReport, policy: RulePolicy) -> dict[str, Any]:
    """The audit report as a SARIF 2.1.0 log (a JSON-ready dict)."""
    index = _rule_index(policy)
    results = [
        _result(finding, index, _container_location(audit.container.view.name, finding.where))
        for audit in report.containers
        for finding in audit.findings
    ]
    properties = {
        "kind": "audit",
        "policy": report.policy,
        "overallScore": _round(report.overall),
        "containers": [
            {"name": a.container.view.name, "state": a.container.state, "score": _round(a.score)}
            for a in report.containers
        ],
    }
    return _run(policy, results, [], properties)
