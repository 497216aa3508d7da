"""A tenant's cgroup parent, with its quota written as kernel limits.

Every cell of a tenant is created under ``/agentcell/<tenant>`` (the engine's cgroup parent
option), so the kernel bounds the *sum* of the tenant's cells, not only each one. agentcell
makes the parent before the first cell and writes the tenant's limits into it: on cgroup v1
``cpu.cfs_quota_us``, ``memory.limit_in_bytes`` (and ``memory.memsw.limit_in_bytes``) and
``pids.max`` in their controllers' hierarchies; on cgroup v2 ``cpu.max``, ``memory.max``,
``memory.swap.max`` (0: the quota is of memory, not swap) and ``pids.max``, after enabling the
controllers for the children. A limit the tenant does not set is written as unlimited, so a
lowered quota never leaves an old one behind. The parent is removed with the tenant's last cell
(the engine leaves it behind). Other controllers' directories are the runtime's to make.
"""

from __future__ import annotations

import contextlib
import errno
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from agentcell.cell.names import CGROUP_ROOT, cgroup_parent
from agentcell.cell.paths import run_dir
from agentcell.cell.quota import CFS_PERIOD_US, TenantLimits
from agentcell.errors import HostError

__all__ = ["CFS_PERIOD_US", "CGROUP_FS", "TenantCgroup", "TenantLimits"]

CGROUP_FS = Path("/sys/fs/cgroup")
_V1_CONTROLLERS = ("cpu", "memory", "pids")


@dataclass(frozen=True, kw_only=True)
class TenantCgroup:
    """The cgroup parent of one tenant's cells on this host (cgroup v1 or v2)."""

    tenant: str
    version: str
    """``"1"`` or ``"2"``, as the engine reports it."""
    root: Path = CGROUP_FS
    records: Path | None = None
    """Where the limits agentcell wrote are recorded (default ``<run dir>/tenants``), so
    ``verify`` compares the kernel's files with what was asked."""

    @property
    def record(self) -> Path:
        """The JSON record of the limits last written for this tenant."""
        return (self.records or run_dir() / "tenants") / f"{self.tenant}.json"

    def recorded(self) -> TenantLimits | None:
        """The limits last written, or None when agentcell wrote none."""
        try:
            data = json.loads(self.record.read_text(encoding="utf-8"))
            return TenantLimits(
                cpus=data.get("cpus"), memory=data.get("memory"), pids=data.get("pids")
            )
        except (OSError, ValueError, AttributeError):
            return None

    @property
    def parent(self) -> str:
        """The engine's ``CgroupParent`` value."""
        return cgroup_parent(self.tenant)

    def directories(self) -> tuple[Path, ...]:
        """The tenant's directories: one per limited controller on v1, one on v2."""
        relative = self.parent.lstrip("/")
        if self.version == "2":
            return (self.root / relative,)
        return tuple(self.root / controller / relative for controller in _V1_CONTROLLERS)

    def ensure(self, limits: TenantLimits) -> None:
        """Make the parent if needed and write ``limits`` into it.

        Raises:
            HostError: the cgroup files cannot be written (not root, no such controller, or
                a limit below what the tenant's cells already use).
        """
        try:
            if self.version == "2":
                self._ensure_v2(limits)
            else:
                self._ensure_v1(limits)
            self.record.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.record.write_text(json.dumps(asdict(limits)), encoding="utf-8")
        except OSError as exc:
            raise HostError(
                f"cannot write tenant {self.tenant}'s cgroup limits under {self.root}: "
                f"{exc.strerror} ({exc.filename})",
                fix="run agentcell as root on a host whose engine uses the cgroupfs driver; "
                "a quota below what the tenant's cells use now cannot be written",
            ) from exc

    def _ensure_v1(self, limits: TenantLimits) -> None:
        cpu, memory, pids = self.directories()
        for directory in (cpu, memory, pids):
            directory.mkdir(parents=True, exist_ok=True)
        quota = -1 if limits.cfs_quota_us is None else limits.cfs_quota_us
        _write(cpu / "cpu.cfs_period_us", str(CFS_PERIOD_US))
        _write(cpu / "cpu.cfs_quota_us", str(quota))
        memory_limit = "-1" if limits.memory is None else str(limits.memory)
        memsw = memory / "memory.memsw.limit_in_bytes"
        # memory+swap must stay >= memory: raise memsw first when raising, memory first when
        # lowering. Writing memsw to the same value as memory keeps the tenant out of swap.
        if memsw.exists():
            with contextlib.suppress(OSError):
                _write(memsw, "-1")
        _write(memory / "memory.limit_in_bytes", memory_limit)
        if memsw.exists():
            _write(memsw, memory_limit)
        _write(pids / "pids.max", "max" if limits.pids is None else str(limits.pids))

    def _ensure_v2(self, limits: TenantLimits) -> None:
        (directory,) = self.directories()
        path = self.root
        for part in Path(self.parent.lstrip("/")).parts:
            _enable_controllers(path)
            path = path / part
            path.mkdir(exist_ok=True)
        _enable_controllers(directory)
        cpu = "max" if limits.cfs_quota_us is None else str(limits.cfs_quota_us)
        _write(directory / "cpu.max", f"{cpu} {CFS_PERIOD_US}")
        _write(directory / "memory.max", "max" if limits.memory is None else str(limits.memory))
        if (directory / "memory.swap.max").exists():
            _write(directory / "memory.swap.max", "max" if limits.memory is None else "0")
        _write(directory / "pids.max", "max" if limits.pids is None else str(limits.pids))

    def remove(self) -> None:
        """Remove the tenant's directories if no cell is left in them (and ``/agentcell`` when
        it is empty); a directory still in use stays."""
        with contextlib.suppress(OSError):
            self.record.unlink()
        relative_root = CGROUP_ROOT.lstrip("/")
        for directory in self.directories():
            with contextlib.suppress(OSError):
                directory.rmdir()
            with contextlib.suppress(OSError):
                if directory.parent.name == relative_root:
                    directory.parent.rmdir()
        if self.version != "2":
            # runc made the other controllers' directories; they go with the tenant too.
            for directory in self.root.glob(f"*/{relative_root}/{self.tenant}"):
                with contextlib.suppress(OSError):
                    directory.rmdir()
                with contextlib.suppress(OSError):
                    directory.parent.rmdir()


def _write(path: Path, value: str) -> None:
    path.write_text(value + "\n", encoding="ascii")


def _enable_controllers(directory: Path) -> None:
    """Let ``directory``'s children use the cpu, memory and pids controllers (v2)."""
    control = directory / "cgroup.subtree_control"
    wanted = {"cpu", "memory", "pids"}
    try:
        enabled = set(control.read_text(encoding="ascii").split())
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return
        raise
    missing = wanted - enabled
    if missing:
        _write(control, " ".join(f"+{name}" for name in sorted(missing)))
