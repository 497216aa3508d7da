"""gVisor's own view of a cell, for ``agentcell verify``.

Under runsc the host's /proc shows only the sandbox process; the cell's processes, mounts and
in-sandbox settings are in gVisor's /proc. ``verify`` sends this program to the cell's
``python3`` over an exec's stdin (nothing is written into the cell) and parses its one JSON line
with the same parsers it uses for the host's files. Standard library only, and only cheap
modules: every import costs syscalls, which are slow under gVisor's ptrace platform.
"""

from __future__ import annotations

import ctypes
import json
import os
import sys

MASKED = ("/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/sched_debug", "/proc/acpi")
PR_GET_NO_NEW_PRIVS = 39


def read(path: str) -> str | None:
    """A file's text, or None when it cannot be read."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except OSError:
        return None


def main() -> int:
    """Print the snapshot; this process and its parent (the exec) are left out."""
    me, parent = os.getpid(), os.getppid()
    statuses: dict[str, str | None] = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        names = []
    for name in names:
        if name.isdigit() and int(name) not in (me, parent):
            statuses[name] = read(f"/proc/{name}/status")
    libc = ctypes.CDLL(None, use_errno=True)
    snapshot = {
        "no_new_privs": int(libc.prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0)),
        "status": statuses,
        "mountinfo": read("/proc/1/mountinfo"),
        "route": read("/proc/net/route"),
        "ipv6_route": read("/proc/net/ipv6_route"),
        "dev": read("/proc/net/dev"),
        "present": {path: os.path.exists(path) for path in MASKED},
        # This program is itself a process started by exec: how gVisor treats those.
        "self_status": read("/proc/self/status"),
    }
    sys.stdout.write(json.dumps(snapshot) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
