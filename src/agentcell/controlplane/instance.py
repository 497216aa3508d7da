"""One control plane per state directory, and where it listens.

A second server on the same state directory would take over the agents' socket (listening on
a Unix path replaces the inode in the directory the cells mount) and delete it when it exits,
while the first keeps serving TCP with nobody able to reach it from a cell. So the server
holds an exclusive ``flock`` on ``server.lock`` in the state directory for its whole life; a
second one finds it held and refuses with the first's pid and address, before it opens the
database or touches the socket. The kernel drops the lock when the holder dies, even by
SIGKILL, so a crash leaves nothing to clean up by hand.

While it runs, the server also writes ``server.json`` (its pid, TCP URL and agents' socket):
that is how the second server names the first, and how the CLI finds the admin API without
``AGENTCELL_CONTROLPLANE_URL`` when the server listens somewhere other than the default.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from agentcell.errors import HostError

__all__ = ["RunningServer", "ServerLock", "read_running_server"]

LOCK_FILE = "server.lock"
ADDRESS_FILE = "server.json"
LOCK_ATTEMPTS = 5
LOCK_RETRY_S = 0.05


@dataclass(frozen=True, kw_only=True)
class RunningServer:
    """What a running control plane says about itself in ``server.json``."""

    pid: int
    url: str
    agent_socket: str | None = None


def read_running_server(state_dir: Path) -> RunningServer | None:
    """The record of the server running on ``state_dir``, or None when none runs.

    A server that stops removes its record; one killed leaves it behind, so the record counts
    only while someone holds the lock.
    """
    if not _lock_is_held(state_dir / LOCK_FILE):
        return None
    try:
        record = json.loads((state_dir / ADDRESS_FILE).read_text())
        return RunningServer(
            pid=int(record["pid"]),
            url=str(record["url"]),
            agent_socket=str(record["agent_socket"]) if record.get("agent_socket") else None,
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


class ServerLock:
    """The state directory's exclusive lock, held from ``acquire`` until ``release``.

    Use as a context manager around the server's whole life.
    """

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.path = state_dir / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, or refuse because another server holds it.

        Raises:
            HostError: (exit 3) another control plane serves this state directory, or the lock
                file cannot be opened.
        """
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise HostError(
                f"cannot open the control plane's lock {self.path}: {exc.strerror}",
                fix="run `agentcell ca init` for this state directory, or run as its owner",
            ) from exc
        try:
            _lock_exclusive(fd)
        except BlockingIOError:
            holder = _pid_in(fd)
            os.close(fd)
            raise self._held(holder) from None
        except OSError as exc:
            os.close(fd)
            raise HostError(
                f"cannot lock {self.path}: {exc.strerror}",
                fix="put the state directory on a local file system",
            ) from exc
        # The pid goes into the lock file at once: a second server that comes while this one is
        # still starting (no server.json yet) can name it all the same.
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def _held(self, holder: int | None) -> HostError:
        running = read_running_server(self.state_dir)
        if running is not None and running.pid == holder:
            where = f"pid {running.pid}, {running.url}"
        elif holder is not None:
            where = f"pid {holder}, still starting"
        else:
            where = "pid unknown"
        return HostError(
            f"another control plane ({where}) already serves {self.state_dir}; "
            "this one would take over its agents' socket, so it is not started",
            fix="use the running one, stop it first, or give this one its own "
            "AGENTCELL_HOME / --state-dir",
        )

    def publish(self, *, url: str, agent_socket: str | None) -> None:
        """Write ``server.json`` for the CLI and for a second server to read.

        Raises:
            HostError: it cannot be written.
        """
        record = {"pid": os.getpid(), "url": url, "agent_socket": agent_socket}
        staging = self.state_dir / f".{ADDRESS_FILE}.{os.getpid()}"
        try:
            staging.write_text(json.dumps(record) + "\n")
            os.replace(staging, self.state_dir / ADDRESS_FILE)  # readers never see half a file
        except OSError as exc:
            with contextlib.suppress(OSError):
                staging.unlink()
            raise HostError(
                f"cannot write {self.state_dir / ADDRESS_FILE}: {exc.strerror}",
                fix="check the state directory's owner and free space",
            ) from exc

    def release(self) -> None:
        """Remove ``server.json`` (when it is this server's) and drop the lock."""
        if self._fd is None:
            return
        running = read_running_server(self.state_dir)
        if running is not None and running.pid == os.getpid():
            with contextlib.suppress(OSError):
                (self.state_dir / ADDRESS_FILE).unlink()
        # The lock file itself stays: a server that opened it a moment ago would otherwise lock
        # an inode nobody else can find, while the next one locks a new file beside it.
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> ServerLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()


def _lock_exclusive(fd: int) -> None:
    """LOCK_EX without waiting on a server, but past the instant a CLI holds a shared lock
    to read :func:`read_running_server`.

    Raises:
        BlockingIOError: the lock stayed held (by a server).
    """
    for _ in range(LOCK_ATTEMPTS - 1):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            time.sleep(LOCK_RETRY_S)
        else:
            return
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def _lock_is_held(path: Path) -> bool:
    """Whether a server holds the lock now. A lock file that cannot be opened (another user's
    state directory) is taken as held: the record, if readable, is then the best guess."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    except OSError:
        return True
    try:
        # A shared lock conflicts with the server's exclusive one, even from the server's own
        # process: flock locks belong to the open file, not to the process.
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return True
    finally:
        os.close(fd)  # also drops the shared lock, if it was taken
    return False


def _pid_in(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
