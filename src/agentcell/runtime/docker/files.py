"""Files in a running cell's tmpfs mounts: write, read, list, remove, streamed.

The engine's archive upload cannot be used: it writes beneath a tmpfs mount, into the container
layer (which the read-only rootfs refuses, or where the file hides under the mount). So the
files are handled by a process inside the cell, as the cell's user: the cell's own ``python3``
runs ``assets/files/cellfiles.py`` (sent as its ``-c`` argument, never written into the cell),
with the data on the exec's stdin and stdout.

A path is checked twice. On the host: absolute, normalized, no ``..``, strictly inside one of
the cell's tmpfs mounts. In the cell: every component is opened from the tmpfs root without
following a symlink and must be on the tmpfs's own device, so neither a symlink the cell made
nor another mount beneath the tmpfs leads anywhere else. An upload goes to a temporary name
beside the target and is renamed into place only when all of it has arrived; a full tmpfs
(``too_large``), a broken stream or a failing caller leaves the old file as it was and no
partial file.

The cell's ``python3`` is the image's; a hostile image can make it lie or misbehave, but only
with the cell's own uid and mounts, which is what the caller gave the cell anyway.
"""

from __future__ import annotations

import contextlib
import json
import posixpath
import select
import socket
import struct
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

import docker
from docker.utils.socket import STDERR, STDOUT, frames_iter

from agentcell.cell.paths import asset
from agentcell.errors import BackendError, Error
from agentcell.runtime.docker.client import translated

__all__ = ["CellFileError", "CellFiles", "Entry", "EntryKind", "FileErrorReason"]

EntryKind = Literal["file", "dir", "symlink", "other"]
FileErrorReason = Literal["bad_path", "not_found", "too_large", "is_directory", "not_supported"]
# The caller's chunks are cut into frames of at most this size on the exec's stdin.
FRAME_BYTES = 1024 * 1024
# What the helper may say besides data: its answer lines, a traceback. Bounded, so a hostile
# cell cannot fill the host's memory through them.
MAX_ANSWER_BYTES = 1024 * 1024
MAX_DIAGNOSTIC_BYTES = 64 * 1024
# A listing is held whole: bounded, against a directory (or a lying helper) without end.
MAX_ENTRIES = 100_000
_PROGRAM = asset("files", "cellfiles.py").read_text()
# The engine answers an exec whose program is missing with these (runc: "not found", "not
# executable").
_NO_PROGRAM = (126, 127)
FAILURE_WAIT_S = 5.0

_FIXES: dict[str, str] = {
    "bad_path": "give an absolute, normalized path inside one of the cell's tmpfs mounts, "
    "with no symlink on the way",
    "not_found": "check the path (list its directory), or create the directory first",
    "too_large": "free space in the tmpfs, or give the cell a larger tmpfs in its spec",
    "is_directory": "name a file, or remove the directory's entries first",
    "not_supported": "use an image with python3 (agentcell/sandbox or agentcell/python-runtime)",
}


class CellFileError(Error):
    """A file operation in a cell was refused: ``reason`` says why (``bad_path``,
    ``not_found``, ``too_large``, ``is_directory``, ``not_supported``)."""

    exit_code = 2

    def __init__(self, what: str, *, reason: FileErrorReason, fix: str | None = None) -> None:
        super().__init__(what, fix=fix or _FIXES[reason])
        self.reason: FileErrorReason = reason


@dataclass(frozen=True, kw_only=True)
class Entry:
    """One entry of a directory in the cell, as ``lstat`` sees it (symlinks not followed)."""

    name: str
    path: str
    kind: EntryKind
    size: int
    mode: int
    """Permission bits (``0o644``), without the file type."""
    mtime: float


