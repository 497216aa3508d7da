"""The ``agentcell`` command line.

Thin: each command parses its options, calls into the layers below and prints. Heavy modules
(docker SDK, pydantic models, rich tables) are imported inside the commands that use them, so
``agentcell up`` pays only for what ``up`` needs.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer

from agentcell.errors import Error

if TYPE_CHECKING:
    from agentcell.runtime.docker.backend import DockerBackend

__all__ = ["app", "main"]

app = typer.Typer(
    name="agentcell",
    help="Run agent services in hardened cells and prove the isolation holds.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
image_app = typer.Typer(
    help="Build, push, sign and verify images (offline base, minimal images, cosign format).",
    no_args_is_help=True,
)
app.add_typer(image_app, name="image")
keys_app = typer.Typer(help="Signing keys (cosign-compatible).", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
ca_app = typer.Typer(help="The control plane's certificate authority.", no_args_is_help=True)
app.add_typer(ca_app, name="ca")
cert_app = typer.Typer(help="Cell certificates: list and revoke.", no_args_is_help=True)
app.add_typer(cert_app, name="cert")

SpecFiles = Annotated[
    list[Path],
    typer.Option("-f", "--file", help="Spec file or directory (repeatable)."),
]
PolicyName = Annotated[str, typer.Option("--policy", help="Policy preset to admit with.")]


def _err(message: str) -> None:
    from agentcell.cli.terminal import printable

    # Errors and warnings can quote what a cell or an image produced.
    sys.stderr.write(printable(message.rstrip("\n")) + "\n")


def _backend() -> DockerBackend:
    from agentcell.runtime.docker.backend import DockerBackend

    return DockerBackend.connect()


@app.command()
def up(files: SpecFiles, policy: PolicyName = "restricted") -> None:
    """Admit each spec, check the host and the images, then make each cell match its spec
    (create, leave, start or replace)."""
    from agentcell.launch import up_files

    for launched in up_files(files, policy_name=policy, backend=_backend(), warn=_err):
        result, cell = launched.result, launched.result.cell
        print(
            f"{result.action:9} {cell.key} ({cell.container}) runtime={cell.runtime} "
            f"image={launched.image.trust}"
        )


@app.command()
def down(
    names: Annotated[
        list[str] | None, typer.Argument(help="Cells as TENANT/AGENT or AGENT.")
    ] = None,
    files: Annotated[
        list[Path] | None, typer.Option("-f", "--file", help="Remove the cells of these specs.")
    ] = None,
) -> None:
    """Stop and remove cells, named or from spec files."""
    from agentcell.spec.load import load_paths

    if not names and not files:
        raise typer.BadParameter("name a cell or pass -f SPEC")
    backend = _backend()
    keys = [doc.document.key for doc in load_paths(files or [])]
    for ref in names or []:
        cell = backend.find(ref)
        keys.append((cell.tenant, cell.agent))
    for tenant, agent in keys:
        removed = backend.down(tenant, agent)
        print(f"{'removed' if removed else 'absent':9} {tenant}/{agent}")


@app.command()
def ps(
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's cells.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="JSON instead of a table.")] = False,
) -> None:
    """List cells: tenant, agent, state, runtime and limits."""
    import dataclasses
    import json

    from agentcell.cli.render import cells_table, print_table

    cells = _backend().cells(tenant=tenant)
    if json_out:
        print(json.dumps([dataclasses.asdict(cell) for cell in cells], indent=2))
        return
    print_table(cells_table(cells))


@app.command()
def logs(
    name: Annotated[str, typer.Argument(help="Cell as TENANT/AGENT or AGENT.")],
    follow: Annotated[bool, typer.Option("-f", "--follow", help="Keep streaming.")] = False,
    tail: Annotated[int | None, typer.Option(help="Only the last N lines.")] = None,
) -> None:
    """Print a cell's output (control characters but newline and tab shown as escapes)."""
    from agentcell.cli.terminal import printable_stream

    out = sys.stdout.buffer
    try:
        for text in printable_stream(_backend().logs(name, follow=follow, tail=tail)):
            out.write(text.encode("utf-8"))
            out.flush()
    except KeyboardInterrupt:
        pass


