"""``agentcell net``: the tenant networks' host side.

``net check`` puts back what an engine restart, a reboot or a hand-made change undoes: each
tenant network's nftables tables, its resolv.conf, and the absence of a default route in its
cells (the engine gives a restarted cell one again). It says what it had to fix. The
intra-tenant setting is the one last installed on this host (by ``apply`` from the Tenant
document, or on for a network ``up`` made); ``apply`` changes it.
"""

from __future__ import annotations

from typing import Annotated

import typer

from agentcell.cli import names
from agentcell.cli.options import JsonAlias, OutputOption
from agentcell.cli.output import print_json, wants_json

__all__ = ["net_app", "net_check", "net_remove"]

net_app = typer.Typer(
    help="Tenant networks: their host rules, resolver settings and routes.", no_args_is_help=True
)

Tenants = Annotated[
    list[str] | None,
    typer.Argument(
        metavar="[TENANT]...",
        help="Tenants whose networks to check (default: every tenant network on this host).",
        parser=names.tenant_filter,
        show_default=False,
    ),
]


@net_app.command("check")
def net_check(
    tenants: Tenants = None,
    output: OutputOption = "text",
    json_alias: JsonAlias = False,
) -> None:
    """Re-apply each tenant network's host rules and resolv.conf and remove its cells'
    default routes; print what was fixed."""
    from agentcell.runtime.docker.backend import DockerBackend

    backend = DockerBackend.connect()
    networks = backend.networks
    if tenants:
        found = {tenant: networks.find(tenant) for tenant in tenants}
    else:
        found = {state.tenant: state for state in networks.all()}
    # tenant -> what was fixed, or None when the tenant has no network here
    results: dict[str, list[str] | None] = {
        tenant: None if state is None else networks.check(state) for tenant, state in found.items()
    }
    if wants_json(output, json_alias):
        print_json(
            "NetCheck",
            (
                {"tenant": tenant, "network": fixed is not None, "fixed": fixed or []}
                for tenant, fixed in results.items()
            ),
        )
        return
    if not results:
        print("no tenant network on this host")
    for tenant, fixed in results.items():
        if fixed is None:
            print(f"{tenant}: no network on this host")
        elif not fixed:
            print(f"{tenant}: in place")
        for line in fixed or []:
            print(f"{tenant}: fixed {line}")


@net_app.command("remove")
def net_remove(
    tenant: Annotated[
        str,
        typer.Argument(
            metavar="TENANT", help="The tenant whose network to remove.", parser=names.tenant_filter
        ),
    ],
    output: OutputOption = "text",
    json_alias: JsonAlias = False,
) -> None:
    """Remove TENANT's network, its host rules and files, once no cell is on it (for a network
    that `up` made for a tenant the control plane does not hold; `tenant delete` does this
    for declared tenants)."""
    from agentcell.runtime.docker.backend import DockerBackend

    removed = DockerBackend.connect().remove_tenant_network(tenant)
    if wants_json(output, json_alias):
        print_json("NetRemove", [{"tenant": tenant, "network": removed}])
    elif removed:
        print(f"{tenant}: network, host rules and files removed")
    else:
        print(f"{tenant}: no network on this host (host rules and files removed if any)")
