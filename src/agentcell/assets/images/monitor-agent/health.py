"""Healthcheck: healthy while the monitor loop has beaten within the last three intervals.

Three intervals leave room for one slow read of /host/proc without flapping.
"""

from __future__ import annotations

import sys
import time

from monitor import HEARTBEAT, interval_seconds

MISSED_BEATS_ALLOWED = 3


def main() -> int:
    """Exit 0 when the heartbeat is fresh, 1 with a reason otherwise."""
    try:
        age = time.time() - HEARTBEAT.stat().st_mtime
        limit = MISSED_BEATS_ALLOWED * interval_seconds()
    except (OSError, ValueError) as exc:
        print(f"unhealthy: {exc}")
        return 1
    if age > limit:
        print(f"unhealthy: last heartbeat {age:.0f}s ago (limit {limit:.0f}s)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