@app.command()
def inspect(
    name: Annotated[str, typer.Argument(help="Cell as TENANT/AGENT or AGENT.")],
    json_out: Annotated[bool, typer.Option("--json", help="JSON instead of a table.")] = False,
) -> None:
    """Show the effective settings the engine holds for a cell."""
    import json

    from agentcell.cli.render import print_table, settings_table
    from agentcell.runtime.docker.effective import effective_settings

    settings = effective_settings(_backend().inspect(name))
    if json_out:
        print(json.dumps(settings, indent=2))
        return
    print_table(settings_table(name, settings))


@app.command()
def render(
    files: SpecFiles,
    target: Annotated[
        Literal["docker-run"], typer.Option(help="What to render the specs to.")
    ] = "docker-run",
    policy: PolicyName = "restricted",
) -> None:
    """Print what a spec becomes, e.g. the equivalent `docker run` command."""
    from agentcell.launch import admit_files
    from agentcell.runtime.docker.translate import settings_for

    for spec in admit_files(files, policy, warn=_err):
        print(f"# {spec.doc.tenant}/{spec.doc.name} ({spec.doc.file}:{spec.doc.line})")
        if spec.doc.document.spec.security.user is None:
            print("# --user: `up` allocates the cell a host uid of its own; shown is the first")
            print("# of agentcell's range, which another cell may already hold")
        print(settings_for(spec).docker_run_command())


@app.command()
def runtimes(
    json_out: Annotated[bool, typer.Option("--json", help="JSON instead of a table.")] = False,
) -> None:
    """List the OCI runtimes this host's engine offers, and what each can do here."""
    import dataclasses
    import json

    from agentcell.cli.render import print_table, runtimes_table

    facts = _backend().facts
    if json_out:
        print(json.dumps(dataclasses.asdict(facts), indent=2))
        return
    print_table(runtimes_table(facts))


@app.command()
def schema() -> None:
    """Print the JSON Schema of agentcell/v1 Agent documents (for editors)."""
    import json

    from agentcell.spec.model import AgentDocument

    print(json.dumps(AgentDocument.model_json_schema(by_alias=True), indent=2))


@image_app.command("bootstrap")
def image_bootstrap(
    base: Annotated[
        str | None,
        typer.Option(
            help="Build FROM this image (e.g. debian:bookworm-slim) instead of mmdebstrap."
        ),
    ] = None,
    force: Annotated[bool, typer.Option(help="Rebuild even what exists.")] = False,
) -> None:
    """Build the base image offline (mmdebstrap + docker import), then agentcell's images."""
    from agentcell.runtime.docker.images import bootstrap

    for image in bootstrap(_backend().client, base=base, force=force, progress=_err):
        print(f"{image.reference:40} {image.image_id[:19]} {image.size_bytes / 2**20:7.1f} MiB")


def _register_area_commands() -> None:
    """Commands that live in their area's module (each imports its heavy parts lazily)."""
    from agentcell.cli import identity_cmds, policy_cmds, proof_cmds, trust_cmds

    app.command("rules")(policy_cmds.rules_command)
    app.command("lint")(policy_cmds.lint_command)
    app.command("audit")(policy_cmds.audit_command)

    app.command("verify")(proof_cmds.verify_command)
    app.command("probe")(proof_cmds.probe_command)

    keys_app.command("generate")(trust_cmds.keys_generate)
    image_app.command("build")(trust_cmds.image_build)
    image_app.command("report")(trust_cmds.image_report)
    image_app.command("push")(trust_cmds.image_push)
    image_app.command("sign")(trust_cmds.image_sign)
    image_app.command("verify")(trust_cmds.image_verify)

    app.command("server")(identity_cmds.server)
    ca_app.command("init")(identity_cmds.ca_init)
    cert_app.command("list")(identity_cmds.cert_list)
    cert_app.command("revoke")(identity_cmds.cert_revoke)
    app.command("metrics")(identity_cmds.metrics)
    app.command("events")(identity_cmds.events)


_register_area_commands()


def main() -> None:
    """Entry point: run the app, turning agentcell errors into messages and exit codes."""
    try:
        app()
    except Error as exc:
        _err(f"error: {exc.diagnostics()}")
        sys.exit(exc.exit_code)
