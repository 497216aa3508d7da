"""Healthcheck: healthy while the agent's loop has run within the last three intervals.

The loop touches ``alive`` in the state directory each tick; a loop stuck for three intervals
(a hung read of /host/proc, a wedged connection) turns the cell unhealthy.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

MISSED_TICKS_ALLOWED = 3
# Enrolment may wait for an unreachable control plane; allow that much before the first tick.
GRACE_S = 60.0


def main() -> int:
    """Exit 0 when the heartbeat is fresh, 1 with a reason otherwise."""
    state = Path(os.environ.get("AGENTCELL_STATE_DIR", "/tmp/agentcell"))
    try:
        interval = float(os.environ.get("AGENTCELL_INTERVAL", "5"))
        age = time.time() - (state / "alive").stat().st_mtime
    except (OSError, ValueError) as exc:
        print(f"unhealthy: {exc}")
        return 1
    limit = max(MISSED_TICKS_ALLOWED * interval, GRACE_S)
    if age > limit:
        print(f"unhealthy: the agent's loop last ran {age:.0f}s ago (limit {limit:.0f}s)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
