"""Cell-produced text on the operator's terminal: controls are shown, never obeyed."""

from __future__ import annotations

import io
import unicodedata

from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console, RenderableType
from rich.table import Table

from agentcell.cli.terminal import literal, printable, printable_stream

SET_TITLE = "\x1b]0;owned\x07"
CLEAR_SCREEN = "\x1b[2J\x1b[H"
CSI_8BIT = "\x9b31m"


def controls(text: str) -> set[str]:
    """Characters a terminal would act on, but newline and tab."""
    return {c for c in text if unicodedata.category(c) == "Cc" and c not in "\n\t"}


def rendered(*cells: RenderableType) -> str:
    """What rich writes for a table row of these cells (colour codes off)."""
    out = io.StringIO()
    table = Table(box=None, show_header=False)
    table.add_column()
    table.add_column()
    table.add_row(*cells)
    Console(file=out, width=200, color_system=None).print(table)
    return out.getvalue()


def test_title_and_clear_screen_sequences_are_shown_not_sent() -> None:
    shown = printable(f"probe ok{SET_TITLE}{CLEAR_SCREEN}")
    assert shown == "probe ok\\x1b]0;owned\\x07\\x1b[2J\\x1b[H"
    assert "\x1b" not in shown


def test_8bit_c1_controls_are_shown() -> None:
    assert printable(CSI_8BIT + "red") == "\\x9b31mred"
    assert printable("\x90q\x9c") == "\\x90q\\x9c"  # DCS ... ST


def test_a_carriage_return_cannot_overwrite_the_line() -> None:
    assert printable("blocked\rNOT BLOCKED") == "blocked\\x0dNOT BLOCKED"
    assert printable("line one\r\nline two\n") == "line one\nline two\n"


def test_newlines_and_tabs_stay() -> None:
    assert printable("a\tb\nc") == "a\tb\nc"


def test_bidi_overrides_and_lone_surrogates_are_shown() -> None:
    assert printable("evil\u202etxt.exe") == "evil\\u202etxt.exe"
    shown = printable("name-\udcff")
    assert shown == "name-\\udcff"
    shown.encode("utf-8")  # would raise on a lone surrogate


def test_rich_markup_and_emoji_codes_in_cell_text_are_printed_as_written() -> None:
    hostile = "[red]fake verdict[/red] :warning: [link=http://x]y[/link]"
    out = rendered(literal("detail"), literal(hostile))
    assert hostile in out


def test_escapes_survive_rich_rendering() -> None:
    out = rendered(literal("x"), literal(SET_TITLE + CLEAR_SCREEN + CSI_8BIT))
    assert not controls(out)
    assert "\\x1b]0;owned\\x07" in out


def test_a_log_stream_is_decoded_across_chunks() -> None:
    # "é" (c3 a9) and a \r\n split over chunk boundaries; a raw 0x9b byte is not UTF-8.
    chunks = [b"caf\xc3", b"\xa9 ok\r", b"\nnext \x1b[2J \x9b", b"1m\r"]
    assert "".join(printable_stream(chunks)) == "café ok\nnext \\x1b[2J \\x9b1m\\x0d"


@given(st.text())
def test_printable_text_holds_no_control_but_newline_and_tab(text: str) -> None:
    shown = printable(text)
    assert not controls(shown)
    shown.encode("utf-8")


@given(st.lists(st.binary(max_size=16), max_size=8))
def test_a_printable_stream_holds_no_control_but_newline_and_tab(chunks: list[bytes]) -> None:
    shown = "".join(printable_stream(chunks))
    assert not controls(shown)
    # Where the engine cuts the stream does not change what is shown.
    assert shown == "".join(printable_stream([b"".join(chunks)]))


@given(st.text())
def test_printable_is_idempotent_on_its_own_output(text: str) -> None:
    shown = printable(text)
    assert printable(shown) == shown
