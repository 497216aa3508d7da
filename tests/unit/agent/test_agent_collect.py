"""Host counters parsed from /proc and /sys text, and a collector over a fake host tree."""

from __future__ import annotations

from pathlib import Path

from agentcell.agent.collect import (
    Collector,
    HostPaths,
    parse_diskstats,
    parse_loadavg,
    parse_meminfo,
    parse_stat,
)

STAT = """cpu  100 0 50 800 50 0 0 0 0 0
cpu0 50 0 25 400 25 0 0 0 0 0
cpu1 50 0 25 400 25 0 0 0 0 0
ctxt 12345
processes 678
procs_running 3
procs_blocked 1
"""
MEMINFO = """MemTotal:        1000 kB
MemFree:          100 kB
MemAvailable:     400 kB
SwapTotal:        200 kB
SwapFree:         150 kB
"""
DISKSTATS = """   8       0 sda 10 0 100 5 20 0 200 7 0 30 12 0 0 0 0
   8       1 sda1 10 0 100 5 20 0 200 7 0 30 12 0 0 0 0
   7       0 loop0 1 0 8 0 0 0 0 0 0 0 0 0 0 0 0
"""


def test_stat() -> None:
    cpu, values = parse_stat(STAT)
    assert (cpu.busy, cpu.total) == (150, 1000)
    assert values == {
        "cpu.count": 2.0,
        "cpu.context_switches": 12345.0,
        "processes.forks": 678.0,
        "processes.running": 3.0,
        "processes.blocked": 1.0,
    }


def test_meminfo() -> None:
    values = parse_meminfo(MEMINFO)
    assert values["memory.total_bytes"] == 1000 * 1024
    assert values["memory.used_bytes"] == 600 * 1024
    assert values["memory.used_ratio"] == 0.6
    assert values["swap.used_bytes"] == 50 * 1024


def test_loadavg_and_whole_disks_only() -> None:
    assert parse_loadavg("0.50 0.25 0.10 1/100 999\n") == {
        "load.1m": 0.5,
        "load.5m": 0.25,
        "load.15m": 0.1,
    }
    values = parse_diskstats(DISKSTATS, {"sda"})
    assert values == {"disk.read_bytes": 51200.0, "disk.write_bytes": 102400.0, "disk.io_ms": 30.0}


def _host(root: Path, stat: str) -> None:
    (root / "proc").mkdir(exist_ok=True)
    (root / "proc" / "stat").write_text(stat)
    (root / "proc" / "meminfo").write_text(MEMINFO)
    (root / "proc" / "loadavg").write_text("1.0 2.0 3.0 1/1 1\n")
    (root / "proc" / "uptime").write_text("123.4 200.0\n")
    (root / "proc" / "diskstats").write_text(DISKSTATS)
    for name in ("sda", "loop0"):
        (root / "sys" / "block" / name).mkdir(parents=True, exist_ok=True)
    for interface, rx in (("lo", 999), ("eth0", 10), ("eth1", 5)):
        statistics = root / "sys" / "class" / "net" / interface / "statistics"
        statistics.mkdir(parents=True, exist_ok=True)
        for counter in (
            "rx_bytes",
            "tx_bytes",
            "rx_packets",
            "tx_packets",
            "rx_errors",
            "tx_errors",
        ):
            (statistics / counter).write_text(f"{rx}\n")


def test_collector_reports_cpu_use_from_the_second_sample(tmp_path: Path) -> None:
    _host(tmp_path, STAT)
    collector = Collector(HostPaths.under(tmp_path))
    first = collector.sample()
    assert "cpu.utilization" not in first
    assert first["net.rx_bytes"] == 15.0  # loopback left out
    assert first["net.interfaces"] == 2.0
    assert first["disk.read_bytes"] == 51200.0  # loop0 and the partition left out
    assert first["host.uptime_seconds"] == 123.4
    (tmp_path / "proc" / "stat").write_text(STAT.replace("cpu  100 0 50 800", "cpu  200 0 100 850"))
    assert collector.sample()["cpu.utilization"] == 0.75  # 150 busy of 200 jiffies
    assert collector.failures == {}


def test_an_unreadable_group_is_left_out_and_reported(tmp_path: Path) -> None:
    _host(tmp_path, STAT)
    (tmp_path / "proc" / "diskstats").unlink()
    collector = Collector(HostPaths.under(tmp_path))
    values = collector.sample()
    assert "disk.read_bytes" not in values
    assert "load.1m" in values
    assert set(collector.failures) == {"disk"}
