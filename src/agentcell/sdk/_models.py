"""What the service answers, as frozen values, read from its JSON by hand (no pydantic: the
SDK stays light to import). A document that lacks a field or has the wrong type is a
:class:`SandboxError`, never a half-filled value."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, cast

from agentcell.sdk._errors import SandboxError

__all__ = [
    "CommandInfo",
    "CommandResult",
    "EndReason",
    "FileEntry",
    "SandboxInfo",
    "SandboxState",
]

SandboxState = Literal["running", "expired", "killed", "dead"]
EndReason = Literal[
    "exited", "timeout", "killed", "sandbox_expired", "sandbox_killed", "sandbox_died"
]
T = TypeVar("T")


def _field(document: Mapping[str, Any], key: str, kind: type[T] | tuple[type, ...], what: str) -> T:
    value = document.get(key)
    # JSON numbers: an int is a float where a float is asked for; a bool is never a number.
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind in (int, float)):
        raise SandboxError(f"the host service sent a {what} whose {key!r} is {value!r}")
    return cast("T", value)


def _optional(document: Mapping[str, Any], key: str, kind: type[T], what: str) -> T | None:
    return None if document.get(key) is None else _field(document, key, kind, what)


def _mapping(document: object, what: str) -> Mapping[str, Any]:
    if not isinstance(document, dict):
        raise SandboxError(f"the host service sent {document!r} where a {what} belongs")
    return document


@dataclass(frozen=True, kw_only=True)
class SandboxInfo:
    """A sandbox as the service describes it (times are UNIX seconds)."""

    id: str
    tenant: str
    template: str
    state: SandboxState
    cell: str
    """The container's name, ``agentcell_<tenant>_<sandbox id>``."""
    warm: bool
    """True when the cell came from the warm pool, False for a cold start."""
    created_at: float
    expires_at: float
    acquire_ms: float

    @classmethod
    def from_json(cls, document: object) -> SandboxInfo:
        doc = _mapping(document, "sandbox")
        state = _field(doc, "state", str, "sandbox")
        if state not in ("running", "expired", "killed", "dead"):
            raise SandboxError(f"the host service sent a sandbox in state {state!r}")
        return cls(
            id=_field(doc, "id", str, "sandbox"),
            tenant=_field(doc, "tenant", str, "sandbox"),
            template=_field(doc, "template", str, "sandbox"),
            state=cast("SandboxState", state),
            cell=_field(doc, "cell", str, "sandbox"),
            warm=_field(doc, "warm", bool, "sandbox"),
            created_at=_field(doc, "created_at", float, "sandbox"),
            expires_at=_field(doc, "expires_at", float, "sandbox"),
            acquire_ms=_field(doc, "acquire_ms", float, "sandbox"),
        )


@dataclass(frozen=True, kw_only=True)
class CommandInfo:
    """A command as the service describes it (``GET .../commands/{id}``)."""

    id: str
    sandbox: str
    argv: tuple[str, ...]
    state: Literal["running", "ended"]
    exit_code: int | None
    timed_out: bool
    killed: bool
    reason: EndReason | None
    started_at: float
    ended_at: float | None
    last_seq: int

    @classmethod
    def from_json(cls, document: object) -> CommandInfo:
        doc = _mapping(document, "command")
        state = _field(doc, "state", str, "command")
        if state not in ("running", "ended"):
            raise SandboxError(f"the host service sent a command in state {state!r}")
        argv = _field(doc, "argv", list, "command")
        return cls(
            id=_field(doc, "id", str, "command"),
            sandbox=_field(doc, "sandbox", str, "command"),
            argv=tuple(str(arg) for arg in argv),
            state=cast("Literal['running', 'ended']", state),
            exit_code=_optional(doc, "exit_code", int, "command"),
            timed_out=bool(doc.get("timed_out", False)),
            killed=bool(doc.get("killed", False)),
            reason=cast("EndReason | None", _optional(doc, "reason", str, "command")),
            started_at=_field(doc, "started_at", float, "command"),
            ended_at=_optional(doc, "ended_at", float, "command"),
            last_seq=_field(doc, "last_seq", int, "command"),
        )


@dataclass(frozen=True, kw_only=True)
class CommandResult:
    """How a command ended, and everything it wrote (decoded as UTF-8, bad bytes replaced)."""

    exit_code: int | None
    """None when the command was killed or timed out before it could exit."""
    stdout: str
    stderr: str
    timed_out: bool
    """The server's timeout ended it (its whole process group was killed)."""
    killed: bool
    reason: EndReason
    truncated: bool
    """Output went over the command's limit; the service kept only the first part."""
    command_id: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


@dataclass(frozen=True, kw_only=True)
class FileEntry:
    """One entry of a directory in the cell."""

    name: str
    path: str
    kind: Literal["file", "dir", "symlink", "other"]
    size: int
    mode: int
    mtime: float

    @classmethod
    def from_json(cls, document: object) -> FileEntry:
        doc = _mapping(document, "file entry")
        kind = _field(doc, "kind", str, "file entry")
        if kind not in ("file", "dir", "symlink", "other"):
            raise SandboxError(f"the host service sent a file entry of kind {kind!r}")
        return cls(
            name=_field(doc, "name", str, "file entry"),
            path=_field(doc, "path", str, "file entry"),
            kind=cast("Literal['file', 'dir', 'symlink', 'other']", kind),
            size=_field(doc, "size", int, "file entry"),
            mode=_field(doc, "mode", int, "file entry"),
            mtime=_field(doc, "mtime", float, "file entry"),
        )


def items(document: object, what: str) -> list[object]:
    """The ``items`` of a list answer."""
    listed = _mapping(document, f"list of {what}").get("items")
    if not isinstance(listed, list):
        raise SandboxError(f"the host service sent a list of {what} without items")
    return listed
