"""Healthcheck: a sandbox is usable when its scratch space (/tmp, a tmpfs) takes a write."""

from __future__ import annotations

import sys
import tempfile


def main() -> int:
    """Exit 0 when a file can be created in /tmp, 1 with the reason otherwise."""
    try:
        with tempfile.TemporaryFile(dir="/tmp") as scratch:
            scratch.write(b"ok")
    except OSError as exc:
        print(f"unhealthy: /tmp is not writable: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
