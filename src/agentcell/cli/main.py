"""The ``agentcell`` command line.

Thin: each command parses its options, calls into the layers below and prints. Heavy modules
(docker SDK, pydantic models, rich tables) are imported inside the commands that use them, so
``agentcell up`` pays only for what ``up`` needs.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer

from agentcell.cli.options import (
    CellArg,
    CellArgs,
    FollowOption,
    JsonAlias,
    OutputOption,
    PolicyOption,
    SpecFiles,
    SpecFilesOptional,
    TenantFilter,
    spec_paths,
)
from agentcell.cli.output import print_json, wants_json
from agentcell.errors import Error

if TYPE_CHECKING:
    from agentcell.runtime.docker.backend import DockerBackend

__all__ = ["app", "main"]

app = typer.Typer(
    name="agentcell",
    help="Run agent services in hardened cells and prove the isolation holds.",
    no_args_is_help=True,
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
tenant_app = typer.Typer(
    help="Tenants the control plane holds: list, show, delete.", no_args_is_help=True
)
app.add_typer(tenant_app, name="tenant")


def _err(message: str) -> None:
    from agentcell.cli.terminal import printable

    # Errors and warnings can quote what a cell or an image produced.
    sys.stderr.write(printable(message.rstrip("\n")) + "\n")


def _backend() -> DockerBackend:
    from agentcell.runtime.docker.backend import DockerBackend

    return DockerBackend.connect()


def _version(value: bool) -> None:
    if value:
        from agentcell import __version__

        print(f"agentcell {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", is_eager=True, callback=_version, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Run agent services in hardened cells and prove the isolation holds."""


@app.command()
def up(
    files: SpecFiles,
    policy: PolicyOption = "restricted",
    output: OutputOption = "text",
    json_alias: JsonAlias = False,
) -> None:
    """Admit each spec, check the host and the images, then make each cell match its spec
    (create, leave, start or replace)."""
    from agentcell.cli.tenant_cmds import configured_directory
    from agentcell.launch import up_files

    launched_cells = up_files(
        spec_paths(files),
        policy_name=policy,
        backend=_backend(),
        warn=_err,
        directory=configured_directory(),
    )
    if wants_json(output, json_alias):
        print_json(
            "UpResult",
            (
                {
                    "action": launched.result.action,
                    "tenant": launched.result.cell.tenant,
                    "agent": launched.result.cell.agent,
                    "container": launched.result.cell.container,
                    "runtime": launched.result.cell.runtime,
                    "image": launched.image.reference_by_digest,
                    "image_requested": launched.image.requested,
                    "image_trust": launched.image.trust,
                    "warnings": list(launched.image.warnings),
                }
                for launched in launched_cells
            ),
        )
        return
    for launched in launched_cells:
        result, cell = launched.result, launched.result.cell
        print(
            f"{result.action:9} {cell.key} ({cell.container}) runtime={cell.runtime} "
            f"image={launched.image.trust}"
        )


@app.command()
def down(
    names: CellArgs = None,
    files: SpecFilesOptional = None,
    timeout: Annotated[
        int,
        typer.Option(
            "--timeout",
            min=0,
            max=3600,
            help="Seconds to wait for a cell to stop before it is killed.",
        ),
    ] = 10,
    output: OutputOption = "text",
    json_alias: JsonAlias = False,
) -> None:
    """Stop and remove cells, named or from spec files."""
    from agentcell.cli.names import InvalidInput
    from agentcell.spec.load import load_paths

    if not names and not files:
        raise InvalidInput("no cell to remove", fix="name a cell (TENANT/AGENT) or pass -f SPEC")
    backend = _backend()
    keys = [doc.document.key for doc in load_paths(spec_paths(files or []))]
    for ref in names or []:
        cell = backend.find(ref)
        keys.append((cell.tenant, cell.agent))
    removed = [
        (tenant, agent, backend.down(tenant, agent, timeout_s=timeout)) for tenant, agent in keys
    ]
    if wants_json(output, json_alias):
        print_json(
            "DownResult",
            ({"tenant": t, "agent": a, "removed": gone} for t, a, gone in removed),
        )
        return
    for tenant, agent, gone in removed:
        print(f"{'removed' if gone else 'absent':9} {tenant}/{agent}")


@app.command()
def ps(
    tenant: TenantFilter = None,
    output: Annotated[
        Literal["text", "wide", "json"],
        typer.Option(
            "-o", "--output", help="text (fits 80 columns), wide (every column), or json."
        ),
    ] = "text",
    json_alias: JsonAlias = False,
) -> None:
    """List cells: tenant, agent, state, health, runtime and limits (-o wide adds swap,
    policy exceptions and the image)."""
    from agentcell.cli.render import cells_table, print_table

    cells = _backend().cells(tenant=tenant)
    if wants_json(output, json_alias):
        print_json("CellList", (_cell_json(cell) for cell in cells))
        return
    print_table(cells_table(cells, wide=output == "wide"), wide=output == "wide")


def _cell_json(cell: Any) -> dict[str, Any]:
    import dataclasses

    data: dict[str, Any] = dataclasses.asdict(cell)
    data["key"] = cell.key
    data["exceptions"] = list(cell.exceptions)
    # Bytes say so in their key; the engine's "0" means no limit, which JSON says as null.
    data["memory_bytes"] = data.pop("memory") or None
    data["memory_swap_bytes"] = data.pop("memory_swap") if cell.memory_swap > 0 else None
    data["pids"] = cell.pids or None
    data["cpus"] = cell.cpus or None
    return data


