"""Tables for the terminal. Imported only by the commands that print them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from rich.console import Console
from rich.table import Table

from agentcell.cli.terminal import literal
from agentcell.runtime.cells import Cell
from agentcell.runtime.docker.effective import cpu_limit
from agentcell.runtime.docker.host import HostFacts
from agentcell.spec.units import format_bytes

__all__ = ["cells_table", "inspect_json", "print_table", "runtimes_table", "settings_table"]


def print_table(table: Table, *, wide: bool = True) -> None:
    """Print to stdout. Piped, a ``wide`` table gets 200 columns instead of folding its cells;
    the others keep the 80 a pipe defaults to."""
    console = Console()
    if wide and not console.is_terminal:
        console = Console(width=200)
    console.print(table)


def cells_table(cells: Iterable[Cell], *, wide: bool = False) -> Table:
    """``agentcell ps``: the columns that fit 80, or with ``wide`` every column."""
    columns = ["TENANT", "AGENT", "STATE", "HEALTH", "RUNTIME", "CPUS", "MEMORY", "PIDS"]
    if wide:
        columns[7:7] = ["SWAP"]
        columns += ["EXCEPTIONS", "IMAGE"]
    table = Table(*columns, box=None)
    for cell in cells:
        fields = [
            cell.tenant,
            cell.agent,
            cell.state,
            cell.health or "-",
            cell.runtime,
            f"{cell.cpus:g}",
            format_bytes(cell.memory) if cell.memory else "unlimited",
            str(cell.pids or "unlimited"),
        ]
        if wide:
            swap = cell.memory_swap - cell.memory
            fields[7:7] = [format_bytes(swap) if cell.memory_swap > 0 else "unlimited"]
            fields += [",".join(cell.exceptions) or "-", _image(cell)]
        # Most fields are read from the container's labels, which the engine took as given.
        table.add_row(*(literal(field) for field in fields))
    return table


def _image(cell: Cell) -> str:
    """The reference the spec wrote, and the digest it was pinned to."""
    requested = cell.image_requested or cell.image
    if cell.image == requested:
        return requested
    digest = cell.image.rpartition("@")[2] if "@" in cell.image else cell.image
    return f"{requested} ({digest[:19]})"


def settings_table(name: str, settings: Mapping[str, str]) -> Table:
    """``agentcell inspect``."""
    table = Table("SETTING", "VALUE", title=literal(f"effective settings of {name}"), box=None)
    for key, value in settings.items():
        table.add_row(literal(key), literal(value))
    return table


def inspect_json(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """``agentcell inspect -o json``: what the table shows, typed (numbers, booleans, lists,
    null for no limit) instead of phrased."""
    from agentcell.cell.labels import (
        LABEL_EXCEPTIONS,
        LABEL_IMAGE_REQUESTED,
        LABEL_IMAGE_TRUST,
        LABEL_SOURCE,
    )

    host = attrs.get("HostConfig") or {}
    config = attrs.get("Config") or {}
    labels = config.get("Labels") or {}
    restart = host.get("RestartPolicy") or {}

    def limit(value: Any) -> int | None:
        return int(value) if value and int(value) > 0 else None

    return {
        "container": str(attrs.get("Name", "")).lstrip("/"),
        "image": labels.get(LABEL_IMAGE_REQUESTED) or config.get("Image"),
        "runs_image": config.get("Image"),
        "image_trust": labels.get(LABEL_IMAGE_TRUST),
        "image_id": attrs.get("Image"),
        "runtime": host.get("Runtime") or "runc",
        "user": config.get("User") or None,
        "capabilities_dropped": list(host.get("CapDrop") or []),
        "capabilities_added": list(host.get("CapAdd") or []),
        "privileged": bool(host.get("Privileged")),
        "security_options": list(host.get("SecurityOpt") or []),
        "read_only_rootfs": bool(host.get("ReadonlyRootfs")),
        "tmpfs": dict(host.get("Tmpfs") or {}),
        "cpus": cpu_limit(host) or None,
        "memory_bytes": limit(host.get("Memory")),
        "memory_swap_bytes": limit(host.get("MemorySwap")),
        "pids": limit(host.get("PidsLimit")),
        "network": host.get("NetworkMode") or "default",
        "pid_namespace": host.get("PidMode") or "private",
        "host_mounts": [
            {
                "source": mount.get("Source"),
                "target": mount.get("Destination"),
                "read_only": not mount.get("RW"),
            }
            for mount in attrs.get("Mounts") or []
        ],
        "restart": {
            "name": restart.get("Name") or "no",
            "maximum_retry_count": restart.get("MaximumRetryCount") or 0,
        },
        "healthcheck": list((config.get("Healthcheck") or {}).get("Test") or []),
        "policy_exceptions": [e for e in (labels.get(LABEL_EXCEPTIONS) or "").split(",") if e],
        "spec_source": labels.get(LABEL_SOURCE),
    }


def runtimes_table(facts: HostFacts) -> Table:
    """``agentcell runtimes``."""
    table = Table("RUNTIME", "AVAILABLE", "NETWORK", "PATH", "NOTE",
                  title=f"Docker {facts.engine_version}, cgroup v{facts.cgroup_version}",
                  box=None)  # fmt: skip
    for runtime in facts.runtimes:
        table.add_row(
            runtime.name,
            "yes" if runtime.available else "no",
            ("yes" if runtime.networking else "no") if runtime.available else "-",
            runtime.path or "-",
            runtime.note,
        )
    return table
