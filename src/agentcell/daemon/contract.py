"""What the daemon's HTTP layer asks of the sandbox engine, and what the engine answers.

The HTTP layer (``daemon/app.py``) authenticates the caller and passes the caller's tenant
(``None`` for the admin token) to every call; the engine (``daemon/sandboxes.py``) owns the
sandboxes, pools, TTLs, commands and files and never sees a token. A tenant that asks for a
sandbox of another tenant gets :class:`SandboxNotFound`, exactly as for an unknown id.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from agentcell.errors import Error

__all__ = [
    "CommandEnd",
    "CommandInfo",
    "CommandNotFound",
    "CommandRequest",
    "FileEntry",
    "FileRefused",
    "Frame",
    "PoolExhausted",
    "QuotaExceeded",
    "SandboxConflict",
    "SandboxEngine",
    "SandboxInfo",
    "SandboxNotFound",
    "TemplateInfo",
    "TemplateNotFound",
    "TimeoutRefused",
]

SandboxState = Literal["running", "expired", "killed", "dead"]
EndReason = Literal[
    "exited", "timeout", "killed", "sandbox_expired", "sandbox_killed", "sandbox_died"
]
FrameType = Literal["start", "stdout", "stderr", "truncated", "end"]


class SandboxNotFound(Error):
    """No such sandbox for this caller (unknown, or another tenant's): HTTP 404."""

    exit_code = 2


class TemplateNotFound(Error):
    """No such template for this caller's tenant: HTTP 404."""

    exit_code = 2


class CommandNotFound(Error):
    """No such command in this sandbox: HTTP 404."""

    exit_code = 2


class SandboxConflict(Error):
    """The sandbox is not running (expired, killed, dead): HTTP 409."""

    exit_code = 2


class TimeoutRefused(Error):
    """A TTL over the template's maximum, or not positive: HTTP 400."""

    exit_code = 2


class FileRefused(Error):
    """A path outside the cell's tmpfs mounts, a ``..`` or symlink on the way, a file too
    large for its tmpfs, or not found: HTTP 400 (404 for not found, 413 for too large, by
    ``reason``)."""

    exit_code = 2

    def __init__(self, what: str, *, reason: str = "bad_path", fix: str | None = None) -> None:
        super().__init__(what, fix=fix)
        self.reason = reason


class QuotaExceeded(Error):
    """The tenant's quota cannot hold another cell (or the pool's minimum): HTTP 429."""

    exit_code = 2


class PoolExhausted(Error):
    """The template's ``pool.max`` sandboxes are all handed out: HTTP 429."""

    exit_code = 2


class CellUnverified(Error):
    """A cell started for a sandbox failed ``verify`` and was destroyed, never handed out:
    HTTP 503."""

    exit_code = 1


@dataclass(frozen=True)
class TemplateInfo:
    name: str
    tenant: str
    image: str
    runtime: str
    network: str
    pool_min: int
    pool_max: int
    ttl_default_s: float
    ttl_max_s: float
    ready: int
    """Warm cells waiting in the pool now."""


@dataclass(frozen=True)
class SandboxInfo:
    id: str
    tenant: str
    template: str
    state: SandboxState
    cell: str
    """The container name, ``agentcell_<tenant>_<sandbox id>``."""
    warm: bool
    created_at: float
    expires_at: float
    acquire_ms: float


@dataclass(frozen=True)
class CommandRequest:
    argv: Sequence[str] | None
    shell: str | None
    cwd: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    stdin: bytes | None = None
    timeout_s: float = 60.0
    background: bool = False
    max_output_bytes: int = 10 * 1024 * 1024


@dataclass(frozen=True)
class CommandEnd:
    exit_code: int | None
    timed_out: bool
    killed: bool
    reason: EndReason


@dataclass(frozen=True)
class Frame:
    """One frame of a command's output; ``seq`` counts from 0, consecutive per command."""

    seq: int
    type: FrameType
    data: bytes = b""
    """stdout/stderr bytes (base64 on the wire)."""
    stream: str | None = None
    """For ``truncated``: which stream hit the limit."""
    limit: int | None = None
    pid: int | None = None
    """For ``start``: the host pid of the command (its process group leader)."""
    command: str | None = None
    """For ``start``: the command id."""
    end: CommandEnd | None = None
    """For ``end``."""


@dataclass(frozen=True)
class CommandInfo:
    id: str
    sandbox: str
    argv: tuple[str, ...]
    state: Literal["running", "ended"]
    started_at: float
    ended_at: float | None
    last_seq: int
    end: CommandEnd | None


@dataclass(frozen=True)
class FileEntry:
    name: str
    path: str
    kind: Literal["file", "dir", "symlink", "other"]
    size: int
    mode: int
    mtime: float


class SandboxEngine(Protocol):
    """The sandbox engine as the HTTP layer sees it. ``tenant`` is the caller's tenant, or
    ``None`` for the admin token (any tenant)."""

    async def start(self) -> None:
        """Reconcile the store with the engine (adopt live sandboxes, remove orphans), then
        start the pools' refill and the TTL reaper."""
        ...

    async def close(self) -> None:
        """Stop background work; live sandboxes keep running (they survive a restart)."""
        ...

    def templates(self, tenant: str | None) -> list[TemplateInfo]: ...

    async def create(
        self, tenant: str | None, template: str, *, timeout_s: float | None, as_tenant: str | None
    ) -> SandboxInfo:
        """A never-used sandbox: from the pool when it has one, else a cold start.

        ``as_tenant`` is the admin token's choice of tenant (refused for a tenant token).
        """
        ...

    def sandbox(self, tenant: str | None, sandbox_id: str) -> SandboxInfo: ...

    def sandboxes(self, tenant: str | None) -> list[SandboxInfo]: ...

    async def kill(self, tenant: str | None, sandbox_id: str) -> None: ...

    async def set_timeout(
        self, tenant: str | None, sandbox_id: str, timeout_s: float
    ) -> SandboxInfo: ...

    async def run(
        self, tenant: str | None, sandbox_id: str, request: CommandRequest
    ) -> CommandInfo:
        """Start a command; its frames are then read with :meth:`frames`."""
        ...

    def command(self, tenant: str | None, sandbox_id: str, command_id: str) -> CommandInfo: ...

    def commands(self, tenant: str | None, sandbox_id: str) -> list[CommandInfo]: ...

    async def wait(
        self, tenant: str | None, sandbox_id: str, command_id: str, timeout_s: float
    ) -> CommandInfo: ...

    def frames(
        self, tenant: str | None, sandbox_id: str, command_id: str, *, after: int
    ) -> AsyncIterator[Frame]:
        """Frames with ``seq > after``, live until the end frame (always the last)."""
        ...

    async def kill_command(
        self, tenant: str | None, sandbox_id: str, command_id: str
    ) -> CommandInfo: ...

    async def write_file(
        self, tenant: str | None, sandbox_id: str, path: str, chunks: AsyncIterator[bytes]
    ) -> int:
        """Stream ``chunks`` into ``path`` (inside a tmpfs of the cell); the size written."""
        ...

    def read_file(self, tenant: str | None, sandbox_id: str, path: str) -> AsyncIterator[bytes]: ...

    async def list_files(
        self, tenant: str | None, sandbox_id: str, path: str
    ) -> list[FileEntry]: ...

    async def remove_file(self, tenant: str | None, sandbox_id: str, path: str) -> None: ...
