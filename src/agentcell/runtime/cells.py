"""Backend-neutral views of cells, as the CLI and the control plane show them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["Cell", "UpResult"]

UpAction = Literal["created", "unchanged", "started", "replaced"]


@dataclass(frozen=True, kw_only=True)
class Cell:
    """One running or stopped cell, with the limits the engine holds for it."""

    tenant: str
    agent: str
    container: str
    container_id: str
    state: str
    health: str | None
    runtime: str
    image: str
    """What the cell runs: a pinned ``repo@sha256:...``, a local image ID, or a tag."""
    image_id: str
    cpus: float
    memory: int
    memory_swap: int
    pids: int
    spec_hash: str
    source: str
    exceptions: tuple[str, ...] = ()
    network: str = "none"
    pid: int = 0
    image_requested: str = ""
    """The reference the spec wrote."""
    image_trust: str = ""
    """How the image was checked at launch, e.g. ``signature verified: ...``."""
    spec: str = ""
    """The normalized spec the cell was made from, as JSON (``org.agentcell.spec``)."""
    applied: bool = False
    """``agentcell apply`` made the cell (so ``apply --prune`` may remove it)."""

    @property
    def key(self) -> str:
        """``tenant/agent``."""
        return f"{self.tenant}/{self.agent}"


@dataclass(frozen=True, kw_only=True)
class UpResult:
    """What ``up`` did to one cell."""

    cell: Cell
    action: UpAction