class CellFiles:
    """The files of one running cell, inside its tmpfs mounts only."""

    def __init__(
        self, client: docker.DockerClient, container: str, tmpfs_paths: Sequence[str]
    ) -> None:
        self._client = client
        self.container = container
        self.tmpfs_paths = tuple(_normalized_root(path) for path in tmpfs_paths)

    # -- the operations -----------------------------------------------------------------------

    def write(self, path: str, chunks: Iterable[bytes]) -> int:
        """Write ``chunks`` to the file ``path`` (replacing it whole once all have arrived);
        returns the bytes written. Stops taking chunks as soon as the cell refuses.

        Raises:
            CellFileError: a bad path, a directory, a full tmpfs, or an image without python3.
            BackendError: the engine or the helper failed.
        """
        root = self._root_of(path, whole_root_allowed=False)
        with self._helper("write", root, path, stdin=True) as helper:
            # Ready: the path is good, and a temporary file exists beside the target.
            name = str(helper.expect_answer().get("temporary", ""))
            if not name.startswith(".") or ".agentcell-" not in name or "/" in name:
                raise BackendError(f"the file helper in {self.container} answered nonsense")
            temporary = posixpath.join(posixpath.dirname(path), name)
            try:
                return self._send(helper, chunks)
            except BackendError:
                # The helper died (an OOM kill when the tmpfs outgrows the cell's memory, say)
                # before it could remove its temporary file: remove it now.
                with contextlib.suppress(Error):
                    self.remove(temporary)
                raise

    def _send(self, helper: _Helper, chunks: Iterable[bytes]) -> int:
        sent_all = False
        try:
            for chunk in chunks:
                for start in range(0, len(chunk), FRAME_BYTES):
                    piece = chunk[start : start + FRAME_BYTES]
                    if not helper.send(struct.pack(">I", len(piece)) + piece):
                        # The helper stopped reading: its answer says why (too_large).
                        return int(helper.expect_answer()["size"])
            sent_all = True
        finally:
            if not sent_all:
                # The caller's chunks failed: end the input without the final frame, so the
                # helper discards the upload, and wait until it has.
                helper.close_input()
                helper.drain()
        helper.send(struct.pack(">I", 0))
        helper.close_input()
        return int(helper.expect_answer()["size"])

    def read(self, path: str) -> Iterator[bytes]:
        """The bytes of the file ``path``, streamed. The path is checked before this returns,
        so a refusal is raised here, not by the first ``next()``.

        Raises:
            CellFileError: a bad path, not found, a directory, or an image without python3.
            BackendError: the engine or the helper failed.
        """
        root = self._root_of(path, whole_root_allowed=True)
        helper = self._helper("read", root, path, stdin=False)
        try:
            helper.expect_answer()
        except BaseException:
            helper.close()
            raise
        return helper.data()

    def list(self, path: str) -> list[Entry]:
        """The entries of the directory ``path`` (a tmpfs root or a directory inside one).

        Raises:
            CellFileError: a bad path, not found, or an image without python3.
            BackendError: the engine or the helper failed.
        """
        root = self._root_of(path, whole_root_allowed=True)
        entries: list[Entry] = []
        with self._helper("list", root, path, stdin=False) as helper:
            while True:
                line = helper.expect_answer(entries_allowed=True)
                if not line.get("entry"):
                    return entries
                if len(entries) >= MAX_ENTRIES:
                    raise CellFileError(
                        f"{path} holds more than {MAX_ENTRIES} entries",
                        reason="too_large",
                        fix="list a directory with fewer entries",
                    )
                entries.append(_entry(line))

    def remove(self, path: str) -> None:
        """Remove the file, symlink (itself) or empty directory ``path``.

        Raises:
            CellFileError: a bad path, not found, a directory that is not empty, or an image
                without python3.
            BackendError: the engine or the helper failed.
        """
        root = self._root_of(path, whole_root_allowed=False)
        with self._helper("remove", root, path, stdin=False) as helper:
            helper.expect_answer()

    # -- paths ----------------------------------------------------------------------------------

    def _root_of(self, path: str, *, whole_root_allowed: bool) -> str:
        """The tmpfs mount holding ``path``, after the host's checks of it."""
        if not path.startswith("/"):
            raise CellFileError(f"{path!r} is not an absolute path", reason="bad_path")
        if "\x00" in path:
            raise CellFileError("a path cannot hold a NUL byte", reason="bad_path")
        if ".." in path.split("/"):
            raise CellFileError(f"{path!r} has a '..' component", reason="bad_path")
        if posixpath.normpath(path) != path or path.startswith("//"):
            raise CellFileError(
                f"{path!r} is not normalized (write {posixpath.normpath(path)!r})",
                reason="bad_path",
            )
        for root in self.tmpfs_paths:
            if path == root:
                if whole_root_allowed:
                    return root
                raise CellFileError(
                    f"{path} is the tmpfs mount itself, not a file in it", reason="bad_path"
                )
            if path.startswith(root.rstrip("/") + "/"):
                return root
        shown = ", ".join(self.tmpfs_paths) or "none"
        raise CellFileError(
            f"{path} is not inside a tmpfs mount of {self.container} (its tmpfs mounts: {shown})",
            reason="bad_path",
        )

    def _helper(self, operation: str, root: str, path: str, *, stdin: bool) -> _Helper:
        api = self._client.api
        with translated("exec in", subject=self.container):
            exec_id = str(
                api.exec_create(
                    self.container,
                    ["python3", "-c", _PROGRAM, operation, root, path],
                    stdin=stdin,
                    stdout=True,
                    stderr=True,
                )["Id"]
            )
            wrapper = api.exec_start(exec_id, socket=True)
        return _Helper(self._client, self.container, exec_id, wrapper, path)


