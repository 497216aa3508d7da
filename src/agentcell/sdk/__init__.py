"""The Python client of agentcell's host service (``agentcell daemon serve``).

::

    from agentcell.sdk import Sandbox

    with Sandbox.create("python", timeout=120) as sbx:
        result = sbx.commands.run("python3 -c 'print(6 * 7)'")
        sbx.files.write("/workspace/data.csv", open("data.csv", "rb"))

:class:`Sandbox` speaks HTTP with the standard library alone; :class:`AsyncSandbox` is the
same API for asyncio, over aiohttp; each is imported when it is first used. Importing this
package loads neither pydantic, docker, typer, rich, cryptography nor aiohttp (a unit test
holds it to that). Every error is an :class:`agentcell.errors.Error`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from agentcell.sdk._discovery import DaemonAddress, daemon_dir, discover, running_daemon
from agentcell.sdk._errors import (
    AuthenticationFailed,
    CellUnverified,
    CommandNotFound,
    CommandTimeout,
    DaemonUnavailable,
    FileRefused,
    InvalidRequest,
    PoolExhausted,
    QuotaExceeded,
    SandboxConflict,
    SandboxError,
    SandboxNotFound,
    TemplateNotFound,
    TimeoutRefused,
)

if TYPE_CHECKING:
    from agentcell.sdk._async import AsyncCommandHandle, AsyncSandbox
    from agentcell.sdk._models import CommandInfo, CommandResult, FileEntry, SandboxInfo
    from agentcell.sdk._sync import CommandHandle, Commands, Files, Sandbox

# Loaded on first use: the command line's thin path needs the transport alone.
_LAZY = {
    "AsyncSandbox": "_async",
    "AsyncCommandHandle": "_async",
    "CommandInfo": "_models",
    "CommandResult": "_models",
    "FileEntry": "_models",
    "SandboxInfo": "_models",
    "CommandHandle": "_sync",
    "Commands": "_sync",
    "Files": "_sync",
    "Sandbox": "_sync",
}

__all__ = [
    "AsyncCommandHandle",
    "AsyncSandbox",
    "AuthenticationFailed",
    "CellUnverified",
    "CommandHandle",
    "CommandInfo",
    "CommandNotFound",
    "CommandResult",
    "CommandTimeout",
    "Commands",
    "DaemonAddress",
    "DaemonUnavailable",
    "FileEntry",
    "FileRefused",
    "Files",
    "InvalidRequest",
    "PoolExhausted",
    "QuotaExceeded",
    "Sandbox",
    "SandboxConflict",
    "SandboxError",
    "SandboxInfo",
    "SandboxNotFound",
    "TemplateNotFound",
    "TimeoutRefused",
    "daemon_dir",
    "discover",
    "running_daemon",
]


def __getattr__(name: str) -> object:
    # The asyncio client pulls in aiohttp, the sync one the models: each on first use.
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
