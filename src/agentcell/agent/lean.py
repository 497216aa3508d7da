"""Small stand-ins for ``logging`` and ``threading.Event`` that keep the agent's RSS low.

Importing ``logging``, ``threading`` and ``dataclasses`` costs a Python process about 4 MB,
a fifth of the agent's whole budget. The agent needs one log format and one way to sleep until
the next tick or a signal, so it has exactly those, here.
"""

from __future__ import annotations

import contextlib
import os
import select
import sys
import time

__all__ = ["Log", "StopSignal"]


class Log:
    """One line per message on stderr: UTC time, program, level, message (%-formatted)."""

    def __init__(self, program: str) -> None:
        self.program = program

    def _emit(self, level: str, message: str, args: tuple[object, ...]) -> None:
        text = message % args if args else message
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
        sys.stderr.write(f"{stamp} {self.program} {level} {text}\n")
        sys.stderr.flush()

    def info(self, message: str, *args: object) -> None:
        """Log at INFO."""
        self._emit("INFO", message, args)

    def warning(self, message: str, *args: object) -> None:
        """Log at WARNING."""
        self._emit("WARNING", message, args)

    def error(self, message: str, *args: object) -> None:
        """Log at ERROR."""
        self._emit("ERROR", message, args)


class StopSignal:
    """A flag that can be waited on with a timeout, set from a signal handler.

    Waiting is a ``select`` on a pipe: ``set`` writes a byte, so a wait wakes at once, and a
    signal arriving during the wait runs its handler and then ends the wait the same way.
    """

    def __init__(self) -> None:
        self._read, self._write = os.pipe()
        os.set_blocking(self._write, False)
        self._set = False

    def set(self) -> None:
        """Stop: wakes any wait."""
        if not self._set:
            self._set = True
            with contextlib.suppress(BlockingIOError):  # a byte is already waiting
                os.write(self._write, b"x")

    def is_set(self) -> bool:
        """Whether ``set`` was called."""
        return self._set

    def wait(self, timeout: float) -> bool:
        """Sleep up to ``timeout`` seconds or until set; whether it is set."""
        if not self._set:
            select.select([self._read], [], [], max(timeout, 0.0))
        return self._set
