"""``agentcell lint``: judge spec files by a policy without launching anything.

It reads the spec files and nothing else: no engine, no registry, no control plane.

A file that cannot be loaded does not hide the findings of the others: every valid document is
judged, and every problem of every invalid one is reported beside them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from agentcell.errors import SpecError
from agentcell.policy.admission import SEVERITY_RANK, Finding, Policy, apply_exceptions
from agentcell.policy.tenants import tenant_findings
from agentcell.spec.load import (
    SPEC_SUFFIXES,
    SpecBundle,
    SpecDocument,
    TenantSpecDocument,
    load_bundle,
)

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_CLEAN",
    "EXIT_FINDINGS",
    "FailOn",
    "LintReport",
    "SpecResult",
    "TenantResult",
    "lint",
]

FailOn = Literal["error", "warning", "info", "never"]
EXIT_CLEAN = 0
EXIT_FINDINGS = 1
EXIT_BAD_INPUT = 2


@dataclass(frozen=True, kw_only=True)
class SpecResult:
    """The findings about one spec document, exceptions applied."""

    doc: SpecDocument
    findings: tuple[Finding, ...]


@dataclass(frozen=True, kw_only=True)
class TenantResult:
    """The findings about one Tenant document (:func:`agentcell.policy.tenants.tenant_findings`)."""

    doc: TenantSpecDocument
    findings: tuple[Finding, ...]


@dataclass(frozen=True, kw_only=True)
class LintReport:
    """What ``lint`` found: findings per valid document, and problems with the input."""

    policy: str
    results: tuple[SpecResult, ...]
    problems: tuple[SpecError, ...]
    """Files that could not be read, parsed or validated; each names its file and line."""
    tenant_results: tuple[TenantResult, ...] = ()
    """The Tenant documents read, with their findings."""

    @property
    def findings(self) -> Iterator[Finding]:
        """Every finding, document by document (agents first, then tenants)."""
        for result in self.results:
            yield from result.findings
        for tenant in self.tenant_results:
            yield from tenant.findings

    def counts(self) -> dict[str, int]:
        """How many findings of each severity count against the input (excepted ones do not),
        and how many were excepted."""
        counts = {"error": 0, "warning": 0, "info": 0, "excepted": 0}
        for finding in self.findings:
            counts["excepted" if finding.excepted is not None else finding.severity] += 1
        return counts

    def exit_code(self, fail_on: FailOn = "error") -> int:
        """0 clean, 1 some un-excepted finding at or above ``fail_on``, 2 bad input."""
        if self.problems:
            return EXIT_BAD_INPUT
        if fail_on == "never":
            return EXIT_CLEAN
        floor = SEVERITY_RANK[fail_on]
        for finding in self.findings:
            if finding.excepted is None and SEVERITY_RANK[finding.severity] >= floor:
                return EXIT_FINDINGS
        return EXIT_CLEAN


def lint(paths: Iterable[str | Path], policy: Policy) -> LintReport:
    """Load every spec under ``paths`` (files and directories) and judge each Agent by
    ``policy``, and each SandboxTemplate's cell; Tenant documents are checked by the loader
    (a bad one is a problem) and by :func:`~agentcell.policy.tenants.tenant_findings`."""
    paths = list(paths)
    problems: list[SpecError] = []
    try:
        bundle = load_bundle(paths)
        documents, tenants = _judged(bundle), list(bundle.tenants)
    except SpecError as exc:
        problems.extend(exc.problems or (exc,))
        documents, tenants = _loadable(paths)
    results = tuple(
        SpecResult(doc=doc, findings=tuple(apply_exceptions(doc, policy.evaluate(doc))))
        for doc in documents
    )
    tenant_results = tuple(
        TenantResult(doc=doc, findings=tuple(tenant_findings(doc.document, locate=doc.where)))
        for doc in tenants
    )
    return LintReport(
        policy=policy.name,
        results=results,
        problems=tuple(problems),
        tenant_results=tenant_results,
    )


def _loadable(paths: Iterable[str | Path]) -> tuple[list[SpecDocument], list[TenantSpecDocument]]:
    """The documents of every file that loads on its own, once loading all of them together
    failed (and reported every problem)."""
    documents: list[SpecDocument] = []
    tenants: list[TenantSpecDocument] = []
    for file in _files(paths):
        with contextlib.suppress(SpecError):
            bundle = load_bundle([file])
            documents.extend(_judged(bundle))
            tenants.extend(bundle.tenants)
    return documents, tenants


def _judged(bundle: SpecBundle) -> list[SpecDocument]:
    """The Agent documents to judge: the agents, and each sandbox template's cell (named
    after the template; its findings point into the template's ``spec.cell``)."""
    return [*bundle.agents, *(template.agent(template.name) for template in bundle.templates)]


def _files(paths: Iterable[str | Path]) -> Iterator[Path]:
    # The same expansion load_paths makes: a directory means its spec files, recursively. A
    # directory without any stays, so that loading it reports that.
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix in SPEC_SUFFIXES and p.is_file())
            yield from found or [path]
        else:
            yield path
