"""``agentcell apply`` and ``agentcell tenant list|show|delete``.

Tenants live in the control plane; ``apply`` needs it only when the documents declare tenants
or put agents in one (agents of the ``default`` tenant need neither), and says so plainly when
it is not there.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from agentcell.cli import names
from agentcell.cli.identity_cmds import StateDir, Url
from agentcell.cli.options import (
    JsonAlias,
    OutputOption,
    PolicyOption,
    SpecFiles,
    spec_paths,
)
from agentcell.cli.output import print_json, wants_json

if TYPE_CHECKING:
    from agentcell.controlplane.client import AdminClient
    from agentcell.runtime.docker.backend import DockerBackend

__all__ = [
    "apply_command",
    "configured_directory",
    "tenant_delete",
    "tenant_list",
    "tenant_show",
]

TenantArg = Annotated[
    str, typer.Argument(metavar="TENANT", help="Tenant name.", parser=names.tenant_filter)
]


def _admin(state_dir: Path | None = None, url: str | None = None) -> AdminClient:
    from agentcell.cli.identity_cmds import _client

    return _client(state_dir, url)


def configured_directory() -> AdminClient | None:
    """The control plane's admin client when one is configured for this host (a server
    running on this state directory, or ``AGENTCELL_CONTROLPLANE_URL``); None on a host
    without tenants."""
    import os

    from agentcell.cell.paths import state_dir

    # The control plane's modules cost an import; a host that never ran one has no record.
    if (
        not os.environ.get("AGENTCELL_CONTROLPLANE_URL")
        and not (state_dir() / "server.json").exists()
    ):
        return None
    from agentcell.controlplane.instance import read_running_server
    from agentcell.controlplane.settings import ClientSettings

    settings = ClientSettings.from_environ()
    if not os.environ.get("AGENTCELL_CONTROLPLANE_URL") and (
        read_running_server(settings.paths.state_dir) is None
    ):
        return None
    from agentcell.controlplane.client import AdminClient

    return AdminClient(settings)


def _backend() -> DockerBackend:
    from agentcell.runtime.docker.backend import DockerBackend

    return DockerBackend.connect()


def _err(message: str) -> None:
    from agentcell.cli.main import _err as report

    report(message)


def apply_command(
    files: SpecFiles,
    prune: Annotated[
        bool,
        typer.Option(
            "--prune",
            help="Also remove cells apply made and tenants that are no longer declared.",
        ),
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the plan and change nothing.")
    ] = False,
    policy: PolicyOption = "restricted",
    state_dir: StateDir = None,
    url: Url = None,
    output: OutputOption = "text",
    json_alias: JsonAlias = False,
) -> None:
    """Bring tenants and cells to a directory of Tenant and Agent documents: print the plan
    (create / update / replace / delete, with the fields that change), then act."""
    from agentcell.launch.apply import apply_plan, make_plan
    from agentcell.spec.load import load_bundle
    from agentcell.trust.config import load_trust_config

    bundle = load_bundle(spec_paths(files))
    backend = _backend()
    directory = _admin(state_dir, url)
    plan = make_plan(
        bundle,
        policy_name=policy,
        backend=backend,
        directory=directory,
        trust=load_trust_config(),
        prune=prune,
    )
    as_json = wants_json(output, json_alias)
    for finding in plan.tenant_findings:
        _err(finding.describe())
    if not as_json:
        for item in plan.changes:
            print(item.line())
        if not plan.changes:
            print("no changes")
    results: list[dict[str, Any]] = []
    if not dry_run:
        done = apply_plan(plan, backend=backend, directory=directory, warn=_err, issuer=directory)
        for launched in done.launched:
            cell = launched.result.cell
            results.append({"action": launched.result.action, "cell": cell.key})
    if as_json:
        print_json(
            "ApplyPlan",
            (
                {
                    "action": item.action,
                    "kind": item.kind,
                    "name": item.name,
                    "changed": list(item.changed),
                }
                for item in plan.items
            ),
            dry_run=dry_run,
            applied=results,
            findings=[
                {
                    "rule": f.rule,
                    "severity": f.severity,
                    "message": f.message,
                    "where": str(f.where),
                }
                for f in plan.tenant_findings
            ],
        )


def tenant_list(
    state_dir: StateDir = None,
    url: Url = None,
    output: OutputOption = "text",
    json_alias: JsonAlias = False,
) -> None:
    """The tenants the control plane holds, with quota used / allowed."""
    records = _admin(state_dir, url).tenants()
    cells = _backend().cells()
    rows = []
    for record in records:
        own = [cell for cell in cells if cell.tenant == record.name]
        rows.append(_summary(record.name, record.version, record.document, own))
    if wants_json(output, json_alias):
        print_json("TenantList", rows)
        return
    print(f"{'TENANT':13} {'ISOLATION':9} {'VERSION':>7} {'CELLS':>9} {'CPUS':>11} {'MEMORY':>13}")
    for row in rows:
        print(
            f"{row['name']:13} {row['isolation']:9} {row['version']:>7} "
            f"{_used(row, 'cells'):>9} {_used(row, 'cpus'):>11} {_used(row, 'memory'):>13}"
        )


def tenant_show(
    tenant: TenantArg,
    state_dir: StateDir = None,
    url: Url = None,
    output: OutputOption = "text",
    json_alias: JsonAlias = False,
) -> None:
    """One tenant: quota used / allowed, config version, cells and trusted keys."""
    from agentcell.cli.names import InvalidInput

    record = _admin(state_dir, url).tenant(tenant)
    if record is None:
        raise InvalidInput(f"no tenant {tenant}", fix="`agentcell tenant list` lists them")
    document = record.document
    own = [cell for cell in _backend().cells() if cell.tenant == tenant]
    row = _summary(tenant, record.version, document, own)
    row["config_version"] = record.config_version
    row["cells_list"] = [cell.key for cell in own]
    row["keys"] = [key.name for key in document.spec.trust.keys]
    row["config"] = dict(document.spec.config)
    if wants_json(output, json_alias):
        print_json("Tenant", [row])
        return
    print(f"tenant {tenant}  isolation {row['isolation']}  version {record.version}")
    for what in ("cells", "cpus", "memory", "pids"):
        print(f"  {what:7} {_used(row, what)}")
    print(f"  keys    {', '.join(row['keys']) or '-'}")
    print(f"  config  {len(row['config'])} keys (version {record.config_version})")
    for key in row["cells_list"]:
        print(f"  cell    {key}")


def tenant_delete(
    tenant: TenantArg,
    force: Annotated[
        bool, typer.Option("--force", help="Remove the tenant's cells first.")
    ] = False,
    state_dir: StateDir = None,
    url: Url = None,
    output: OutputOption = "text",
    json_alias: JsonAlias = False,
) -> None:
    """Remove a tenant from the control plane; refused while its cells run, unless --force
    (which removes them first, with their network and cgroup parent)."""
    from agentcell.cli.names import InvalidInput

    admin = _admin(state_dir, url)
    admin.tenants()  # the control plane must answer before anything is removed
    backend = _backend()
    own = [cell for cell in backend.cells() if cell.tenant == tenant]
    if own and not force:
        raise InvalidInput(
            f"tenant {tenant} still has {len(own)} cells: " + ", ".join(cell.key for cell in own),
            fix="remove them (agentcell down), or pass --force to remove them with the tenant",
        )
    for cell in own:
        backend.down(cell.tenant, cell.agent)
    backend.remove_tenant_network(tenant)
    backend.tenant_cgroup(tenant).remove()
    deleted = admin.delete_tenant(tenant)
    if wants_json(output, json_alias):
        print_json(
            "TenantDeleted",
            [{"tenant": tenant, "deleted": deleted, "cells_removed": [c.key for c in own]}],
        )
        return
    for cell in own:
        print(f"removed   {cell.key}")
    print(f"{'deleted' if deleted else 'no tenant'} {tenant}")


def _summary(name: str, version: int, document: Any, cells: list[Any]) -> dict[str, Any]:
    quota = document.spec.quota
    return {
        "name": name,
        "isolation": document.spec.isolation,
        "version": version,
        "used": {
            "cells": len(cells),
            "cpus": round(sum(cell.cpus for cell in cells), 3),
            "memory": sum(cell.memory for cell in cells),
            "pids": sum(cell.pids for cell in cells),
        },
        "quota": {
            "cells": quota.cells,
            "cpus": quota.cpus,
            "memory": quota.memory,
            "pids": quota.pids,
        },
    }


def _used(row: dict[str, Any], what: str) -> str:
    from agentcell.spec.units import format_bytes

    used, allowed = row["used"][what], row["quota"][what]

    def shown(value: Any) -> str:
        if value is None:
            return "-"
        return format_bytes(value) if what == "memory" else f"{value:g}"

    return f"{shown(used)}/{shown(allowed)}"
