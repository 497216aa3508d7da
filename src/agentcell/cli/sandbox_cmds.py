"""``agentcell sandbox create|ls|exec|cp|kill|timeout`` and ``agentcell run``.

Typer's side only: the commands parse here and call the functions of
:mod:`agentcell.cli.fast`, which the thin path calls too without importing typer, so both
routes print the same and exit the same. Every command talks to the host service
(``agentcell daemon serve``), found as :func:`agentcell.sdk.discover` says.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from agentcell.cli import fast
from agentcell.cli.options import JsonAlias, OutputOption, TenantFilter
from agentcell.cli.output import wants_json
from agentcell.errors import InvalidInput

__all__ = ["run_command", "sandbox_app"]

sandbox_app = typer.Typer(
    help="Sandboxes from the host service's warm pools: create, list, exec, copy, kill.",
    no_args_is_help=True,
)

SandboxArg = Annotated[str, typer.Argument(metavar="ID", help="A sandbox id (sbx-...).")]
CommandArgs = Annotated[
    list[str], typer.Argument(metavar="-- CMD...", help="The command and its arguments.")
]
ShellOption = Annotated[
    bool, typer.Option("--shell", help="Run CMD... joined as one /bin/sh -c string.")
]


def _output(output: str, json_alias: bool) -> str:
    return "json" if wants_json(output, json_alias) else output


def _done(code: int) -> None:
    sys.stdout.flush()
    if code:
        raise typer.Exit(code)


@sandbox_app.command("create")
def sandbox_create(
    template: Annotated[str, typer.Argument(help="The template to take a sandbox from.")],
    timeout: Annotated[
        float, typer.Option("--timeout", min=1, help="Seconds the sandbox lives (its TTL).")
    ] = 300,
    tenant: TenantFilter = None,
    output: OutputOption = "text",
    json_alias: JsonAlias = False,
) -> None:
    """Take a never-used sandbox (from the warm pool when it has one) and print its id."""
    _done(
        fast.sandbox_create(
            template, timeout_s=timeout, tenant=tenant, output=_output(output, json_alias)
        )
    )


@sandbox_app.command("ls")
def sandbox_ls(
    tenant: TenantFilter = None,
    output: OutputOption = "text",
    json_alias: JsonAlias = False,
) -> None:
    """List the sandboxes the token may see."""
    _done(fast.sandbox_list(tenant=tenant, output=_output(output, json_alias)))


@sandbox_app.command("exec")
def sandbox_exec(
    sandbox_id: SandboxArg,
    command: CommandArgs,
    timeout: Annotated[
        float, typer.Option("--timeout", min=0.001, help="Seconds before it is killed.")
    ] = 60,
    cwd: Annotated[str | None, typer.Option("--cwd", help="Directory to run in.")] = None,
    env: Annotated[
        list[str] | None, typer.Option("-e", "--env", help="KEY=VALUE (repeatable).")
    ] = None,
    shell: ShellOption = False,
    stdin: Annotated[
        bool, typer.Option("-i", "--stdin", help="Send this command's stdin to it.")
    ] = False,
    output: OutputOption = "text",
    json_alias: JsonAlias = False,
) -> None:
    """Run a command in a sandbox, streaming its output; exit with its exit code."""
    pairs = {}
    for pair in env or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InvalidInput(f"--env {pair!r} is not KEY=VALUE", fix="e.g. -e LANG=C.UTF-8")
        pairs[key] = value
    _done(
        fast.sandbox_exec(
            sandbox_id,
            command,
            shell=shell,
            timeout_s=timeout,
            cwd=cwd,
            env=pairs,
            stdin=stdin,
            output=_output(output, json_alias),
        )
    )


@sandbox_app.command("cp")
def sandbox_cp(
    source: Annotated[str, typer.Argument(help="LOCAL (or -) or ID:PATH.")],
    destination: Annotated[str, typer.Argument(help="ID:PATH, or LOCAL (or -).")],
    output: OutputOption = "text",
    json_alias: JsonAlias = False,
) -> None:
    """Copy a file into a sandbox's tmpfs or out of it, streamed."""
    _done(fast.sandbox_cp(source, destination, output=_output(output, json_alias)))


@sandbox_app.command("kill")
def sandbox_kill(
    sandbox_ids: Annotated[list[str], typer.Argument(metavar="ID...", help="Sandbox ids.")],
    output: OutputOption = "text",
    json_alias: JsonAlias = False,
) -> None:
    """Destroy sandboxes (a killed cell is never handed out again)."""
    _done(fast.sandbox_kill(sandbox_ids, output=_output(output, json_alias)))


@sandbox_app.command("timeout")
def sandbox_timeout(
    sandbox_id: SandboxArg,
    seconds: Annotated[float, typer.Argument(min=1, help="Expire this many seconds from now.")],
    output: OutputOption = "text",
    json_alias: JsonAlias = False,
) -> None:
    """Set when a sandbox expires, counted from now (up to its template's maximum)."""
    _done(fast.sandbox_timeout(sandbox_id, seconds, output=_output(output, json_alias)))


def run_command(
    template: Annotated[str, typer.Argument(help="The template to take a sandbox from.")],
    command: CommandArgs,
    timeout: Annotated[
        float, typer.Option("--timeout", min=0.001, help="Seconds before the command is killed.")
    ] = 60,
    tenant: TenantFilter = None,
    shell: ShellOption = False,
    output: OutputOption = "text",
    json_alias: JsonAlias = False,
) -> None:
    """Run one command in a fresh sandbox, then kill the sandbox; exit with its exit code."""
    _done(
        fast.run_once(
            template,
            command,
            timeout_s=timeout,
            tenant=tenant,
            shell=shell,
            output=_output(output, json_alias),
        )
    )
