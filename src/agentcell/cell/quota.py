"""A tenant's quota as kernel limits on its cgroup parent."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CFS_PERIOD_US", "TenantLimits"]

CFS_PERIOD_US = 100_000
"""The CFS period agentcell writes with a tenant's CPU quota."""


@dataclass(frozen=True, kw_only=True)
class TenantLimits:
    """The kernel limits of a tenant's cgroup parent; None is unlimited."""

    cpus: float | None = None
    memory: int | None = None
    pids: int | None = None

    @property
    def cfs_quota_us(self) -> int | None:
        """The CPU limit as a CFS quota per :data:`CFS_PERIOD_US` (at least 1 ms)."""
        return None if self.cpus is None else max(1000, round(self.cpus * CFS_PERIOD_US))
