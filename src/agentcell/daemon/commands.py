"""A command's bookkeeping: sequenced frames kept for resumption, the output limit, the
end.

Frames are numbered from 0 without gaps: ``start``, then ``stdout``/``stderr`` as produced,
at most one ``truncated`` (the output limit counts both streams; output past it is
discarded while the command keeps running), and ``end``, always last. They stay in memory
(bounded by the output limit) until the sandbox ends, so :meth:`CommandLog.frames` with
``after=N`` resumes exactly after frame N, live until the end frame.

The process is read on a thread of its own (the runtime's calls block); :class:`OutputMeter`
runs on that thread and decides what is kept, so output past the limit never reaches the
event loop. Everything else here runs on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from agentcell.daemon.contract import CommandEnd, CommandInfo, EndReason, Frame
from agentcell.errors import Error

__all__ = [
    "Command",
    "CommandLog",
    "OutputMeter",
    "RunningProcess",
    "drive",
    "new_command_id",
]

Stream = Literal["stdout", "stderr"]
KILL_GRACE_S = 10.0
"""How long the end of a killed command's output is waited for."""
EXIT_WAIT_S = 5.0
"""How long the exit code is waited for once the output ended (a command that closed its
output and runs on ends with none)."""


class RunningProcess(Protocol):
    """A process started in a cell (``runtime.docker.commands.RunningCommand`` is one)."""

    @property
    def pid(self) -> int: ...

    def output(self) -> Iterator[tuple[Stream, bytes]]:
        """Chunks as produced, until the process and its descendants close their output."""
        ...

    def wait(self, timeout_s: float) -> int | None:
        """The exit code, or None when it has not exited within ``timeout_s``."""
        ...

    def kill(self) -> object:
        """Kill the whole process tree."""
        ...


def new_command_id() -> str:
    """``cmd-<16 hex>``."""
    return f"cmd-{secrets.token_hex(8)}"


