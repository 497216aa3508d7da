"""CLI commands for identity and the control plane: server, ca init, cert list|revoke,
metrics, events.

Plain functions with typer options; ``cli/main.py`` registers them. Heavy imports stay inside
the bodies so other commands do not pay for aiohttp, SQLAlchemy or cryptography.
"""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from agentcell.cli import names
from agentcell.cli.options import AgentFilter, JsonAlias, OutputOption, TenantFilter
from agentcell.cli.output import print_json, wants_json

if TYPE_CHECKING:
    from agentcell.controlplane.client import AdminClient

__all__ = [
    "ca_init",
    "cert_list",
    "cert_revoke",
    "events",
    "metrics",
    "server",
    "sparkline",
]

StateDir = Annotated[
    Path | None,
    typer.Option(
        "--state-dir",
        help="Control-plane state directory (default: $AGENTCELL_HOME/controlplane or "
        "/var/lib/agentcell/controlplane).",
    ),
]
Url = Annotated[
    str | None,
    typer.Option(
        "--url",
        help="Control plane URL (default: $AGENTCELL_CONTROLPLANE_URL, else the address the "
        "server on this state directory recorded, else https://127.0.0.1:8443).",
    ),
]

_BARS = "▁▂▃▄▅▆▇█"
REASON_MAX = 200
"""What the control plane keeps of a revocation reason (its request model's limit)."""
POINTS_MAX = EVENTS_MAX = 1000
"""The most items the admin API answers with (its ``limit`` query parameter)."""


def sparkline(values: list[float]) -> str:
    """A one-line chart of ``values`` scaled between their minimum and maximum."""
    if not values:
        return ""
    low, high = min(values), max(values)
    if high == low:
        return _BARS[0] * len(values)
    span = high - low
    return "".join(_BARS[min(len(_BARS) - 1, int((v - low) / span * len(_BARS)))] for v in values)


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _client(state_dir: Path | None, url: str | None) -> AdminClient:
    from agentcell.controlplane.client import AdminClient
    from agentcell.controlplane.settings import ClientSettings

    return AdminClient(ClientSettings.from_environ(state_dir=state_dir, url=url))


def server(
    state_dir: StateDir = None,
    listen: Annotated[
        str | None,
        typer.Option(help="TCP address host:port (default $AGENTCELL_LISTEN or 127.0.0.1:8443)."),
    ] = None,
    run_dir: Annotated[
        Path | None,
        typer.Option(help="Directory for the agents' socket and cells' identity files."),
    ] = None,
    database_url: Annotated[
        str | None,
        typer.Option(help="SQLAlchemy URL; default SQLite in the state directory."),
    ] = None,
    no_agent_socket: Annotated[
        bool, typer.Option(help="Do not listen on the agents' Unix socket.")
    ] = False,
) -> None:
    """Run the control plane: HTTPS API, agents over mTLS, Prometheus at /metrics."""
    import asyncio
    import logging

    from agentcell.controlplane.server import serve
    from agentcell.controlplane.settings import ServerSettings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings = ServerSettings.from_environ(
        state_dir=state_dir,
        run_dir=run_dir,
        listen=listen,
        database_url=database_url,
        agent_socket=not no_agent_socket,
    )

    def ready(addresses: list[str]) -> None:
        print(f"ready {' '.join(addresses)}", flush=True)

    asyncio.run(serve(settings, on_ready=ready))


def ca_init(
    state_dir: StateDir = None,
    trust_domain: Annotated[
        str, typer.Option(help="SPIFFE trust domain of agent identities.")
    ] = "agentcell.local",
    san: Annotated[
        list[str] | None,
        typer.Option(help="Extra DNS name or IP for the server certificate (repeatable)."),
    ] = None,
    force: Annotated[
        bool, typer.Option(help="Replace an existing CA (every agent must enrol again).")
    ] = False,
    output: OutputOption = "text",
    json_alias: JsonAlias = False,
) -> None:
    """Create the control plane's CA (key 0600), server certificate and admin token."""
    from agentcell.controlplane.server import init_state
    from agentcell.controlplane.settings import ControlPlanePaths
    from agentcell.identity.ca import DEFAULT_SERVER_NAMES

    paths = ControlPlanePaths.from_environ(state_dir=state_dir)
    ca = init_state(
        paths,
        trust_domain=trust_domain,
        server_names=(*DEFAULT_SERVER_NAMES, *(san or [])),
        force=force,
    )
    if wants_json(output, json_alias):
        print_json(
            "CertificateAuthority",
            [
                {
                    "trust_domain": ca.trust_domain,
                    "state_dir": str(paths.state_dir),
                    "ca_certificate": str(ca.files.ca_cert),
                    "ca_key": str(ca.files.ca_key),
                    "server_certificate": str(ca.files.server_cert),
                    "admin_token": str(paths.admin_token),
                }
            ],
        )
        return
    print(f"CA for trust domain {ca.trust_domain} in {paths.state_dir}")
    print(f"  CA certificate  {ca.files.ca_cert}")
    print(f"  CA key (0600)   {ca.files.ca_key}")
    print(f"  server cert     {ca.files.server_cert}")
    print(f"  admin token     {paths.admin_token} (0600)")


