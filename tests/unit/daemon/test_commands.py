"""A command's frames: consecutive from 0, the output limit with one truncation marker, the
end always last, and resumption after any frame without loss or duplicates."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

from agentcell.daemon.commands import Command, CommandLog, OutputMeter, Stream, drive
from agentcell.daemon.contract import CommandEnd, CommandRequest, Frame
from agentcell.daemon.sandboxes import _argv
from agentcell.errors import InvalidInput


class ScriptedProcess:
    """A process that writes given chunks, then exits; or, with ``hang``, writes them and
    runs until killed (as a real process would, its output ends when it is killed)."""

    def __init__(self, chunks: list[tuple[Stream, bytes]], *, code: int = 0, hang: bool = False):
        self.chunks = chunks
        self.code = code
        self.killed = threading.Event()
        if not hang:
            self.killed.set()
        self.kills = 0

    @property
    def pid(self) -> int:
        return 4242

    def output(self) -> Iterator[tuple[Stream, bytes]]:
        yield from self.chunks
        self.killed.wait(30)

    def wait(self, timeout_s: float) -> int | None:
        return -9 if self.kills else self.code

    def kill(self) -> None:
        self.kills += 1
        self.killed.set()


def command() -> Command:
    return Command(
        id="cmd-1", sandbox="sbx-1", argv=("x",), started_at=0.0, log=CommandLog("cmd-1")
    )


async def collect(log: CommandLog, after: int = -1) -> list[Frame]:
    return [frame async for frame in log.frames(after=after)]


def test_meter_cuts_at_the_limit_across_both_streams() -> None:
    meter = OutputMeter(10)
    assert meter.take("stdout", b"123456") == (b"123456", False)
    assert meter.take("stderr", b"abcdef") == (b"abcd", True)
    assert meter.take("stdout", b"more") == (b"", False)
    assert meter.truncated == "stderr"


def test_frames_are_consecutive_and_end_last() -> None:
    async def scenario() -> list[Frame]:
        cmd = command()
        process = ScriptedProcess([("stdout", b"a"), ("stderr", b"b"), ("stdout", b"c")], code=3)
        await drive(cmd, process, timeout_s=5, limit=100)
        return await collect(cmd.log)

    frames = asyncio.run(scenario())
    assert [frame.seq for frame in frames] == list(range(len(frames)))
    assert [frame.type for frame in frames] == ["start", "stdout", "stderr", "stdout", "end"]
    assert frames[0].pid == 4242 and frames[0].command == "cmd-1"
    assert frames[-1].end == CommandEnd(exit_code=3, timed_out=False, killed=False, reason="exited")


def test_output_over_the_limit_is_marked_once_and_the_command_runs_on() -> None:
    async def scenario() -> list[Frame]:
        cmd = command()
        chunks: list[tuple[Stream, bytes]] = [("stdout", b"x" * 6)] * 5
        await drive(cmd, ScriptedProcess(chunks), timeout_s=5, limit=16)
        return await collect(cmd.log)

    frames = asyncio.run(scenario())
    kept = b"".join(frame.data for frame in frames if frame.type == "stdout")
    assert kept == b"x" * 16
    marks = [frame for frame in frames if frame.type == "truncated"]
    assert len(marks) == 1 and marks[0].stream == "stdout" and marks[0].limit == 16
    assert frames[-1].type == "end" and frames[-1].end is not None
    assert frames[-1].end.reason == "exited"


def test_resume_after_any_frame_gives_exactly_the_rest() -> None:
    async def scenario() -> tuple[list[Frame], dict[int, list[Frame]]]:
        cmd = command()
        chunks: list[tuple[Stream, bytes]] = [("stdout", bytes([65 + i])) for i in range(8)]
        await drive(cmd, ScriptedProcess(chunks), timeout_s=5, limit=100)
        whole = await collect(cmd.log)
        return whole, {n: await collect(cmd.log, after=n) for n in range(-1, len(whole))}

    whole, resumed = asyncio.run(scenario())
    for after, frames in resumed.items():
        assert frames == whole[after + 1 :]


def test_a_live_reader_sees_every_frame_in_order() -> None:
    async def scenario() -> list[Frame]:
        cmd = command()
        reader = asyncio.ensure_future(collect(cmd.log))
        await asyncio.sleep(0)
        chunks: list[tuple[Stream, bytes]] = [("stdout", b"%d\n" % i) for i in range(200)]
        await drive(cmd, ScriptedProcess(chunks), timeout_s=5, limit=10_000)
        return await reader

    frames = asyncio.run(scenario())
    assert b"".join(f.data for f in frames) == b"".join(b"%d\n" % i for i in range(200))
    assert [frame.seq for frame in frames] == list(range(len(frames)))


def test_a_timeout_kills_the_process_tree_and_says_so() -> None:
    async def scenario() -> tuple[list[Frame], ScriptedProcess]:
        cmd = command()
        process = ScriptedProcess([("stdout", b"started\n")], hang=True)
        await drive(cmd, process, timeout_s=0.2, limit=100)
        return await collect(cmd.log), process

    frames, process = asyncio.run(scenario())
    assert process.kills == 1
    end = frames[-1].end
    assert end is not None and end.timed_out and end.reason == "timeout" and not end.killed


def test_the_first_end_wins_and_nothing_follows_it() -> None:
    async def scenario() -> list[Frame]:
        cmd = command()
        process = ScriptedProcess([("stdout", b"x")], hang=True)
        running = asyncio.ensure_future(drive(cmd, process, timeout_s=30, limit=100))
        await asyncio.sleep(0.05)
        cmd.finish(
            CommandEnd(exit_code=None, timed_out=False, killed=False, reason="sandbox_expired")
        )
        process.kill()
        await running
        return await collect(cmd.log)

    frames = asyncio.run(scenario())
    assert frames[-1].end is not None and frames[-1].end.reason == "sandbox_expired"
    assert sum(frame.type == "end" for frame in frames) == 1


def test_wait_end_returns_none_while_running() -> None:
    async def scenario() -> CommandEnd | None:
        return await CommandLog("c").wait_end(0.05)

    assert asyncio.run(scenario()) is None


@pytest.mark.parametrize(
    ("argv", "shell", "timeout_s", "limit", "words"),
    [
        (None, None, 60.0, 1024, "exactly one of argv and shell"),
        (["true"], "true", 60.0, 1024, "exactly one of argv and shell"),
        ([], None, 60.0, 1024, "argv is empty"),
        (["true"], None, 0.0, 1024, "timeout_s 0 is out of range"),
        (["true"], None, 60.0, 0, "max_output_bytes 0 is out of range"),
    ],
)
def test_bad_command_requests_are_refused(
    argv: list[str] | None, shell: str | None, timeout_s: float, limit: int, words: str
) -> None:
    request = CommandRequest(argv=argv, shell=shell, timeout_s=timeout_s, max_output_bytes=limit)
    with pytest.raises(InvalidInput, match=words):
        _argv(request)


def test_a_shell_command_runs_under_bin_sh() -> None:
    assert _argv(CommandRequest(argv=None, shell="echo hi | wc -c")) == [
        "/bin/sh",
        "-c",
        "echo hi | wc -c",
    ]