class _Helper:
    """One exec of the in-cell helper: its answers (JSON lines), its data, its diagnostics."""

    def __init__(
        self, client: docker.DockerClient, container: str, exec_id: str, wrapper: Any, path: str
    ) -> None:
        self._client = client
        self._container = container
        self._exec_id = exec_id
        self._wrapper = wrapper
        self._socket = cast("socket.socket", getattr(wrapper, "_sock", wrapper))
        self._frames = frames_iter(self._socket, False)  # type: ignore[no-untyped-call]
        self._path = path
        self._stdout = bytearray()
        self._stderr = bytearray()
        self._ended = False

    def __enter__(self) -> _Helper:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._wrapper.close()
        with contextlib.suppress(OSError):
            self._socket.close()

    def send(self, data: bytes) -> bool:
        """Send ``data`` to the helper's stdin; False once the helper has stopped reading
        (it answered early, or ended)."""
        if self._answer_waiting():
            return False
        try:
            self._socket.sendall(data)
        except OSError:
            return False
        return True

    def close_input(self) -> None:
        with contextlib.suppress(OSError):
            self._socket.shutdown(socket.SHUT_WR)

    def _answer_waiting(self) -> bool:
        # poll, not select: a daemon's descriptors can be numbered past select's 1024.
        waiting = select.poll()
        waiting.register(self._socket, select.POLLIN | select.POLLPRI | select.POLLHUP)
        return bool(waiting.poll(0))

    def _next_frame(self) -> bool:
        """Read one frame into the buffers; False at the end of the stream."""
        if self._ended:
            return False
        try:
            stream, data = next(self._frames)
        except StopIteration:
            self._ended = True
            return False
        except OSError as exc:
            raise BackendError(f"the file stream of {self._container} broke: {exc}") from exc
        if stream == STDOUT:
            self._stdout += data
        elif stream == STDERR and len(self._stderr) < MAX_DIAGNOSTIC_BYTES:
            self._stderr += data
        return True

    def expect_answer(self, *, entries_allowed: bool = False) -> dict[str, Any]:
        """The helper's next answer line, raised as :class:`CellFileError` when it refuses."""
        while b"\n" not in self._stdout:
            if len(self._stdout) > MAX_ANSWER_BYTES:
                raise BackendError(f"the file helper in {self._container} answered nonsense")
            if not self._next_frame():
                raise self._failure()
        line, _, rest = bytes(self._stdout).partition(b"\n")
        self._stdout = bytearray(rest)
        try:
            answer = json.loads(line)
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            # The engine writes its own refusal to start the program on stdout.
            self._stdout[:0] = line + b"\n"
            self.drain()
            raise self._failure()
        if answer.get("ok") is True or (entries_allowed and answer.get("entry") is True):
            return answer
        reason = str(answer.get("reason"))
        message = str(answer.get("message") or reason)
        if reason in _FIXES:
            raise CellFileError(message, reason=cast("FileErrorReason", reason))
        raise BackendError(f"a file operation in {self._container} failed: {message}")

    def data(self) -> Iterator[bytes]:
        """The rest of stdout, as it comes; then the helper's final word on stderr."""
        try:
            if self._stdout:
                yield bytes(self._stdout)
                self._stdout.clear()
            while self._next_frame():
                if self._stdout:
                    yield bytes(self._stdout)
                    self._stdout.clear()
            last = self._stderr.strip().rsplit(b"\n", 1)[-1]
            try:
                final = json.loads(last)
            except ValueError:
                final = None
            if not (isinstance(final, dict) and final.get("ok") is True):
                raise BackendError(
                    f"reading {self._path} in {self._container} stopped before the end: "
                    f"{_shown(self._stderr)}"
                )
        finally:
            self.close()

    def drain(self) -> None:
        """Read to the end of the stream (the helper has been told to stop, or has stopped).
        A connection the engine resets is an end too: the helper is gone either way."""
        with contextlib.suppress(BackendError):
            while self._next_frame():
                if len(self._stdout) > MAX_ANSWER_BYTES:
                    self._stdout.clear()

    def _failure(self) -> Error:
        """Why the helper ended without answering."""
        code = None
        deadline = time.monotonic() + FAILURE_WAIT_S
        with contextlib.suppress(Error), translated("inspect exec in", subject=self._container):
            while True:  # the engine records the exit code a moment after the stream ends
                info = self._client.api.exec_inspect(self._exec_id)
                code = info.get("ExitCode")
                if not info.get("Running") or time.monotonic() > deadline:
                    break
                time.sleep(0.02)
        if code in _NO_PROGRAM:
            return CellFileError(
                f"{self._container} has no python3 to handle files with "
                f"(exit {code}: {_shown(self._stdout + self._stderr)})",
                reason="not_supported",
            )
        return BackendError(
            f"the file helper in {self._container} ended without answering (exit {code}): "
            f"{_shown(self._stdout + self._stderr)}"
        )


def _normalized_root(path: str) -> str:
    root = posixpath.normpath(path)
    if not root.startswith("/") or root == "/":
        raise CellFileError(f"{path!r} cannot be a tmpfs root", reason="bad_path")
    return root


def _entry(line: dict[str, Any]) -> Entry:
    kind = str(line.get("kind"))
    return Entry(
        name=str(line["name"]),
        path=str(line["path"]),
        kind=cast("EntryKind", kind if kind in ("file", "dir", "symlink") else "other"),
        size=int(line["size"]),
        mode=int(line["mode"]),
        mtime=float(line["mtime"]),
    )


def _shown(text: bytes | bytearray) -> str:
    return bytes(text[-2000:]).decode(errors="replace").strip() or "no output"
