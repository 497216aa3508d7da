"""Files in a cell's tmpfs, done by a process inside the cell as the cell's user.

``agentcell.runtime.docker.files`` runs this program as ``python3 -c <this text> OP ROOT PATH``
over ``docker exec`` (nothing is written into the cell). ROOT is the tmpfs mount that holds
PATH, both already checked on the host. Every component is opened from ROOT with
``O_NOFOLLOW`` directory descriptors, so a symlink anywhere on the way or at the end is refused,
and a directory on another device than ROOT (another mount) is refused too.

Answers are JSON lines on stdout, ``{"ok": true, ...}`` or ``{"ok": false, "reason", "message"}``:

* ``write``: answers ``ready`` once the path is checked and a temporary file exists beside the
  target; then reads frames from stdin (a 4-byte big-endian length, then that many bytes) until
  a zero-length frame, which commits: the temporary file is renamed into place. End of input
  before that frame, or a full tmpfs (``too_large``), removes the temporary file: the old file
  stays as it was.
* ``read``: answers with the size, then the file's bytes follow on stdout; the final answer is
  on stderr.
* ``list``: one JSON line per entry, then the answer.
* ``remove``: a file, a symlink itself, or an empty directory.

Standard library only; runs on any python3 of 3.7 or later; imports nothing of agentcell.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import stat
import struct
import sys
from typing import IO, Any, BinaryIO

CHUNK = 256 * 1024
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


class Refused(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def answer(stream: IO[bytes], **fields: Any) -> None:
    stream.write(json.dumps(fields).encode() + b"\n")
    stream.flush()


def kind_of(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISREG(mode):
        return "file"
    return "other"


def lstat_at(dir_fd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def open_dir_at(dir_fd: int, name: str, shown: str, root_dev: int) -> int:
    """The directory ``name`` under ``dir_fd``, refusing a symlink or another mount."""
    try:
        fd = os.open(name, DIR_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        raise Refused("not_found", f"{shown} does not exist") from None
    except OSError as exc:
        found = lstat_at(dir_fd, name)
        if found is not None and stat.S_ISLNK(found.st_mode):
            raise Refused("bad_path", f"{shown} is a symlink; symlinks are not followed") from None
        if exc.errno == errno.ENOTDIR:
            raise Refused("bad_path", f"{shown} is not a directory") from None
        raise
    if os.fstat(fd).st_dev != root_dev:
        os.close(fd)
        raise Refused("bad_path", f"{shown} is on another mount than the tmpfs")
    return fd


def open_root(root: str) -> int:
    """ROOT, walked from / without following a symlink."""
    fd = os.open("/", DIR_FLAGS)
    shown = ""
    for part in [p for p in root.split("/") if p]:
        shown += "/" + part
        try:
            next_fd = os.open(part, DIR_FLAGS, dir_fd=fd)
        except OSError:
            os.close(fd)
            raise Refused("not_found", f"the tmpfs {root} is not a directory in the cell") from None
        os.close(fd)
        fd = next_fd
    return fd


def parent_of(root: str, path: str) -> tuple[int, str, int]:
    """(descriptor of the directory holding PATH, PATH's last name, ROOT's device)."""
    fd = open_root(root)
    root_dev = os.fstat(fd).st_dev
    parts = [p for p in path[len(root) :].split("/") if p]
    if not parts:
        return fd, "", root_dev
    shown = root.rstrip("/")
    for part in parts[:-1]:
        shown += "/" + part
        try:
            next_fd = open_dir_at(fd, part, shown, root_dev)
        finally:
            os.close(fd)
        fd = next_fd
    return fd, parts[-1], root_dev


def read_exactly(stdin: BinaryIO, size: int) -> bytes | None:
    data = bytearray()
    while len(data) < size:
        piece = stdin.read(size - len(data))
        if not piece:
            return None
        data += piece
    return bytes(data)


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        done = os.write(fd, view)
        view = view[done:]


def do_write(root: str, path: str, out: IO[bytes]) -> None:
    dir_fd, name, _ = parent_of(root, path)
    existing = lstat_at(dir_fd, name)
    if existing is not None:
        kind = kind_of(existing.st_mode)
        if kind == "dir":
            raise Refused("is_directory", f"{path} is a directory")
        if kind == "symlink":
            raise Refused("bad_path", f"{path} is a symlink; symlinks are not followed")
        if kind != "file":
            raise Refused("bad_path", f"{path} is not a regular file")
    mode = stat.S_IMODE(existing.st_mode) if existing is not None else 0o644
    temporary = f".{name[:200]}.agentcell-{secrets.token_hex(8)}"
    fd = os.open(
        temporary,
        os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
        0o600,
        dir_fd=dir_fd,
    )
    committed = False
    try:
        answer(out, ok=True, ready=True, temporary=temporary)
        stdin = sys.stdin.buffer
        size = 0
        while True:
            header = read_exactly(stdin, 4)
            if header is None:
                raise Refused("aborted", "the upload ended before all its data arrived")
            (length,) = struct.unpack(">I", header)
            if length == 0:
                break
            while length:
                data = stdin.read(min(length, CHUNK))
                if not data:
                    raise Refused("aborted", "the upload ended before all its data arrived")
                length -= len(data)
                try:
                    write_all(fd, data)
                except OSError as exc:
                    if exc.errno in FULL:
                        raise Refused(
                            "too_large",
                            f"{path} does not fit: the tmpfs {root} is full after {size} bytes",
                        ) from None
                    raise
                size += len(data)
        os.fchmod(fd, mode)
        try:
            os.rename(temporary, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except IsADirectoryError:
            raise Refused("is_directory", f"{path} is a directory") from None
        except OSError as exc:
            if exc.errno == errno.EBUSY:
                raise Refused("bad_path", f"{path} is a mount point") from None
            raise
        committed = True
        answer(out, ok=True, size=size)
    finally:
        os.close(fd)
        if not committed:
            with contextlib.suppress(OSError):
                os.unlink(temporary, dir_fd=dir_fd)


def do_read(root: str, path: str, out: IO[bytes]) -> None:
    dir_fd, name, root_dev = parent_of(root, path)
    if not name:
        raise Refused("is_directory", f"{path} is a directory")
    try:
        fd = os.open(
            name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd
        )
    except FileNotFoundError:
        raise Refused("not_found", f"{path} does not exist") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise Refused("bad_path", f"{path} is a symlink; symlinks are not followed") from None
        raise
    found = os.fstat(fd)
    if stat.S_ISDIR(found.st_mode):
        raise Refused("is_directory", f"{path} is a directory")
    if not stat.S_ISREG(found.st_mode):
        raise Refused("bad_path", f"{path} is not a regular file")
    if found.st_dev != root_dev:
        raise Refused("bad_path", f"{path} is on another mount than the tmpfs")
    answer(out, ok=True, size=found.st_size)
    # From here on stdout carries only the file's bytes: the final answer goes to stderr.
    try:
        while True:
            data = os.read(fd, CHUNK)
            if not data:
                break
            out.write(data)
        out.flush()
    except OSError as exc:
        answer(sys.stderr.buffer, ok=False, reason="failed", message=os.strerror(exc.errno or 0))
        return
    answer(sys.stderr.buffer, ok=True, done=True)


def do_list(root: str, path: str, out: IO[bytes]) -> None:
    dir_fd, name, root_dev = parent_of(root, path)
    if name:
        fd = open_dir_at(dir_fd, name, path, root_dev)
        os.close(dir_fd)
    else:
        fd = dir_fd
    base = path.rstrip("/")
    count = 0
    for entry in os.scandir(fd):
        try:
            found = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue
        answer(
            out,
            entry=True,
            name=entry.name,
            path=base + "/" + entry.name,
            kind=kind_of(found.st_mode),
            size=found.st_size,
            mode=stat.S_IMODE(found.st_mode),
            mtime=found.st_mtime,
        )
        count += 1
    answer(out, ok=True, count=count)


def do_remove(root: str, path: str, out: IO[bytes]) -> None:
    dir_fd, name, _ = parent_of(root, path)
    found = lstat_at(dir_fd, name)
    if found is None:
        raise Refused("not_found", f"{path} does not exist")
    try:
        if stat.S_ISDIR(found.st_mode):
            os.rmdir(name, dir_fd=dir_fd)
        else:
            os.unlink(name, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
            raise Refused("is_directory", f"{path} is a directory that is not empty") from None
        if exc.errno == errno.EBUSY:
            raise Refused("bad_path", f"{path} is a mount point") from None
        raise
    answer(out, ok=True)


OPERATIONS = {"write": do_write, "read": do_read, "list": do_list, "remove": do_remove}


def main() -> int:
    out = sys.stdout.buffer
    operation, root, path = sys.argv[1:4]
    try:
        OPERATIONS[operation](root, path, out)
    except Refused as exc:
        answer(out, ok=False, reason=exc.reason, message=exc.message)
        return 1
    except OSError as exc:
        reason = "too_large" if exc.errno in FULL else "failed"
        answer(out, ok=False, reason=reason, message=f"{path}: {os.strerror(exc.errno or 0)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