def cert_list(
    state_dir: StateDir = None,
    url: Url = None,
    tenant: TenantFilter = None,
    agent: AgentFilter = None,
    output: OutputOption = "text",
    json_alias: JsonAlias = False,
) -> None:
    """List issued agent certificates: serial, identity, validity, revocation."""
    client = _client(state_dir, url)
    listing = client.certificates(tenant=tenant, agent=agent)
    if wants_json(output, json_alias):
        print_json("CertificateList", listing.model_dump(mode="json")["certificates"])
        return
    now = dt.datetime.now(dt.UTC).timestamp()
    print(f"{'SERIAL':<41} {'AGENT':<30} {'KIND':<6} {'NOT AFTER':<21} STATE")
    for cert in listing.certificates:
        if cert.revoked_at is not None:
            state = f"revoked ({cert.revoke_reason})"
        elif cert.not_after <= now:
            state = "expired"
        else:
            state = f"valid, {int((cert.not_after - now) // 60)} min left"
        print(
            f"{cert.serial:<41} {cert.tenant + '/' + cert.agent:<30} {cert.kind:<6} "
            f"{_when(cert.not_after):<21} {state}"
        )


def cert_revoke(
    target: Annotated[
        str,
        typer.Argument(
            metavar="TARGET", help="A serial (hex) or TENANT/AGENT (all its current ones)."
        ),
    ],
    reason: Annotated[
        str, typer.Option(help="Why, recorded with the revocation (at most 200 characters).")
    ] = "revoked by an administrator",
    state_dir: StateDir = None,
    url: Url = None,
    output: OutputOption = "text",
    json_alias: JsonAlias = False,
) -> None:
    """Revoke a certificate; its holder is refused from its next request on."""
    from agentcell.controlplane.api import RevokeRequest

    parsed = names.revoke_target(target)
    if len(reason) > REASON_MAX:
        raise names.InvalidInput(
            f"--reason is {len(reason)} characters long; at most {REASON_MAX} are kept",
            fix="say it shorter",
        )
    client = _client(state_dir, url)
    if isinstance(parsed, tuple):
        tenant, agent = parsed
        request = RevokeRequest(tenant=tenant, agent=agent, reason=reason)
    else:
        request = RevokeRequest(serial=parsed, reason=reason)
    revoked = client.revoke(request).revoked
    if wants_json(output, json_alias):
        print_json("RevokeResult", ({"serial": serial} for serial in revoked))
        return
    for serial in revoked:
        print(f"revoked {serial}")


def metrics(
    name: Annotated[
        str,
        typer.Argument(
            metavar="METRIC",
            help="Metric name, e.g. cpu.utilization or load.1m.",
            parser=names.metric_name,
        ),
    ],
    state_dir: StateDir = None,
    url: Url = None,
    tenant: TenantFilter = None,
    agent: AgentFilter = None,
    points: Annotated[
        int, typer.Option(min=1, max=POINTS_MAX, help="Values per agent in the sparkline.")
    ] = 30,
    output: OutputOption = "text",
    json_alias: JsonAlias = False,
) -> None:
    """Latest value of one metric per agent, with a sparkline of recent values."""
    client = _client(state_dir, url)
    listing = client.metric(name, tenant=tenant, agent=agent, limit=points)
    from agentcell.cli.terminal import literal, printable

    if wants_json(output, json_alias):
        data = listing.model_dump(mode="json")
        print_json("MetricList", data.pop("series"), **data)
        return
    if not listing.series:
        sys.stderr.write(printable(f"no values of {name} yet") + "\n")
        if listing.available:
            # Metric names are whatever the agents reported.
            sys.stderr.write(printable(f"metrics reported: {', '.join(listing.available)}") + "\n")
        raise typer.Exit(1)
    from rich.console import Console
    from rich.table import Table

    table = Table("AGENT", "LATEST", "AT", "SEQ", f"LAST {points}", box=None)
    for series in listing.series:
        sequence, sampled_at, value = series.points[-1]
        table.add_row(
            literal(f"{series.tenant}/{series.agent}"),
            f"{value:g}",
            _when(sampled_at),
            str(sequence),
            sparkline([point[2] for point in series.points]),
        )
    Console().print(table)


def events(
    state_dir: StateDir = None,
    url: Url = None,
    tenant: TenantFilter = None,
    agent: AgentFilter = None,
    limit: Annotated[
        int, typer.Option(min=1, max=EVENTS_MAX, help="How many of the newest events.")
    ] = 50,
    output: OutputOption = "text",
    json_alias: JsonAlias = False,
) -> None:
    """Recent events from agents and the control plane (enrolments, revocations, ...)."""
    client = _client(state_dir, url)
    listing = client.events(tenant=tenant, agent=agent, limit=limit)
    from agentcell.cli.terminal import printable

    if wants_json(output, json_alias):
        data = listing.model_dump(mode="json")
        print_json("EventList", data.pop("events"), **data)
        return
    for event in listing.events:
        # An event's kind and message are the agent's own text.
        line = (
            f"{_when(event.at)}  {event.tenant}/{event.agent:<20} {event.source:<12} "
            f"{event.kind:<22} {event.message}"
        )
        print(printable(line))
