"""``agentcell daemon serve|status`` and ``agentcell daemon token create|list|revoke``.

The token commands work on the service's database directly (``<state>/daemon/daemon.db``),
so they run on the service's host as its owner, whether it runs or not; a new token is
valid at once, a revoked one refused at the next request. Heavy imports stay inside the
bodies.
"""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from agentcell.cli.options import JsonAlias, OutputOption
from agentcell.cli.output import print_json, wants_json

if TYPE_CHECKING:
    from agentcell.daemon.store import DaemonStore

__all__ = ["daemon_app", "token_app"]

daemon_app = typer.Typer(
    help="The resident host service: sandboxes, warm pools, the thin path of up/down/ps.",
    no_args_is_help=True,
)
token_app = typer.Typer(help="Tenant API tokens of the host service.", no_args_is_help=True)
daemon_app.add_typer(token_app, name="token")


def _when(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


@daemon_app.command("serve")
def serve(
    listen: Annotated[
        str | None,
        typer.Option(help="TCP address host:port for TLS (default 127.0.0.1:8766)."),
    ] = None,
    templates: Annotated[
        list[Path] | None,
        typer.Option(
            "--templates",
            help="A SandboxTemplate file or a directory of them (repeatable; default "
            "<state>/daemon/templates when it exists).",
        ),
    ] = None,
    no_network_services: Annotated[
        bool,
        typer.Option(help="Do not run the tenant networks' resolvers and egress gateways."),
    ] = False,
    no_socket: Annotated[bool, typer.Option(help="Do not listen on the Unix socket.")] = False,
) -> None:
    """Run the host service until SIGTERM (sandboxes keep running across restarts)."""
    import asyncio
    import logging

    from agentcell.controlplane.settings import SettingsError, parse_listen
    from agentcell.daemon.server import DEFAULT_LISTEN, DaemonPaths, DaemonSettings, serve

    try:
        host, port = parse_listen(listen or DEFAULT_LISTEN)
    except SettingsError as exc:
        raise SettingsError(exc.what, fix=f"write e.g. {DEFAULT_LISTEN} or [::1]:8766") from exc
    paths = DaemonPaths.from_environ()
    chosen = tuple(templates or ())
    if not chosen and paths.templates.is_dir():
        chosen = (paths.templates,)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings = DaemonSettings(
        paths=paths,
        host=host,
        port=port,
        templates=chosen,
        network_services=not no_network_services,
        socket=not no_socket,
    )

    def ready(addresses: list[str]) -> None:
        print(f"ready {' '.join(addresses)}", flush=True)

    asyncio.run(serve(settings, on_ready=ready))


@daemon_app.command("status")
def status(output: OutputOption = "text", json_alias: JsonAlias = False) -> None:
    """Whether the host service runs on this state directory, and where (exit 1 when not)."""
    from agentcell.daemon.server import DaemonPaths, read_running_daemon

    paths = DaemonPaths.from_environ()
    running = read_running_daemon(paths)
    if wants_json(output, json_alias):
        items = [] if running is None else [running.__dict__]
        print_json("DaemonStatus", items, running=running is not None)
    elif running is None:
        print(f"not running (state directory {paths.directory})")
    else:
        print(f"running   pid {running.pid}")
        print(f"url       {running.url}")
        print(f"socket    {running.socket or '-'}")
        print(f"ca        {running.ca}")
    if running is None:
        raise typer.Exit(1)


def _store() -> DaemonStore:
    from agentcell.daemon.server import DaemonPaths
    from agentcell.daemon.store import DaemonStore

    return DaemonStore.open(DaemonPaths.from_environ().directory)


@token_app.command("create")
def token_create(
    tenant: Annotated[str, typer.Argument(metavar="TENANT", help="The token's tenant.")],
    output: OutputOption = "text",
    json_alias: JsonAlias = False,
) -> None:
    """Make a tenant token and print it once (only its SHA-256 is kept)."""
    from agentcell.daemon.tokens import TokenAuthority, validate_tenant

    validate_tenant(tenant)
    store = _store()
    try:
        row, secret = TokenAuthority(store.tokens).issue(tenant)
    finally:
        store.close()
    if wants_json(output, json_alias):
        print_json("TokenList", [{"id": row.id, "tenant": tenant, "token": secret}])
        return
    sys.stderr.write(f"token {row.id} for tenant {tenant}; it is shown only now\n")
    print(secret)


@token_app.command("list")
def token_list(output: OutputOption = "text", json_alias: JsonAlias = False) -> None:
    """Every tenant token: id, tenant, when made, when revoked (never the secret)."""
    store = _store()
    try:
        rows = store.tokens.all()
    finally:
        store.close()
    if wants_json(output, json_alias):
        print_json(
            "TokenList",
            (
                {
                    "id": r.id,
                    "tenant": r.tenant,
                    "created_at": r.created_at,
                    "revoked_at": r.revoked_at,
                }
                for r in rows
            ),
        )
        return
    print(f"{'ID':18} {'TENANT':12} {'CREATED (UTC)':19}  REVOKED (UTC)")
    for row in rows:
        print(f"{row.id:18} {row.tenant:12} {_when(row.created_at):19}  {_when(row.revoked_at)}")


@token_app.command("revoke")
def token_revoke(
    token_id: Annotated[str, typer.Argument(metavar="TOKEN_ID", help="As `token list` shows.")],
    output: OutputOption = "text",
    json_alias: JsonAlias = False,
) -> None:
    """Revoke a tenant token; the service refuses it from the next request on."""
    from agentcell.errors import InvalidInput

    store = _store()
    try:
        revoked = store.tokens.revoke(token_id)
    finally:
        store.close()
    if not revoked:
        raise InvalidInput(
            f"no unrevoked token {token_id}", fix="`agentcell daemon token list` shows the ids"
        )
    if wants_json(output, json_alias):
        print_json("TokenList", [{"id": token_id, "revoked": True}])
        return
    print(f"revoked {token_id}")
