"""PID 1 of a sandbox cell: say it is ready, reap orphans, exit 0 on SIGTERM.

Sandbox work arrives through exec, so the main process only has to stay up. As PID 1 it gets
no default signal handling from the kernel, and it inherits every orphaned process that
untrusted commands leave behind; unreaped, those zombies would use up the cell's pids limit.
"""

from __future__ import annotations

import json
import os
import signal
import sys

STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT})


def reap_children() -> None:
    """Collect every exited child without blocking."""
    while True:
        try:
            pid, _status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def main() -> int:
    """Block the signals we care about and take them one at a time, synchronously."""
    watched = {*STOP_SIGNALS, signal.SIGCHLD}
    signal.pthread_sigmask(signal.SIG_BLOCK, watched)
    # From here on a SIGTERM is held until sigwait takes it, so "ready" means stoppable.
    print(json.dumps({"event": "ready", "stop_signal": "SIGTERM"}), flush=True)
    while True:
        received = signal.sigwait(watched)
        if received in STOP_SIGNALS:
            return 0
        reap_children()


if __name__ == "__main__":
    sys.exit(main())
