"""One host uid per cell: allocation from agentcell's reserved range.

Without user namespaces (Docker 20.10 offers only a daemon-wide remap) a cell's uid is a host
uid. Two cells with the same uid can reach each other's processes through a host ``/proc``
(``/proc/<pid>/root``, ``environ``, ``mem``, ``fd``), signal each other in a host PID
namespace, and share every per-uid kernel limit (inotify instances, RLIMIT_NPROC, ...). So a
cell whose spec pins no uid gets one of its own from :data:`UID_RANGE`, never handed to a
second live cell: the engine's containers are the record (their ``User``), read under a host
lock (one per host, not per ``AGENTCELL_HOME``) held until the new container exists, so two
launches cannot pick the same uid. A uid is
released when its container is removed. Processes on the host that already run with a uid of
the range (anything not made by agentcell) are skipped too.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from agentcell.cell.paths import SYSTEM_RUN_DIR
from agentcell.cell.users import UID_RANGE, UNALLOCATED
from agentcell.errors import HostError
from agentcell.spec.model import AgentDocument, Security

__all__ = [
    "allocation_lock",
    "cell_ids",
    "choose_uid",
    "host_process_uids",
    "uid_range",
    "with_cell_ids",
]


def uid_range(environ: Mapping[str, str] | None = None) -> range:
    """The reserved range: ``AGENTCELL_UID_RANGE=FIRST-LAST`` or :data:`UID_RANGE`.

    Raises:
        HostError: the variable is not two increasing non-root uids.
    """
    raw = (os.environ if environ is None else environ).get("AGENTCELL_UID_RANGE")
    if not raw:
        return UID_RANGE
    first, _, last = raw.partition("-")
    try:
        start, stop = int(first), int(last) + 1
    except ValueError:
        start = stop = 0
    if not 0 < start < stop <= 2**31:
        raise HostError(
            f"AGENTCELL_UID_RANGE={raw!r} is not a range of uids such as 1000000000-1000999999",
            fix="set AGENTCELL_UID_RANGE=FIRST-LAST with 0 < FIRST <= LAST < 2147483648",
        )
    return range(start, stop)


def cell_ids(security: Security, allocated: int | None) -> tuple[int, int]:
    """(uid, gid) the cell runs as: the spec's pinned ones, else the allocated uid for both."""
    if security.user is not None:
        return security.user, security.group if security.group is not None else security.user
    uid = UNALLOCATED if allocated is None else allocated
    return uid, security.group if security.group is not None else uid


def with_cell_ids(document: AgentDocument, allocated: str | None) -> AgentDocument:
    """``document`` with the uid agentcell allocated (the cell's ``org.agentcell.uid``
    label) written in, so a proof compares the cell with the uid it was given."""
    security = document.spec.security
    if security.user is not None or not (allocated or "").isdigit():
        return document
    uid, gid = cell_ids(security, int(str(allocated)))
    security = security.model_copy(update={"user": uid, "group": gid})
    spec = document.spec.model_copy(update={"security": security})
    return document.model_copy(update={"spec": spec})


def choose_uid(taken: Iterable[int], *, pool: range) -> int:
    """The lowest uid of ``pool`` not in ``taken``.

    Raises:
        HostError: every uid of the pool is taken.
    """
    used = set(taken)
    for uid in pool:
        if uid not in used:
            return uid
    raise HostError(
        f"all {len(pool)} uids of agentcell's range {pool.start}-{pool.stop - 1} are in use",
        fix="remove cells you no longer need, or widen AGENTCELL_UID_RANGE",
    )


def host_process_uids(proc: Path = Path("/proc")) -> set[int]:
    """Every real, effective, saved and filesystem uid of the host's processes."""
    uids: set[int] = set()
    for entry in proc.iterdir() if proc.is_dir() else ():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "status").read_text(encoding="ascii", errors="replace")
        except OSError:
            continue  # the process ended while we read
        for line in text.splitlines():
            if line.startswith("Uid:"):
                uids.update(int(field) for field in line.split()[1:])
                break
    return uids


# One per host, whatever AGENTCELL_HOME says: the engine's uids are the host's, and two
# agentcell processes with two homes (two services, or a CLI beside a service) launch cells
# on the one engine.
LOCK_PATH = SYSTEM_RUN_DIR / "uids.lock"


@contextlib.contextmanager
def allocation_lock() -> Iterator[None]:
    """Hold the host-wide allocation lock (:data:`LOCK_PATH`) for the block.

    Raises:
        HostError: the lock file cannot be made.
    """
    path = LOCK_PATH
    try:
        path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise HostError(
            f"cannot open the uid allocation lock {path}: {exc.strerror}",
            fix="run agentcell as root (the lock is host-wide, in /run/agentcell)",
        ) from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock
