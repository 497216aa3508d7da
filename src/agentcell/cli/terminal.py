"""Text a cell produced, made safe to show on the operator's terminal.

A cell controls much of what agentcell prints: its logs, the probe program's answers (it runs
with the image's own interpreter), gVisor's view read by ``verify``, the metrics and events its
agent reports, the labels ``ps`` shows. A terminal obeys control characters in that text:
``ESC ] 0;title BEL`` sets the window title, ``ESC [2J`` clears the screen, ``\\r`` lets a
line overwrite what was printed before it, and some sequences make terminals answer on stdin.
Everything here keeps ``\\n`` and ``\\t`` and shows every other control character as an
escape (``\\x1b``), so the operator sees what the cell sent instead of having it done.

Rich parses ``[style]`` markup and ``:emoji:`` codes in the strings it prints; :func:`literal`
returns a :class:`rich.text.Text`, which rich prints as it is.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.text import Text

__all__ = ["literal", "printable", "printable_stream"]

# C0 controls but \t and \n, DEL, C1 controls (the 8-bit forms of ESC sequences, e.g. \x9b is
# CSI), the bidirectional overrides and isolates (they reorder what the operator reads), the
# line and paragraph separators, and lone surrogates (from undecodable file names; stdout
# cannot encode them). A \r that ends a line (\r\n) is only a line end.
_UNSAFE = re.compile(
    "\r\n|[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e"
    "\u2066-\u2069\ud800-\udfff]"
)


def _shown(match: re.Match[str]) -> str:
    text = match.group()
    if text == "\r\n":
        return "\n"
    code = ord(text)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def printable(text: str) -> str:
    """``text`` with every control character but newline and tab shown as an escape."""
    return _UNSAFE.sub(_shown, text)


def literal(text: str) -> Text:
    """``text`` for rich: control characters escaped, and no markup or emoji codes parsed."""
    from rich.text import Text

    return Text(printable(text))


def printable_stream(chunks: Iterable[bytes]) -> Iterator[str]:
    """Printable text of a byte stream (a cell's logs), chunk by chunk.

    Bytes that are not UTF-8 are shown as ``\\xNN``. A character or a ``\\r\\n`` split between
    chunks is held back until the next chunk completes it, so the result does not depend on
    where the engine cut the stream.
    """
    decoder = codecs.getincrementaldecoder("utf-8")(errors="backslashreplace")
    pending = ""
    for chunk in chunks:
        text = pending + decoder.decode(chunk)
        pending = ""
        if text.endswith("\r"):
            text, pending = text[:-1], "\r"
        if text:
            yield printable(text)
    rest = pending + decoder.decode(b"", final=True)
    if rest:
        yield printable(rest)
