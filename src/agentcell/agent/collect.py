"""Host counters from the host's /proc and /sys, mounted read-only at /host/proc and /host/sys.

Network counters come from ``/sys/class/net``: sysfs shows the network namespace of whoever
mounted it (the host), while ``/proc/net`` follows the *reader's* namespace, which in a
``network: none`` cell holds only loopback. Disks are the entries of ``/sys/block`` (whole
devices; partitions would count twice), without loop and RAM devices.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["Collector", "CpuTimes", "HostPaths"]

SECTOR_BYTES = 512
_NET_COUNTERS = ("rx_bytes", "tx_bytes", "rx_packets", "tx_packets", "rx_errors", "tx_errors")
_VIRTUAL_DISKS = ("loop", "ram", "zram")


class HostPaths:
    """Where the host's pseudo-filesystems are mounted in the cell."""

    __slots__ = ("proc", "sys")

    def __init__(self, *, proc: Path, sys: Path) -> None:
        self.proc = proc
        self.sys = sys

    @classmethod
    def under(cls, root: Path) -> HostPaths:
        """``root/proc`` and ``root/sys``."""
        return cls(proc=root / "proc", sys=root / "sys")


class CpuTimes:
    """Cumulative jiffies from the ``cpu`` line of /proc/stat."""

    __slots__ = ("busy", "total")

    def __init__(self, busy: int, total: int) -> None:
        self.busy = busy
        self.total = total


def parse_stat(text: str) -> tuple[CpuTimes, dict[str, float]]:
    """CPU times and scalar counters (cpu count, running/blocked tasks, forks) from /proc/stat."""
    cpu = CpuTimes(0, 0)
    values: dict[str, float] = {}
    count = 0
    for line in text.splitlines():
        fields = line.split()
        if not fields:
            continue
        if fields[0] == "cpu":
            # user nice system idle iowait irq softirq steal; guest time is already in user.
            jiffies = [int(value) for value in fields[1:9]]
            idle = jiffies[3] + (jiffies[4] if len(jiffies) > 4 else 0)
            cpu = CpuTimes(busy=sum(jiffies) - idle, total=sum(jiffies))
        elif fields[0].startswith("cpu") and fields[0][3:].isdigit():
            count += 1
        elif fields[0] == "procs_running":
            values["processes.running"] = float(fields[1])
        elif fields[0] == "procs_blocked":
            values["processes.blocked"] = float(fields[1])
        elif fields[0] == "processes":
            values["processes.forks"] = float(fields[1])
        elif fields[0] == "ctxt":
            values["cpu.context_switches"] = float(fields[1])
    values["cpu.count"] = float(count)
    return cpu, values


def parse_meminfo(text: str) -> dict[str, float]:
    """Memory and swap in bytes, and the used share of memory, from /proc/meminfo."""
    kib: dict[str, int] = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            kib[name] = int(parts[0])
    total = kib.get("MemTotal", 0) * 1024
    available = kib.get("MemAvailable", kib.get("MemFree", 0)) * 1024
    swap_total = kib.get("SwapTotal", 0) * 1024
    swap_free = kib.get("SwapFree", 0) * 1024
    values = {
        "memory.total_bytes": float(total),
        "memory.available_bytes": float(available),
        "memory.used_bytes": float(total - available),
        "swap.total_bytes": float(swap_total),
        "swap.used_bytes": float(swap_total - swap_free),
    }
    if total:
        values["memory.used_ratio"] = round((total - available) / total, 6)
    return values


def parse_loadavg(text: str) -> dict[str, float]:
    """The 1, 5 and 15 minute load averages."""
    fields = text.split()
    return {"load.1m": float(fields[0]), "load.5m": float(fields[1]), "load.15m": float(fields[2])}


def parse_diskstats(text: str, disks: set[str]) -> dict[str, float]:
    """Bytes read and written and time spent on I/O, summed over the whole disks named."""
    read = written = io_ms = 0
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 14 or fields[2] not in disks:
            continue
        read += int(fields[5])
        written += int(fields[9])
        io_ms += int(fields[12])
    return {
        "disk.read_bytes": float(read * SECTOR_BYTES),
        "disk.write_bytes": float(written * SECTOR_BYTES),
        "disk.io_ms": float(io_ms),
    }


class Collector:
    """Takes one sample of host counters at a time; CPU use is the change since the last."""

    def __init__(self, paths: HostPaths) -> None:
        self.paths = paths
        self._previous_cpu: CpuTimes | None = None
        self.failures: dict[str, str] = {}

    def sample(self) -> dict[str, float]:
        """Every counter that can be read now. A group that fails is left out and its reason
        kept in ``failures`` (the caller logs it once), so one unreadable file costs one group."""
        values: dict[str, float] = {}
        for group, read in (
            ("cpu", self._cpu),
            ("memory", self._memory),
            ("load", self._load),
            ("uptime", self._uptime),
            ("network", self._network),
            ("disk", self._disk),
        ):
            try:
                values.update(read())
            except (OSError, ValueError, IndexError) as exc:
                self.failures[group] = f"{exc.__class__.__name__}: {exc}"
            else:
                self.failures.pop(group, None)
        return values

    def _cpu(self) -> dict[str, float]:
        cpu, values = parse_stat((self.paths.proc / "stat").read_text())
        previous, self._previous_cpu = self._previous_cpu, cpu
        if previous is not None and cpu.total > previous.total:
            values["cpu.utilization"] = round(
                (cpu.busy - previous.busy) / (cpu.total - previous.total), 6
            )
        return values

    def _memory(self) -> dict[str, float]:
        return parse_meminfo((self.paths.proc / "meminfo").read_text())

    def _load(self) -> dict[str, float]:
        return parse_loadavg((self.paths.proc / "loadavg").read_text())

    def _uptime(self) -> dict[str, float]:
        return {"host.uptime_seconds": float((self.paths.proc / "uptime").read_text().split()[0])}

    def _network(self) -> dict[str, float]:
        totals = dict.fromkeys(_NET_COUNTERS, 0)
        interfaces = 0
        for interface in sorted((self.paths.sys / "class" / "net").iterdir()):
            if interface.name == "lo":
                continue
            interfaces += 1
            statistics = interface / "statistics"
            for counter in _NET_COUNTERS:
                totals[counter] += int((statistics / counter).read_text())
        values = {f"net.{name}": float(total) for name, total in totals.items()}
        values["net.interfaces"] = float(interfaces)
        return values

    def _disk(self) -> dict[str, float]:
        disks = {
            entry.name
            for entry in (self.paths.sys / "block").iterdir()
            if not entry.name.startswith(_VIRTUAL_DISKS)
        }
        return parse_diskstats((self.paths.proc / "diskstats").read_text(), disks)
