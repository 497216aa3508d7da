"""``agentcell net log TENANT [-F] [--denied]`` and ``agentcell net serve``: the tenant
network services' decisions, and running those services in the foreground.

Registered under the ``net`` group (``net_app.command("log")(net_log)``,
``net_app.command("serve")(net_serve)``). Names, reasons and cell names in the log were
chosen by cells; text output escapes their control characters.

``-o json`` without ``-F`` prints one ``NetDecisionList`` envelope; with ``-F`` it prints one
``NetDecision`` envelope per line as decisions arrive.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from agentcell.cli import names
from agentcell.cli.identity_cmds import StateDir, Url
from agentcell.cli.options import FollowOption, JsonAlias, OutputOption
from agentcell.cli.output import envelope, print_json, wants_json

if TYPE_CHECKING:
    from agentcell.netsvc.decisions import DecisionRecord

__all__ = ["net_log", "net_serve"]

TenantArg = Annotated[
    str, typer.Argument(metavar="TENANT", help="Tenant name.", parser=names.tenant_filter)
]


def _row(entry: DecisionRecord) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(entry)


def _line(entry: DecisionRecord) -> str:
    import datetime as dt

    from agentcell.cli.terminal import printable

    when = dt.datetime.fromtimestamp(entry.ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
    target = entry.name or entry.address or "-"
    if entry.port is not None:
        target += f":{entry.port}"
    if entry.kind != "dns" and entry.name and entry.address:
        target += f" ({entry.address})"
    if entry.qtype:
        target += f" {entry.qtype}"
    decision = entry.decision.upper()
    text = f"{when}Z {entry.cell:16} {entry.kind:7} {decision:5} {target}  {entry.reason}"
    return printable(text.replace("\n", " "))


def net_log(
    tenant: TenantArg,
    follow: FollowOption = False,
    denied: Annotated[bool, typer.Option("--denied", help="Only the denials.")] = False,
    state_dir: StateDir = None,
    output: OutputOption = "text",
    json_alias: JsonAlias = False,
) -> None:
    """The resolver's and egress gateway's decisions for TENANT's cells, oldest first."""
    from agentcell.netsvc.decisions import decision_log_path, read_decisions

    path = decision_log_path(tenant, directory=state_dir)
    as_json = wants_json(output, json_alias)
    entries = read_decisions(path, denied_only=denied, follow=follow)
    if as_json and not follow:
        print_json("NetDecisionList", (_row(entry) for entry in entries), tenant=tenant)
        return
    if not follow and not path.exists():
        sys.stderr.write(f"no decisions logged for tenant {tenant} yet ({path})\n")
    try:
        for entry in entries:
            if as_json:
                line = json.dumps(envelope("NetDecision", [_row(entry)], tenant=tenant))
            else:
                line = _line(entry)
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
    except KeyboardInterrupt:
        return


def net_serve(
    upstream: Annotated[
        str | None,
        typer.Option(
            "--upstream",
            help="Resolvers for allowed names, ip[:port],... (default $AGENTCELL_DNS_UPSTREAM; "
            "none: no external name resolves).",
        ),
    ] = None,
    state_dir: StateDir = None,
    url: Url = None,
    output: OutputOption = "text",
    json_alias: JsonAlias = False,
) -> None:
    """Run every tenant network's resolver and egress gateway in the foreground, following the
    engine's networks and the tenants' documents, until interrupted."""
    import asyncio
    import logging

    from agentcell.cli.tenant_cmds import configured_directory
    from agentcell.netsvc.host import NetworkHost
    from agentcell.netsvc.upstream import parse_upstreams
    from agentcell.runtime.docker.netinfo import EngineNetworks

    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    directory: Any
    if state_dir is not None or url is not None:
        from agentcell.cli.identity_cmds import _client

        directory = _client(state_dir, url)
    else:
        directory = configured_directory()
    if directory is None:
        sys.stderr.write(
            "warning: no control plane is configured: every tenant network gets egress none\n"
        )
    networks = EngineNetworks()
    host = NetworkHost(
        networks=networks,
        directory=directory,
        upstream=parse_upstreams(upstream) if upstream is not None else None,
        state_dir=state_dir,
    )
    servers = [str(server) for server in host.upstream.servers]

    async def main() -> None:
        task = asyncio.create_task(host.run())
        await host.ready.wait()
        tenants = [
            {"tenant": tenant, "gateway": running.gateway}
            for tenant, running in sorted(host.running.items())
        ]
        if wants_json(output, json_alias):
            print_json("NetServe", tenants, upstream=servers)
        else:
            print(
                f"ready: {len(tenants)} tenant network(s); upstream {', '.join(servers) or 'none'}"
            )
            for row in tenants:
                print(f"  {row['tenant']:13} {row['gateway']}")
        sys.stdout.flush()
        await task

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
    finally:
        networks.close()
