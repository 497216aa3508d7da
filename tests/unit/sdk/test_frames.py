"""A command's output across dropped and resumed streams: every frame taken once, in order,
and a gap is an error rather than silently lost output."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentcell.sdk import SandboxError
from agentcell.sdk._frames import OutputCollector


def frames_of(chunks: list[tuple[str, bytes]]) -> list[bytes]:
    lines = [{"seq": 0, "type": "start", "command": "cmd-1", "pid": 7}]
    for stream, data in chunks:
        lines.append(
            {"seq": len(lines), "type": stream, "data": base64.b64encode(data).decode("ascii")}
        )
    lines.append(
        {
            "seq": len(lines),
            "type": "end",
            "exit_code": 0,
            "timed_out": False,
            "killed": False,
            "reason": "exited",
        }
    )
    return [json.dumps(line).encode() + b"\n" for line in lines]


chunk_lists = st.lists(
    st.tuples(st.sampled_from(["stdout", "stderr"]), st.binary(min_size=1, max_size=40)),
    max_size=30,
)


@given(chunks=chunk_lists, cuts=st.lists(st.integers(min_value=0, max_value=40), max_size=8))
def test_resumed_streams_that_repeat_frames_give_the_output_exactly_once(
    chunks: list[tuple[str, bytes]], cuts: list[int]
) -> None:
    lines = frames_of(chunks)
    seen: list[str] = []
    collector = OutputCollector(on_stdout=seen.append)
    # Each connection is cut somewhere; the next one resumes after the last frame taken, and
    # (as a server may) starts a little earlier, repeating frames already taken.
    for cut in [*cuts, len(lines)]:
        start = max(0, collector.last_seq + 1 - 2)
        for line in lines[start : start + cut]:
            collector.feed_line(line)
        if collector.ended:
            break
    while not collector.ended:
        collector.feed_line(lines[collector.last_seq + 1])
    result = collector.result
    assert result is not None
    want_out = b"".join(d for s, d in chunks if s == "stdout").decode("utf-8", "replace")
    want_err = b"".join(d for s, d in chunks if s == "stderr").decode("utf-8", "replace")
    assert result.stdout == want_out
    assert result.stderr == want_err
    assert "".join(seen) == want_out
    assert result.command_id == "cmd-1"
    assert result.exit_code == 0


def test_a_character_split_across_frames_is_decoded_whole() -> None:
    snowman = "☃".encode()
    collector = OutputCollector()
    for line in frames_of([("stdout", snowman[:1]), ("stdout", snowman[1:])]):
        collector.feed_line(line)
    assert collector.result is not None
    assert collector.result.stdout == "☃"


def test_a_missing_frame_is_an_error_not_lost_output() -> None:
    lines = frames_of([("stdout", b"a"), ("stdout", b"b")])
    collector = OutputCollector()
    collector.feed_line(lines[0])
    with pytest.raises(SandboxError, match=r"frames 1\.\.1 .* missing"):
        collector.feed_line(lines[2])


def test_truncation_and_the_end_reason_reach_the_result() -> None:
    collector = OutputCollector(command_id="cmd-9")
    collector.feed({"seq": 0, "type": "truncated", "stream": "stdout", "limit": 10})
    collector.feed(
        {
            "seq": 1,
            "type": "end",
            "exit_code": None,
            "timed_out": True,
            "killed": False,
            "reason": "timeout",
        }
    )
    result = collector.result
    assert result is not None
    assert (result.truncated, result.timed_out, result.exit_code, result.reason) == (
        True,
        True,
        None,
        "timeout",
    )


@pytest.mark.parametrize(
    "line",
    [
        b"not json\n",
        b'{"type": "stdout"}\n',
        b'{"seq": 0, "type": "stdout", "data": "***"}\n',
        b'{"seq": 0, "type": "weird"}\n',
        b'{"seq": 0, "type": "end", "reason": "because"}\n',
    ],
)
def test_a_malformed_frame_is_an_sdk_error(line: bytes) -> None:
    with pytest.raises(SandboxError):
        OutputCollector().feed_line(line)


def test_nothing_is_taken_after_the_end_frame() -> None:
    lines = frames_of([])
    collector = OutputCollector()
    for line in lines:
        collector.feed_line(line)
    with pytest.raises(SandboxError, match="after the end frame"):
        collector.feed({"seq": len(lines), "type": "stdout", "data": ""})