class OutputMeter:
    """What of a command's output is kept: the first ``limit`` bytes of both streams
    together; the chunk that crosses the limit is cut there."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.kept = 0
        self.truncated: Stream | None = None

    def take(self, stream: Stream, data: bytes) -> tuple[bytes, bool]:
        """(the part of ``data`` to keep, whether this chunk hit the limit)."""
        if self.truncated is not None:
            return b"", False
        room = self.limit - self.kept
        if len(data) <= room:
            self.kept += len(data)
            return data, False
        self.kept = self.limit
        self.truncated = stream
        return data[:room], True


class CommandLog:
    """The frames of one command, appended on the event loop, read by any number of readers."""

    def __init__(self, command_id: str) -> None:
        self.command_id = command_id
        self._frames: list[Frame] = []
        self._changed = asyncio.Event()
        self.end: CommandEnd | None = None

    @property
    def last_seq(self) -> int:
        """The sequence number of the last frame (-1 before the first)."""
        return len(self._frames) - 1

    def _append(self, frame: Frame) -> None:
        if self.end is not None:
            return  # nothing follows the end frame
        self._frames.append(frame)
        self._changed.set()
        self._changed = asyncio.Event()

    def started(self, pid: int) -> None:
        """The start frame (seq 0)."""
        self._append(Frame(seq=len(self._frames), type="start", pid=pid, command=self.command_id))

    def output(self, stream: Stream, data: bytes, *, truncated_at: int | None = None) -> None:
        """Output kept by the meter; ``truncated_at`` (the limit) adds the truncation marker."""
        if data:
            self._append(Frame(seq=len(self._frames), type=stream, data=data))
        if truncated_at is not None:
            self._append(
                Frame(seq=len(self._frames), type="truncated", stream=stream, limit=truncated_at)
            )

    def finish(self, end: CommandEnd) -> bool:
        """The end frame; False when the command had already ended (the first end wins)."""
        if self.end is not None:
            return False
        self._append(Frame(seq=len(self._frames), type="end", end=end))
        self.end = end
        return True

    def frames_after(self, after: int) -> Sequence[Frame]:
        """The frames kept so far with ``seq > after``."""
        return self._frames[max(after + 1, 0) :]

    async def frames(self, *, after: int) -> AsyncIterator[Frame]:
        """Frames with ``seq > after``, live until the end frame."""
        position = max(after + 1, 0)
        while True:
            changed = self._changed
            while position < len(self._frames):
                frame = self._frames[position]
                position += 1
                yield frame
                if frame.type == "end":
                    return
            if self.end is not None and position >= len(self._frames):
                return
            await changed.wait()

    async def wait_end(self, timeout_s: float) -> CommandEnd | None:
        """The end, waiting up to ``timeout_s`` for it."""
        deadline = time.monotonic() + timeout_s
        while self.end is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            changed = self._changed
            try:
                await asyncio.wait_for(changed.wait(), remaining)
            except TimeoutError:
                return None
        return self.end


@dataclass(eq=False, kw_only=True)
class Command:
    """One command of a sandbox: what was asked, its frames, and its process."""

    id: str
    sandbox: str
    argv: tuple[str, ...]
    started_at: float
    log: CommandLog
    process: RunningProcess | None = None
    ended_at: float | None = None
    kill_requested: bool = False
    sandbox_ending: EndReason | None = None
    """Set when its sandbox is ending: the sandbox's end writes the end frame (with this
    reason) once the cell is destroyed, whatever the process does meanwhile."""

    def info(self) -> CommandInfo:
        """What the API shows of it."""
        end = self.log.end
        return CommandInfo(
            id=self.id,
            sandbox=self.sandbox,
            argv=self.argv,
            state="running" if end is None else "ended",
            started_at=self.started_at,
            ended_at=self.ended_at,
            last_seq=self.log.last_seq,
            end=end,
        )

    def finish(self, end: CommandEnd) -> None:
        """End it (first end wins) and note when."""
        if self.log.finish(end):
            self.ended_at = time.time()

    def kill_process(self) -> None:
        """Kill its process tree from the host, on a thread (the call blocks)."""
        process = self.process
        if process is not None:
            threading.Thread(target=_quiet_kill, args=(process,), daemon=True).start()


def _quiet_kill(process: RunningProcess) -> None:
    # The process may be gone already; the end frame says what happened either way.
    with contextlib.suppress(Error, OSError):
        process.kill()


async def drive(command: Command, process: RunningProcess, *, timeout_s: float, limit: int) -> None:
    """Read ``process``'s output into ``command``'s frames until it exits, kill its process
    tree when it outlives ``timeout_s``, and write the end frame.

    The output is read on a thread of its own (the runtime's iterator blocks); frames reach
    the event loop through ``call_soon_threadsafe``, only within the output limit.
    """
    loop = asyncio.get_running_loop()
    log = command.log
    command.process = process
    log.started(process.pid)
    drained = asyncio.Event()
    meter = OutputMeter(limit)
    failure: list[str] = []

    def deliver(stream: Stream, data: bytes, hit: bool) -> None:
        log.output(stream, data, truncated_at=limit if hit else None)

    exited: list[int | None] = []

    def read() -> None:
        try:
            for stream, data in process.output():
                kept, hit = meter.take(stream, data)
                if kept or hit:
                    loop.call_soon_threadsafe(deliver, stream, kept, hit)
            # The exit code is due a moment after the output's end: ask for it here, on this
            # thread, rather than hand over to the event loop and back.
            exited.append(process.wait(EXIT_WAIT_S))
        except (Error, OSError) as exc:  # the stream broke: the end frame follows
            failure.append(str(exc))
        except RuntimeError:
            return  # the event loop is closed: the service stopped, nobody reads on
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(drained.set)

    threading.Thread(target=read, name=f"output {command.id}", daemon=True).start()
    timed_out = False
    try:
        await asyncio.wait_for(drained.wait(), timeout_s)
    except TimeoutError:
        timed_out = log.end is None
        command.kill_process()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(drained.wait(), KILL_GRACE_S)
    if log.end is not None:
        return  # the sandbox ended it (expired, killed, died)
    if command.sandbox_ending is not None:
        return  # the sandbox's end writes the end frame, once the cell is gone
    exit_code = exited[0] if exited else await asyncio.to_thread(process.wait, EXIT_WAIT_S)
    reason: EndReason
    if timed_out:
        reason = "timeout"
    elif command.kill_requested:
        reason = "killed"
    else:
        reason = "exited"
    command.finish(
        CommandEnd(
            exit_code=exit_code,
            timed_out=timed_out,
            killed=command.kill_requested and not timed_out,
            reason=reason,
        )
    )