@app.command()
def logs(
    name: CellArg,
    follow: FollowOption = False,
    tail: Annotated[int | None, typer.Option(min=0, help="Only the last N lines.")] = None,
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
    name: CellArg,
    output: OutputOption = "text",
    json_alias: JsonAlias = False,
) -> None:
    """Show the effective settings the engine holds for a cell."""
    from agentcell.cli.render import inspect_json, print_table, settings_table
    from agentcell.runtime.docker.effective import effective_settings

    attrs = _backend().inspect(name)
    if wants_json(output, json_alias):
        print_json("CellSettings", [inspect_json(attrs)])
        return
    print_table(settings_table(name, effective_settings(attrs)))


@app.command()
def render(
    files: SpecFiles,
    target: Annotated[
        Literal["docker-run"], typer.Option(help="What to render the specs to.")
    ] = "docker-run",
    policy: PolicyOption = "restricted",
    output: OutputOption = "text",
    json_alias: JsonAlias = False,
) -> None:
    """Print what a spec becomes, e.g. the equivalent `docker run` command."""
    from agentcell.launch import admit_files
    from agentcell.runtime.docker.translate import settings_for

    admitted = admit_files(spec_paths(files), policy, warn=_err)
    if wants_json(output, json_alias):
        print_json(
            "RenderResult",
            (
                {
                    "tenant": spec.doc.tenant,
                    "agent": spec.doc.name,
                    "file": spec.doc.file,
                    "line": spec.doc.line,
                    "target": target,
                    "uid_allocated_by_up": spec.doc.document.spec.security.user is None,
                    "command": settings_for(spec).docker_run_command(),
                }
                for spec in admitted
            ),
        )
        return
    for spec in admitted:
        print(f"# {spec.doc.tenant}/{spec.doc.name} ({spec.doc.file}:{spec.doc.line})")
        if spec.doc.document.spec.security.user is None:
            print("# --user: `up` allocates the cell a host uid of its own; shown is the first")
            print("# of agentcell's range, which another cell may already hold")
        print(settings_for(spec).docker_run_command())


@app.command()
def runtimes(
    output: OutputOption = "text",
    json_alias: JsonAlias = False,
) -> None:
    """List the OCI runtimes this host's engine offers, and what each can do here."""
    import dataclasses

    from agentcell.cli.render import print_table, runtimes_table

    facts = _backend().facts
    if wants_json(output, json_alias):
        host = dataclasses.asdict(facts)
        items = host.pop("runtimes")
        print_json("RuntimeList", items, host=host)
        return
    print_table(runtimes_table(facts))


@app.command()
def schema(
    kind: Annotated[
        Literal["Agent", "Tenant", "SandboxTemplate"],
        typer.Option("--kind", help="Which document kind."),
    ] = "Agent",
) -> None:
    """Print the JSON Schema of agentcell/v1 Agent (or Tenant, or SandboxTemplate) documents
    (for editors)."""
    import json

    import pydantic

    from agentcell.spec.model import AgentDocument
    from agentcell.spec.template import SandboxTemplate
    from agentcell.spec.tenant import TenantDocument

    models: dict[str, type[pydantic.BaseModel]] = {
        "Agent": AgentDocument,
        "Tenant": TenantDocument,
        "SandboxTemplate": SandboxTemplate,
    }
    model = models[kind]
    print(json.dumps(model.model_json_schema(by_alias=True), indent=2))


@image_app.command("bootstrap")
def image_bootstrap(
    base: Annotated[
        str | None,
        typer.Option(
            help="Build FROM this image (e.g. debian:bookworm-slim) instead of mmdebstrap."
        ),
    ] = None,
    force: Annotated[bool, typer.Option(help="Rebuild even what exists.")] = False,
    output: OutputOption = "text",
    json_alias: JsonAlias = False,
) -> None:
    """Build the base image offline (mmdebstrap + docker import), then agentcell's images."""
    from agentcell.runtime.docker.images import bootstrap

    images = bootstrap(_backend().client, base=base, force=force, progress=_err)
    if wants_json(output, json_alias):
        print_json(
            "ImageList",
            (
                {"reference": i.reference, "image_id": i.image_id, "size_bytes": i.size_bytes}
                for i in images
            ),
        )
        return
    for image in images:
        print(f"{image.reference:40} {image.image_id[:19]} {image.size_bytes / 2**20:7.1f} MiB")


def _register_area_commands() -> None:
    """Commands that live in their area's module (each imports its heavy parts lazily)."""
    from agentcell.cli import (
        daemon_cmds,
        identity_cmds,
        net_cmds,
        net_service_cmds,
        policy_cmds,
        proof_cmds,
        sandbox_cmds,
        tenant_cmds,
        trust_cmds,
    )

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

    app.command("apply")(tenant_cmds.apply_command)
    tenant_app.command("list")(tenant_cmds.tenant_list)
    tenant_app.command("show")(tenant_cmds.tenant_show)
    tenant_app.command("delete")(tenant_cmds.tenant_delete)

    net_cmds.net_app.command("log")(net_service_cmds.net_log)
    net_cmds.net_app.command("serve")(net_service_cmds.net_serve)
    app.add_typer(net_cmds.net_app, name="net")

    app.add_typer(daemon_cmds.daemon_app, name="daemon")

    app.add_typer(sandbox_cmds.sandbox_app, name="sandbox")
    app.command("run")(sandbox_cmds.run_command)


_register_area_commands()


def main() -> None:
    """Entry point: run the app, turning agentcell errors into messages and exit codes."""
    try:
        app()
    except Error as exc:
        _err(f"error: {exc.diagnostics()}")
        sys.exit(exc.exit_code)
