"""``agentcell rules``, ``agentcell lint`` and ``agentcell audit``.

Thin, like the rest of the CLI: parse options, call :mod:`agentcell.policy` (and, for
``audit``, the Docker facts reader), print. Heavy modules are imported inside each command so
that ``agentcell --help`` and the other commands do not pay for them.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer

from agentcell.cli.options import (
    JsonAlias,
    OutputOption,
    OutputSarifOption,
    PolicyOption,
    SpecFilesOptional,
    spec_paths,
)
from agentcell.cli.output import wants_json

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["audit_command", "lint_command", "rules_command"]

FailOn = Literal["error", "warning", "info", "never"]


def _console() -> Console:
    from rich.console import Console

    # Piped output keeps long lines whole instead of folding them at 80 columns.
    return Console(width=None if sys.stdout.isatty() else 200, highlight=False)


def rules_command(
    rule_ids: Annotated[
        list[str] | None,
        typer.Argument(metavar="RULE", help="Show these rules in full, e.g. AC-023."),
    ] = None,
    output: OutputOption = "text",
    json_alias: JsonAlias = False,
) -> None:
    """List the policy rules: id, severity in each preset, title, CIS and PSS references."""
    from agentcell.cli.names import InvalidInput
    from agentcell.cli.report import print_rule, print_rules, rules_json
    from agentcell.cli.terminal import printable
    from agentcell.policy.presets import PRESETS, preset
    from agentcell.policy.rules import CATALOGUE

    policies = [preset(name) for name in PRESETS]
    by_id = {rule.id: rule for rule in CATALOGUE}
    wanted = [raw.upper() for raw in rule_ids or []]
    unknown = [rule_id for rule_id in wanted if rule_id not in by_id]
    if unknown:
        # Said here rather than raised: the command is also run on its own, without main().
        error = InvalidInput(
            f"RULE: no rule {', '.join(map(repr, unknown))}", fix="`agentcell rules` lists them all"
        )
        sys.stderr.write(printable(f"error: {error.diagnostics()}") + "\n")
        raise typer.Exit(error.exit_code)
    rules = [by_id[rule_id] for rule_id in wanted] or list(CATALOGUE)
    if wants_json(output, json_alias):
        sys.stdout.write(rules_json(rules, policies) + "\n")
        return
    console = _console()
    if wanted:
        for rule in rules:
            print_rule(rule, policies, console)
        return
    print_rules(rules, policies, console)


def lint_command(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(
            metavar="[PATH]...", help="Shorthand for -f PATH: spec files or directories."
        ),
    ] = None,
    files: SpecFilesOptional = None,
    output: OutputSarifOption = "text",
    json_alias: JsonAlias = False,
    fail_on: Annotated[
        FailOn,
        typer.Option("--fail-on", help="Exit 1 when a finding is at or above this severity."),
    ] = "error",
    policy: PolicyOption = "restricted",
) -> None:
    """Judge spec files by a policy without launching anything.

    Exit codes: 0 clean, 1 findings at or above --fail-on, 2 invalid input.
    """
    import json

    from agentcell.cli.names import InvalidInput
    from agentcell.cli.report import lint_json, lint_sarif, print_lint
    from agentcell.policy.lint import lint
    from agentcell.policy.presets import preset as make_preset

    inputs = spec_paths([*(paths or []), *(files or [])])
    if not inputs:
        raise InvalidInput("no spec to judge", fix="give -f SPEC (a file, a directory, or -)")
    rule_policy = make_preset(policy)
    report = lint(inputs, rule_policy)
    if wants_json(output, json_alias):
        sys.stdout.write(lint_json(report) + "\n")
    elif output == "sarif":
        sys.stdout.write(json.dumps(lint_sarif(report, rule_policy), indent=2) + "\n")
    else:
        print_lint(report, _console())
    raise typer.Exit(report.exit_code(fail_on))


def audit_command(
    output: OutputSarifOption = "text",
    json_alias: JsonAlias = False,
    cis: Annotated[
        bool,
        typer.Option(
            "--cis",
            help="Print the CIS Docker Benchmark v1.6.0 view (PASS/WARN per control) instead "
            "of the table; JSON output always includes it.",
        ),
    ] = False,
    policy: PolicyOption = "restricted",
    fail_on: Annotated[
        FailOn,
        typer.Option(
            "--fail-on", help="Exit 1 when a container has a finding at or above this severity."
        ),
    ] = "never",
) -> None:
    """Audit every container on this host, agentcell's or not, by the policy rules."""
    import json

    from agentcell.cli.report import audit_json, audit_sarif, print_audit, print_cis
    from agentcell.policy.admission import SEVERITY_RANK
    from agentcell.policy.audit import audit
    from agentcell.policy.presets import preset as make_preset
    from agentcell.runtime.docker.client import connect
    from agentcell.runtime.docker.facts import observe_host

    rule_policy = make_preset(policy)
    client = connect()
    try:
        report = audit(observe_host(client), rule_policy)
    finally:
        client.close()
    if wants_json(output, json_alias):
        sys.stdout.write(audit_json(report) + "\n")
    elif output == "sarif":
        sys.stdout.write(json.dumps(audit_sarif(report, rule_policy), indent=2) + "\n")
    elif cis:
        print_cis(report, _console())
    else:
        print_audit(report, _console())
    if fail_on != "never":
        floor = SEVERITY_RANK[fail_on]
        for container in report.containers:
            for finding in container.findings:
                if finding.excepted is None and SEVERITY_RANK[finding.severity] >= floor:
                    raise typer.Exit(1)
