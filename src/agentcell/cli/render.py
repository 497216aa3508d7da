"""Tables for the terminal. Imported only by the commands that print them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from rich.console import Console
from rich.table import Table

from agentcell.cli.terminal import literal
from agentcell.runtime.cells import Cell
from agentcell.runtime.docker.host import HostFacts
from agentcell.spec.units import format_bytes

__all__ = ["cells_table", "print_table", "runtimes_table", "settings_table"]


def print_table(table: Table) -> None:
    """Print to stdout, wide enough not to fold cells when output is piped."""
    Console(width=200 if not Console().is_terminal else None).print(table)


def cells_table(cells: Iterable[Cell]) -> Table:
    """``agentcell ps``."""
    table = Table("TENANT", "AGENT", "STATE", "HEALTH", "RUNTIME", "CPUS", "MEMORY", "SWAP", "PIDS",
                  "EXCEPTIONS", "IMAGE", box=None)  # fmt: skip
    for cell in cells:
        fields = (
            cell.tenant,
            cell.agent,
            cell.state,
            cell.health or "-",
            cell.runtime,
            f"{cell.cpus:g}",
            format_bytes(cell.memory) if cell.memory else "unlimited",
            format_bytes(cell.memory_swap - cell.memory) if cell.memory_swap > 0 else "unlimited",
            str(cell.pids or "unlimited"),
            ",".join(cell.exceptions) or "-",
            _image(cell),
        )
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
