"""A command's output frames, and the bookkeeping that lets a dropped stream resume.

The service numbers a command's frames from 0, consecutively, and keeps them until the
sandbox ends; ``GET .../output?after=N`` sends those after N. :class:`OutputCollector` takes
frames from any number of connections in turn: a frame it already has (a resumed stream that
repeats one) is dropped, a gap is an error (frames would be lost), and after the end frame
nothing more is accepted. Pure: the transports feed it lines.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

from agentcell.sdk._errors import SandboxError
from agentcell.sdk._models import CommandResult, EndReason

__all__ = ["OutputCallback", "OutputCollector"]

OutputCallback = Callable[[str], object]
_END_REASONS = ("exited", "timeout", "killed", "sandbox_expired", "sandbox_killed", "sandbox_died")


@dataclass
class _Stream:
    callback: OutputCallback | None
    decoder: codecs.IncrementalDecoder = field(
        default_factory=lambda: codecs.getincrementaldecoder("utf-8")("replace")
    )
    parts: list[str] = field(default_factory=list)

    def feed(self, data: bytes, *, final: bool = False) -> None:
        text = self.decoder.decode(data, final=final)
        if text:
            self.parts.append(text)
            if self.callback is not None:
                self.callback(text)


class OutputCollector:
    """Collects one command's frames into a :class:`CommandResult`, exactly once each."""

    def __init__(
        self,
        *,
        on_stdout: OutputCallback | None = None,
        on_stderr: OutputCallback | None = None,
        command_id: str | None = None,
        after: int = -1,
    ) -> None:
        self.command_id = command_id
        self.last_seq = after
        """The last frame taken: the ``after`` to resume from."""
        self.truncated = False
        self.result: CommandResult | None = None
        self._streams = {"stdout": _Stream(on_stdout), "stderr": _Stream(on_stderr)}

    @property
    def ended(self) -> bool:
        return self.result is not None

    def feed_line(self, line: bytes) -> None:
        """Take one NDJSON line (a complete line; a partial one must not be fed).

        Raises:
            SandboxError: the line is not a frame, or a frame is missing before it.
        """
        if not line.strip():
            return
        try:
            frame = json.loads(line)
        except ValueError as exc:
            raise SandboxError(f"the host service sent a line that is not JSON: {exc}") from exc
        if not isinstance(frame, dict) or not isinstance(frame.get("seq"), int):
            raise SandboxError(f"the host service sent a frame without a sequence number: {line!r}")
        self.feed(frame)

    def feed(self, frame: dict[str, object]) -> None:
        """Take one decoded frame (see :meth:`feed_line`)."""
        seq = cast("int", frame["seq"])
        if seq <= self.last_seq:
            return  # a resumed stream repeating what was already taken
        if self.ended:
            raise SandboxError(f"the host service sent frame {seq} after the end frame")
        if seq != self.last_seq + 1:
            raise SandboxError(
                f"frames {self.last_seq + 1}..{seq - 1} of command {self.command_id} are "
                "missing from the stream",
                fix="the host service must keep every frame; report this as a bug",
            )
        kind = frame.get("type")
        if kind == "start":
            command = frame.get("command")
            if isinstance(command, str):
                self.command_id = command
        elif kind in ("stdout", "stderr"):
            self._streams[kind].feed(_decoded(frame.get("data")))
        elif kind == "truncated":
            self.truncated = True
        elif kind == "end":
            self._end(frame)
        else:
            raise SandboxError(f"the host service sent a frame of unknown type {kind!r}")
        self.last_seq = seq

    def _end(self, frame: dict[str, object]) -> None:
        reason = frame.get("reason")
        exit_code = frame.get("exit_code")
        if reason not in _END_REASONS:
            raise SandboxError(f"the host service ended a command for reason {reason!r}")
        if exit_code is not None and not isinstance(exit_code, int):
            raise SandboxError(f"the host service sent exit code {exit_code!r}")
        for stream in self._streams.values():
            stream.feed(b"", final=True)
        self.result = CommandResult(
            exit_code=exit_code,
            stdout="".join(self._streams["stdout"].parts),
            stderr="".join(self._streams["stderr"].parts),
            timed_out=bool(frame.get("timed_out", False)),
            killed=bool(frame.get("killed", False)),
            reason=cast("EndReason", reason),
            truncated=self.truncated,
            command_id=self.command_id or "",
        )


def _decoded(data: object) -> bytes:
    if not isinstance(data, str):
        raise SandboxError("the host service sent an output frame without data")
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SandboxError(f"the host service sent output that is not base64: {exc}") from exc
