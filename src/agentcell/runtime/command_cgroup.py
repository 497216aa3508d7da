"""One cgroup per command in a cell, so a kill reaches everything the command started.

A process that leaves the command's session (``setsid``) and whose ancestors then exit is the
cell init's child in a session of its own: the classic daemon. Nothing in the process table
ties it to the command any more, but its cgroup does: a child is born in its parent's cgroup,
and a cell's user cannot move itself (the cgroup files are root's, and the cell's view of
cgroupfs is read-only). So the host puts each command's first process in a cgroup of its own
under the cell's, before the command runs a single instruction of its own, and a kill freezes
that cgroup, signals every member and thaws it.

The cgroup is in the v1 ``freezer`` hierarchy only: the cell's cpu, memory and pids limits,
and what ``verify`` reads of them, stay the container's. On a host without the v1 freezer
(cgroup v2), :meth:`CommandCgroup.create` returns None and the caller falls back to the
session and descendants it can see. The engine's runtime (runc and crun alike) removes a
container's cgroup with every cgroup beneath it, so one left non-empty by a command's daemon
goes with its cell.
"""

from __future__ import annotations

import contextlib
import errno
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agentcell.runtime.cgroups import CGROUP_FS

__all__ = ["CommandCgroup", "freezer_path"]

_FROZEN_WAIT_S = 1.0
_ROUND_WAIT_S = 1.0
_POLL_S = 0.002
KILL_ROUNDS = 50


def freezer_path(cgroup_text: str) -> str | None:
    """The v1 freezer cgroup in a ``/proc/<pid>/cgroup`` file (``N:freezer:/path``)."""
    for line in cgroup_text.splitlines():
        _, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if "freezer" in controllers.split(","):
            return path
    return None


@dataclass(frozen=True)
class CommandCgroup:
    """The freezer cgroup of one command, a child of its cell's."""

    path: Path

    @classmethod
    def create(
        cls, cell_pid: int, name: str, *, proc: Path = Path("/proc"), root: Path = CGROUP_FS
    ) -> CommandCgroup | None:
        """Make the cgroup ``name`` beneath the freezer cgroup of the cell whose init is the
        host's ``cell_pid``; None when this host has no v1 freezer hierarchy or the cell is in
        none.

        Raises:
            OSError: the cgroup could not be made (the cell is gone, or cgroupfs refused).
        """
        mount = root / "freezer"
        if not (mount / "cgroup.procs").is_file():
            return None
        cell = freezer_path((proc / str(cell_pid) / "cgroup").read_text())
        if not cell or cell == "/":
            return None
        path = mount / cell.lstrip("/") / name
        path.mkdir(mode=0o755)
        return cls(path)

    def adopt(self, pid: int) -> None:
        """Move the process ``pid`` in (the caller has checked, through a pidfd, that the pid
        names the process it means).

        Raises:
            OSError: it is gone, or cgroupfs refused.
        """
        (self.path / "cgroup.procs").write_text(f"{pid}\n")

    def members(self) -> list[int]:
        """The pids in it now (none once it is removed)."""
        try:
            text = (self.path / "cgroup.procs").read_text()
        except FileNotFoundError:
            return []
        return [int(line) for line in text.split() if line.isdigit()]

    def kill(self, signal_member: Callable[[int], bool]) -> int:
        """Freeze it, have ``signal_member`` SIGKILL each member (it returns whether it did),
        thaw it, until it is empty; returns how many were signalled.

        Raises:
            OSError: members remain after every round, or cgroupfs refused.
        """
        signalled: set[int] = set()
        for _ in range(KILL_ROUNDS):
            if not self.members():
                return len(signalled)
            self._set_state("FROZEN")
            try:
                for pid in self.members():
                    if signal_member(pid):
                        signalled.add(pid)
            finally:
                # A frozen process dies of its pending SIGKILL as it thaws, before it runs
                # anything of its own.
                self._set_state("THAWED")
            if self._wait_empty(_ROUND_WAIT_S):
                return len(signalled)
        left = self.members()
        if not left:
            return len(signalled)
        raise OSError(errno.EBUSY, f"processes {left} survived {KILL_ROUNDS} rounds of SIGKILL")

    def remove(self) -> bool:
        """Remove it if it is empty; False while processes remain (it then goes with the
        cell)."""
        try:
            self.path.rmdir()
        except FileNotFoundError:
            return True
        except OSError as exc:
            if exc.errno == errno.EBUSY:
                return False
            raise
        return True

    def _set_state(self, state: str) -> None:
        (self.path / "freezer.state").write_text(state)
        if state != "FROZEN":
            return
        # FREEZING lasts while a member is in an uninterruptible sleep; signal them anyway
        # (they die as they are thawed), so a stuck one cannot hold the kill.
        deadline = time.monotonic() + _FROZEN_WAIT_S
        while time.monotonic() < deadline:
            with contextlib.suppress(FileNotFoundError):
                if (self.path / "freezer.state").read_text().strip() == "FROZEN":
                    return
            time.sleep(_POLL_S)

    def _wait_empty(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while self.members():
            if time.monotonic() >= deadline:
                return False
            time.sleep(_POLL_S)
        return True
