"""A minimal host monitor: one JSON line per interval from the host's /proc, mounted read-only.

Stdlib only, so the image needs nothing but python3. The cell's rootfs is read-only, so the
liveness heartbeat goes to /tmp (a tmpfs); ``health.py`` judges it.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

DEFAULT_INTERVAL_SECONDS = 5.0
HEARTBEAT = Path("/tmp/heartbeat")


def interval_seconds(environ: Mapping[str, str] = os.environ) -> float:
    """The sampling interval from ``MONITOR_INTERVAL`` (seconds, > 0)."""
    raw = environ.get("MONITOR_INTERVAL", "")
    if not raw:
        return DEFAULT_INTERVAL_SECONDS
    value = float(raw)
    if not value > 0:
        raise ValueError(f"MONITOR_INTERVAL must be a positive number of seconds, got {raw!r}")
    return value


@dataclass(frozen=True)
class CpuTimes:
    """Cumulative jiffies from the first line of /proc/stat."""

    busy: int
    total: int


def read_loadavg(proc: Path) -> list[float]:
    """The 1, 5 and 15 minute load averages."""
    fields = (proc / "loadavg").read_text().split()
    return [float(field) for field in fields[:3]]


def read_meminfo(proc: Path) -> dict[str, int]:
    """MemTotal and MemAvailable in KiB."""
    wanted = {"MemTotal": "mem_total_kib", "MemAvailable": "mem_available_kib"}
    found: dict[str, int] = {}
    for line in (proc / "meminfo").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in wanted:
            found[wanted[key]] = int(rest.split()[0])
    return found


def read_cpu(proc: Path) -> CpuTimes:
    """Busy and total jiffies; idle and iowait count as not busy."""
    with (proc / "stat").open() as stat:
        fields = stat.readline().split()
    # cpu user nice system idle iowait irq softirq steal guest guest_nice;
    # guest time is already counted in user and nice, so it is left out of the total.
    ticks = [int(field) for field in fields[1:9]]
    idle = ticks[3] + ticks[4]
    return CpuTimes(busy=sum(ticks) - idle, total=sum(ticks))


def busy_percent(before: CpuTimes | None, after: CpuTimes) -> float | None:
    """CPU busy share between two samples, or None before there are two."""
    if before is None or after.total <= before.total:
        return None
    return round(100.0 * (after.busy - before.busy) / (after.total - before.total), 1)


def beat() -> None:
    """Mark the loop alive; replaced atomically so a reader never sees a partial file."""
    partial = HEARTBEAT.with_name(HEARTBEAT.name + ".partial")
    partial.write_text(f"{time.time():.3f}\n")
    partial.replace(HEARTBEAT)


def run(proc: Path, interval: float, stop: threading.Event) -> None:
    """Sample until ``stop`` is set. A failed read is reported and leaves the heartbeat stale."""
    previous: CpuTimes | None = None
    while not stop.is_set():
        sample: dict[str, object] = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        try:
            cpu = read_cpu(proc)
            sample["loadavg"] = read_loadavg(proc)
            sample.update(read_meminfo(proc))
            sample["cpu_busy_percent"] = busy_percent(previous, cpu)
        except (OSError, ValueError, IndexError) as exc:
            # A monitor that cannot see the host is not healthy: say why and skip the heartbeat.
            sample["error"] = f"cannot read {proc}: {exc}"
        else:
            previous = cpu
            beat()
        print(json.dumps(sample), flush=True)
        stop.wait(interval)


def main() -> int:
    """Run until SIGTERM or SIGINT. As PID 1 the process must handle SIGTERM itself."""
    try:
        interval = interval_seconds()
    except ValueError as exc:
        print(f"monitor: {exc}", file=sys.stderr)
        return 2
    proc = Path(os.environ.get("MONITOR_HOST_PROC", "/host/proc"))
    stop = threading.Event()

    def request_stop(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    run(proc, interval, stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
