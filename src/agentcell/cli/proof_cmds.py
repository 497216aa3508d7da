"""``agentcell verify`` and ``agentcell probe``: proof that a cell's isolation holds.

``verify`` reads what the kernel enforces (procfs, cgroupfs, the cell's netns) and compares it
with the cell's spec; ``probe`` tries to break out from inside. Both exit 1 when something is
weaker than the spec, so they can gate a deployment. Heavy modules are imported inside the
commands.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from agentcell.cli.options import CellArg, CellArgs, JsonAlias, OutputOption, spec_paths
from agentcell.cli.output import print_json, wants_json

if TYPE_CHECKING:
    from rich.console import Console

    from agentcell.verify.compare import VerifyReport
    from agentcell.verify.probe import ProbeReport

__all__ = ["probe_command", "verify_command"]

SpecFile = Annotated[
    Path | None,
    typer.Option(
        "-f",
        "--file",
        "--spec",
        help="Hold the cell to this spec file instead of the spec it carries; works for any "
        "container, agentcell's or not (- reads it from stdin).",
    ),
]

_STATUS_STYLE = {
    "verified": "green",
    "configured": "cyan",
    "reported": "yellow",
    "mismatch": "bold red",
    "not-enforced": "yellow",
    "unknown": "magenta",
    "blocked": "green",
    "contained": "green",
    "allowed": "cyan",
    "NOT BLOCKED": "bold red",
    "skipped": "yellow",
}
_BASIS = {
    "kernel": "host kernel",
    "sandbox": "gVisor (runsc ps)",
    "host": "host state",
    "image": "image (untrusted)",
    "engine": "engine record",
}


def _console() -> Console:
    from rich.console import Console

    # Piped output keeps long lines whole instead of folding them at 80 columns.
    return Console(width=None if sys.stdout.isatty() else 220, highlight=False)


def verify_command(
    names: CellArgs = None,
    all_: Annotated[bool, typer.Option("--all", help="Every running cell on this engine.")] = False,
    spec: SpecFile = None,
    output: OutputOption = "text",
    json_alias: JsonAlias = False,
) -> None:
    """Read each cell's isolation from the kernel and compare it with its spec.

    Every check is verified (the kernel shows it), configured (only a record does: the
    engine's, or the OCI spec the runtime was handed), reported (only the image's own
    binaries said so: untrusted), a mismatch, not enforced on this host (with why), or
    unknown. Exit 1 on any mismatch.
    """
    from agentcell.cli.names import InvalidInput
    from agentcell.runtime.docker.backend import DockerBackend
    from agentcell.runtime.docker.proof import DockerProof

    if not names and not all_:
        raise InvalidInput("no cell to verify", fix="name a cell (TENANT/AGENT) or pass --all")
    spec_file = _spec_file(spec)
    backend = DockerBackend.connect()
    try:
        proof = DockerProof(backend)
        reports = [
            proof.report(subject)
            for subject in proof.subjects(names or [], all_cells=all_, spec_file=spec_file)
        ]
    finally:
        backend.close()
    if wants_json(output, json_alias):
        print_json("VerifyReport", (_verify_json(report) for report in reports))
    else:
        console = _console()
        for report in reports:
            _print_verify(report, console)
    if not all(report.ok for report in reports):
        raise typer.Exit(1)


def probe_command(
    name: CellArg,
    output: OutputOption = "text",
    json_alias: JsonAlias = False,
    only: Annotated[
        list[str] | None,
        typer.Option("--only", help="Run only these probes (repeatable), e.g. --only io_uring."),
    ] = None,
    spec: SpecFile = None,
    neighbour_uid: Annotated[
        int | None,
        typer.Option(
            "--neighbour-uid",
            min=1,
            help="Run the neighbour cell of the cross-cell probes as this uid (default: one of "
            "its own, as any cell gets); give the cell's own uid to see what a neighbour that "
            "shares it would suffer.",
        ),
    ] = None,
) -> None:
    """Try to break out of a cell: privilege, syscalls, filesystem, cgroups, resources,
    network, and into a neighbour cell of another tenant started beside it. Each attempt is
    blocked (with what stopped it), contained by gVisor, allowed by the spec, NOT BLOCKED, or
    skipped with why. Exit 1 on any NOT BLOCKED, and when the cell itself died (stopped,
    restarted) during the run."""
    from agentcell.cli.names import InvalidInput
    from agentcell.runtime.docker.backend import DockerBackend
    from agentcell.runtime.docker.proof import DockerProof
    from agentcell.verify.probe import ALL_PROBES, run_probes

    unknown = sorted(set(only or []) - set(ALL_PROBES))
    if unknown:
        raise InvalidInput(
            f"--only: no probe {', '.join(map(repr, unknown))}",
            fix=f"choose from: {', '.join(ALL_PROBES)}",
        )
    spec_file = _spec_file(spec)
    backend = DockerBackend.connect()
    try:
        proof = DockerProof(backend)
        (subject,) = proof.subjects([name], spec_file=spec_file)
        report = run_probes(
            proof.probe_host(subject),
            subject.document,
            cell=subject.name,
            container=subject.container.name or name,
            only=only,
            neighbour_uid=neighbour_uid,
        )
    finally:
        backend.close()
    if wants_json(output, json_alias):
        data = report.to_json()
        print_json("ProbeReport", data.pop("results"), **data)
    else:
        _print_probe(report, _console())
    if not report.ok:
        raise typer.Exit(1)


def _spec_file(spec: Path | None) -> Path | None:
    return None if spec is None else spec_paths([spec])[0]


def _verify_json(report: VerifyReport) -> dict[str, Any]:
    data = report.to_json()
    # One unit for durations across commands: seconds, as probe reports them.
    data["elapsed_s"] = round(data.pop("elapsed_ms") / 1000, 3)
    return data


def _styled(status: str) -> str:
    style = _STATUS_STYLE.get(status, "")
    return f"[{style}]{status}[/{style}]" if style else status


def _print_verify(report: VerifyReport, console: Console) -> None:
    from rich.table import Table

    from agentcell.cli.terminal import literal

    table = Table(
        "CHECK",
        "STATUS",
        "EXPECTED",
        "OBSERVED",
        "READ FROM",
        "WHY / SOURCE",
        title=literal(f"verify {report.cell} ({report.container}, runtime {report.runtime})"),
        caption=literal(f"spec: {report.spec_source}; read in {report.elapsed_ms:.0f} ms"),
        box=None,
    )
    for check in report.checks:
        note = check.why or check.source
        table.add_row(
            check.id,
            _styled(check.status),
            literal(check.expected),
            literal(check.observed),
            _BASIS[check.basis],
            literal(note),
        )
    console.print(table)
    tally: dict[str, int] = {}
    for check in report.checks:
        tally[check.status] = tally.get(check.status, 0) + 1
    summary = ", ".join(f"{count} {status}" for status, count in sorted(tally.items()))
    verdict = "[green]OK[/green]" if report.ok else "[bold red]MISMATCH[/bold red]"
    console.print(f"{verdict}: {summary}\n")


def _print_probe(report: ProbeReport, console: Console) -> None:
    from rich.markup import escape
    from rich.table import Table

    from agentcell.cli.terminal import literal, printable

    table = Table(
        "PROBE",
        "CATEGORY",
        "RESULT",
        "MECHANISM",
        "DETAIL",
        title=literal(f"probe {report.cell} ({report.container}, runtime {report.runtime})"),
        caption=f"{len(report.results)} probes in {report.elapsed_s:.1f} s",
        box=None,
    )
    for result in report.results:
        # The probe program runs with the cell's interpreter: all of its text is the cell's.
        table.add_row(
            literal(result.id),
            literal(result.category),
            _styled(result.status),
            literal(result.mechanism),
            literal(result.detail),
        )
    console.print(table)
    for note in report.notes:
        console.print(f"note: {escape(printable(note))}")
    tally: dict[str, int] = {}
    for result in report.results:
        tally[result.status] = tally.get(result.status, 0) + 1
    summary = ", ".join(f"{count} {status}" for status, count in sorted(tally.items()))
    if report.cell_died is not None:
        verdict = f"[bold red]CELL DIED[/bold red] ({escape(printable(report.cell_died))})"
    elif report.ok:
        verdict = "[green]OK[/green]"
    else:
        verdict = "[bold red]NOT BLOCKED[/bold red]"
    console.print(f"{verdict}: {summary}\n")
