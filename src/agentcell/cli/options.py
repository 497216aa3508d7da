"""The options every command spells the same way, declared once.

- ``-o/--output``: ``text`` for people, ``json`` for programs (the envelope of
  :mod:`agentcell.cli.output`), more where a command has them (``sarif``, ``wide``).
  ``--json`` stays as a hidden alias of ``-o json``.
- ``-f/--file``: a spec file or directory, repeatable; ``-f -`` reads one spec from stdin.
- ``-p/--policy``: the policy preset.
- ``--tenant``, ``--agent``: filters, and ``NAME`` arguments: checked as names
  (:mod:`agentcell.cli.names`) before they reach anything.
- ``-F/--follow``: keep streaming (``-f`` is always a file).

``tests/unit/cli/test_convention.py`` reads every command's help and pins these names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from agentcell.cli import names

__all__ = [
    "AgentFilter",
    "CellArg",
    "CellArgs",
    "FollowOption",
    "JsonAlias",
    "Output",
    "OutputOption",
    "OutputSarif",
    "OutputSarifOption",
    "PolicyOption",
    "SpecFiles",
    "SpecFilesOptional",
    "TenantFilter",
    "spec_paths",
]

STDIN = Path("-")  # the spec loader reads it as standard input, named <stdin> in errors

Output = Literal["text", "json"]
OutputSarif = Literal["text", "json", "sarif"]

OutputOption = Annotated[
    Output, typer.Option("-o", "--output", help="text for people, json for programs.")
]
OutputSarifOption = Annotated[
    OutputSarif,
    typer.Option("-o", "--output", help="text for people, json, or sarif (2.1.0)."),
]
JsonAlias = Annotated[bool, typer.Option("--json", hidden=True, help="Same as -o json.")]

_FILE_HELP = "Spec file or directory (repeatable); - reads one spec from stdin."
SpecFiles = Annotated[list[Path], typer.Option("-f", "--file", help=_FILE_HELP)]
SpecFilesOptional = Annotated[list[Path] | None, typer.Option("-f", "--file", help=_FILE_HELP)]

PolicyOption = Annotated[
    str,
    typer.Option("-p", "--policy", help="Policy preset: restricted or monitoring-agent."),
]

TenantFilter = Annotated[
    str | None,
    typer.Option("--tenant", help="Only this tenant.", parser=names.tenant_filter),
]
AgentFilter = Annotated[
    str | None,
    typer.Option("--agent", help="Only this agent.", parser=names.agent_filter),
]

_CELL_HELP = "Cell as TENANT/AGENT, AGENT (unique on the host) or container name."
CellArg = Annotated[str, typer.Argument(metavar="NAME", help=_CELL_HELP, parser=names.cell_ref)]
CellArgs = Annotated[
    list[str] | None, typer.Argument(metavar="[NAME]...", help=_CELL_HELP, parser=names.cell_ref)
]

FollowOption = Annotated[bool, typer.Option("-F", "--follow", help="Keep streaming.")]


def spec_paths(paths: list[Path]) -> list[Path]:
    """``paths`` with ``-`` read as stdin (at most once: stdin can be read only once)."""
    if paths.count(STDIN) > 1:
        raise names.InvalidInput(
            "-f - is given more than once; stdin holds one stream",
            fix="give -f - once; put several documents in it separated by ---",
        )
    return list(paths)
