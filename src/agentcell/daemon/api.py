"""The bodies of the host service's API (docs/sandbox-api.md), as pydantic models.

Requests are strict (unknown fields refused, 422); answers are built from the engine's
values (:mod:`agentcell.daemon.contract`) by the ``of`` constructors, so the wire shape is
written once. Command output frames are NDJSON lines made by :func:`frame_line`.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from agentcell.daemon.contract import (
    CommandInfo,
    CommandRequest,
    FileEntry,
    Frame,
    SandboxInfo,
    TemplateInfo,
)

__all__ = [
    "CellItem",
    "CellList",
    "CommandBody",
    "CommandList",
    "CommandRequestBody",
    "CreateSandboxRequest",
    "DownRequest",
    "DownResult",
    "ErrorBody",
    "FileEntryBody",
    "FileList",
    "FileWritten",
    "Health",
    "SandboxBody",
    "SandboxList",
    "SpecFile",
    "TemplateBody",
    "TemplateList",
    "TimeoutRequest",
    "UpItem",
    "UpRequest",
    "UpResult",
    "frame_line",
]

MAX_TIMEOUT_S = 30 * 24 * 3600.0
MAX_COMMAND_OUTPUT = 1024 * 1024 * 1024
MAX_SPEC_FILES = 64
MAX_SPEC_TEXT = 1024 * 1024


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Answer(BaseModel):
    model_config = ConfigDict(frozen=True)


def _finite_seconds(value: float | None) -> float | None:
    if value is not None and (not math.isfinite(value) or value <= 0 or value > MAX_TIMEOUT_S):
        raise ValueError(f"must be a number of seconds above 0 and at most {MAX_TIMEOUT_S:g}")
    return value


class ErrorBody(_Answer):
    """Every error answer."""

    error: str = Field(description="What went wrong, for a person.")
    reason: str = Field(description="A stable snake_case tag for programs.")
    fix: str | None = Field(default=None, description="What to do about it.")


class Health(_Answer):
    ok: bool = True


class TemplateBody(_Answer):
    name: str
    tenant: str
    image: str
    runtime: str
    network: str
    pool_min: int
    pool_max: int
    ttl_default_s: float
    ttl_max_s: float
    ready: int = Field(description="Warm cells waiting in the pool now.")

    @classmethod
    def of(cls, info: TemplateInfo) -> TemplateBody:
        return cls(
            name=info.name,
            tenant=info.tenant,
            image=info.image,
            runtime=info.runtime,
            network=info.network,
            pool_min=info.pool_min,
            pool_max=info.pool_max,
            ttl_default_s=info.ttl_default_s,
            ttl_max_s=info.ttl_max_s,
            ready=info.ready,
        )


class TemplateList(_Answer):
    items: list[TemplateBody]


class CreateSandboxRequest(_Request):
    template: str = Field(min_length=1, max_length=128, description="The template's name.")
    timeout_s: float | None = Field(
        default=None, description="The TTL from now; the template's default when absent."
    )
    tenant: str | None = Field(
        default=None,
        max_length=64,
        description="The sandbox's tenant (admin token only; a tenant token's is its own).",
    )

    _timeout = field_validator("timeout_s")(_finite_seconds)


class SandboxBody(_Answer):
    id: str
    tenant: str
    template: str
    state: Literal["running", "expired", "killed", "dead"]
    cell: str = Field(description="The container's name.")
    warm: bool = Field(description="True when the cell came from the warm pool.")
    created_at: float
    expires_at: float
    acquire_ms: float

    @classmethod
    def of(cls, info: SandboxInfo) -> SandboxBody:
        return cls(
            id=info.id,
            tenant=info.tenant,
            template=info.template,
            state=info.state,
            cell=info.cell,
            warm=info.warm,
            created_at=info.created_at,
            expires_at=info.expires_at,
            acquire_ms=info.acquire_ms,
        )


class SandboxList(_Answer):
    items: list[SandboxBody]


class TimeoutRequest(_Request):
    timeout_s: float = Field(description="The new TTL, counted from now.")

    _timeout = field_validator("timeout_s")(_finite_seconds)


class CommandRequestBody(_Request):
    argv: list[str] | None = Field(default=None, min_length=1, max_length=4096)
    shell: str | None = Field(default=None, min_length=1, max_length=1024 * 1024)
    cwd: str | None = Field(default=None, max_length=4096)
    env: dict[str, str] = Field(default_factory=dict)
    stdin: str | None = Field(default=None, description="Base64 of the bytes fed to stdin.")
    timeout_s: float = 60.0
    background: bool = False
    max_output_bytes: int = Field(default=10 * 1024 * 1024, ge=0, le=MAX_COMMAND_OUTPUT)

    _timeout = field_validator("timeout_s")(_finite_seconds)

    @model_validator(mode="after")
    def _one_of_argv_and_shell(self) -> Self:
        if (self.argv is None) == (self.shell is None):
            raise ValueError("give exactly one of argv and shell")
        return self

    @field_validator("stdin")
    @classmethod
    def _base64(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise ValueError("stdin must be base64") from exc
        return value

    def request(self) -> CommandRequest:
        """What the engine is asked to run."""
        return CommandRequest(
            argv=tuple(self.argv) if self.argv is not None else None,
            shell=self.shell,
            cwd=self.cwd,
            env=dict(self.env),
            stdin=base64.b64decode(self.stdin) if self.stdin is not None else None,
            timeout_s=self.timeout_s,
            background=self.background,
            max_output_bytes=self.max_output_bytes,
        )


class CommandBody(_Answer):
    id: str
    sandbox: str
    argv: list[str]
    state: Literal["running", "ended"]
    exit_code: int | None
    timed_out: bool
    killed: bool
    reason: str | None
    started_at: float
    ended_at: float | None
    last_seq: int

    @classmethod
    def of(cls, info: CommandInfo) -> CommandBody:
        end = info.end
        return cls(
            id=info.id,
            sandbox=info.sandbox,
            argv=list(info.argv),
            state=info.state,
            exit_code=end.exit_code if end else None,
            timed_out=end.timed_out if end else False,
            killed=end.killed if end else False,
            reason=end.reason if end else None,
            started_at=info.started_at,
            ended_at=info.ended_at,
            last_seq=info.last_seq,
        )


class CommandList(_Answer):
    items: list[CommandBody]


class FileWritten(_Answer):
    path: str
    size: int


class FileEntryBody(_Answer):
    name: str
    path: str
    kind: Literal["file", "dir", "symlink", "other"]
    size: int
    mode: int
    mtime: float

    @classmethod
    def of(cls, entry: FileEntry) -> FileEntryBody:
        return cls(
            name=entry.name,
            path=entry.path,
            kind=entry.kind,
            size=entry.size,
            mode=entry.mode,
            mtime=entry.mtime,
        )


class FileList(_Answer):
    items: list[FileEntryBody]


class SpecFile(_Request):
    name: str = Field(min_length=1, max_length=255, description="The file's name, for errors.")
    text: str = Field(max_length=MAX_SPEC_TEXT)


class UpRequest(_Request):
    files: list[SpecFile] = Field(min_length=1, max_length=MAX_SPEC_FILES)
    policy: str = Field(default="restricted", max_length=64)


class UpItem(_Answer):
    action: str
    tenant: str
    agent: str
    container: str
    runtime: str
    image: str
    image_requested: str
    image_trust: str
    warnings: list[str]


class UpResult(_Answer):
    items: list[UpItem]
    warnings: list[str] = Field(description="What `agentcell up` would print on stderr.")


class DownRequest(_Request):
    tenant: str = Field(min_length=1, max_length=64)
    name: str = Field(min_length=1, max_length=128)
    timeout_s: int = Field(default=10, ge=0, le=3600)


class DownResult(_Answer):
    tenant: str
    agent: str
    removed: bool


class CellItem(_Answer):
    """One cell as ``agentcell ps -o json`` shows it."""

    model_config = ConfigDict(frozen=True, extra="allow")

    tenant: str
    agent: str
    container: str
    state: str
    runtime: str


class CellList(_Answer):
    items: list[CellItem]


def frame_line(frame: Frame) -> bytes:
    """One NDJSON line (with its newline) of a command's output frame."""
    body: dict[str, Any] = {"seq": frame.seq, "type": frame.type}
    if frame.type == "start":
        body["command"] = frame.command
        body["pid"] = frame.pid
    elif frame.type in ("stdout", "stderr"):
        body["data"] = base64.b64encode(frame.data).decode("ascii")
    elif frame.type == "truncated":
        body["stream"] = frame.stream
        body["limit"] = frame.limit
    elif frame.type == "end" and frame.end is not None:
        body["exit_code"] = frame.end.exit_code
        body["timed_out"] = frame.end.timed_out
        body["killed"] = frame.end.killed
        body["reason"] = frame.end.reason
    return json.dumps(body, separators=(",", ":")).encode() + b"\n"
