"""Sandbox records that outlive the service: one JSON file per sandbox.

A record is written when a sandbox is handed out and again when it ends; at start-up the
service reconciles the records with the cells on the engine. Each write goes to a temporary
file in the same directory and is renamed over the old one, so a crash leaves the old record
or the new one, never half of either. Warm cells nobody holds have no record: their labels
say what they are.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Protocol

from agentcell.daemon.contract import SandboxInfo, SandboxState
from agentcell.errors import HostError

__all__ = ["JsonSandboxRecords", "SandboxRecord", "SandboxRecords", "is_sandbox_id"]

_SANDBOX_ID = re.compile(r"^sbx-[0-9a-f]{16}$")


def is_sandbox_id(text: str) -> bool:
    """Whether ``text`` has the form of a sandbox id, ``sbx-<16 hex>``."""
    return bool(_SANDBOX_ID.match(text))


@dataclass(frozen=True, kw_only=True)
class SandboxRecord:
    """What the service must remember of a sandbox across a restart."""

    id: str
    tenant: str
    template: str
    state: SandboxState
    cell: str
    warm: bool
    created_at: float
    expires_at: float
    acquire_ms: float
    ended_at: float | None = None

    def info(self) -> SandboxInfo:
        """What the API shows of it."""
        return SandboxInfo(
            id=self.id,
            tenant=self.tenant,
            template=self.template,
            state=self.state,
            cell=self.cell,
            warm=self.warm,
            created_at=self.created_at,
            expires_at=self.expires_at,
            acquire_ms=self.acquire_ms,
        )

    def ended(self, state: SandboxState, at: float) -> SandboxRecord:
        """The record of the sandbox once it ended."""
        return replace(self, state=state, ended_at=at)


class SandboxRecords(Protocol):
    """Where sandbox records are kept (blocking calls: the manager runs them on threads)."""

    def save(self, record: SandboxRecord) -> None: ...

    def load(self) -> list[SandboxRecord]: ...

    def delete(self, sandbox_id: str) -> None: ...


class JsonSandboxRecords:
    """Records as ``<directory>/<sandbox id>.json`` (0600, directory 0700)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def save(self, record: SandboxRecord) -> None:
        """Write ``record`` atomically.

        Raises:
            HostError: the directory cannot be written.
        """
        self._ensure()
        path = self.directory / f"{record.id}.json"
        temporary = path.with_suffix(".tmp")
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(asdict(record), handle)
            os.replace(temporary, path)
        except OSError as exc:
            raise HostError(
                f"cannot write sandbox record {path}: {exc.strerror}",
                fix="check the daemon's state directory is writable",
            ) from exc

    def load(self) -> list[SandboxRecord]:
        """Every readable record; unreadable ones are skipped (and left for a person)."""
        if not self.directory.is_dir():
            return []
        records = []
        for path in sorted(self.directory.glob("sbx-*.json")):
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                record = SandboxRecord(**data)
            except (OSError, ValueError, TypeError):
                continue
            if is_sandbox_id(record.id) and path.stem == record.id:
                records.append(record)
        return records

    def delete(self, sandbox_id: str) -> None:
        """Forget one sandbox."""
        if is_sandbox_id(sandbox_id):
            with contextlib.suppress(FileNotFoundError):
                (self.directory / f"{sandbox_id}.json").unlink()

    def _ensure(self) -> None:
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise HostError(
                f"cannot make the sandbox records directory {self.directory}: {exc.strerror}",
                fix="check the daemon's state directory is writable",
            ) from exc
