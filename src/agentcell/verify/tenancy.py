"""The tenant's cgroup parent of a cell, read back from cgroupfs.

A tenant's quota is a kernel limit on the sum of its cells only if every cell really sits
under the tenant's parent (``/agentcell/<tenant>``) and the parent's limit files hold the
quota. ``cgroup.tenant`` reads the cell's cgroup from ``/proc/<pid>/cgroup``, checks that its
parent is the tenant's, and compares the parent's limits with the ones agentcell recorded when
it wrote them. Pure over a file tree (:class:`~agentcell.verify.facts.HostPaths`).
"""

from __future__ import annotations

import dataclasses

from agentcell.cell.names import cgroup_parent
from agentcell.cell.quota import TenantLimits
from agentcell.spec.units import format_bytes
from agentcell.verify.cgroups import (
    CgroupLimits,
    cgroup_mounts,
    parse_proc_cgroup,
    place,
    read_limits,
)
from agentcell.verify.compare import Check
from agentcell.verify.facts import HostPaths
from agentcell.verify.procfs import KernelReadError, read_mountinfo, read_text

__all__ = ["tenant_check"]

_TITLE = "the cell sits in its tenant's cgroup parent, which holds the tenant's quota"


def _shown(limits: TenantLimits) -> str:
    parts = [
        f"cpus {limits.cpus:g}" if limits.cpus is not None else "cpus unlimited",
        f"memory {format_bytes(limits.memory)}" if limits.memory else "memory unlimited",
        f"pids {limits.pids}" if limits.pids is not None else "pids unlimited",
    ]
    return ", ".join(parts)


def _as_tenant_limits(limits: CgroupLimits) -> TenantLimits:
    return TenantLimits(cpus=limits.cpus, memory=limits.memory_bytes, pids=limits.pids_max)


def tenant_check(
    *, tenant: str, pid: int, expected: TenantLimits | None, paths: HostPaths
) -> Check:
    """Whether the cell whose host process is ``pid`` is under ``tenant``'s cgroup parent, and
    whether that parent holds ``expected`` (the limits agentcell wrote; None: it wrote none)."""
    parent = cgroup_parent(tenant)
    source = f"{paths.proc / str(pid) / 'cgroup'} -> cgroupfs (the parent's limit files)"
    wanted = "under " + parent + (f" with {_shown(expected)}" if expected else "")
    try:
        membership = parse_proc_cgroup(read_text(paths.proc / str(pid) / "cgroup"))
        placement = place(
            membership, cgroup_mounts(read_mountinfo(paths.proc, "self"), root=paths.root)
        )
        paths_in = [
            *(membership.v1.get(controller, "") for controller in ("cpu", "memory", "pids")),
            membership.unified or "",
        ]
        parents = {path.rstrip("/").rpartition("/")[0] for path in paths_in if path}
        if parents != {parent}:
            return Check(
                id="cgroup.tenant",
                title=_TITLE,
                status="mismatch",
                expected=wanted,
                observed=f"cgroup parent {', '.join(sorted(parents)) or 'none'}",
                source=source,
                basis="kernel",
                why="a cell outside its tenant's parent is not bounded by the tenant's quota",
            )
        up_one = dataclasses.replace(
            placement,
            directories={name: path.parent for name, path in placement.directories.items()},
        )
        held = _as_tenant_limits(read_limits(up_one))
    except KernelReadError as exc:
        return Check(
            id="cgroup.tenant",
            title=_TITLE,
            status="unknown",
            expected=wanted,
            observed="unreadable",
            source=source,
            basis="kernel",
            why=exc.what,
        )
    if expected is None:
        return Check(
            id="cgroup.tenant",
            title=_TITLE,
            status="verified",
            expected=f"under {parent}",
            observed=f"under {parent} ({_shown(held)}; the tenant declares no quota here)",
            source=source,
            basis="kernel",
        )
    matches = held == expected
    return Check(
        id="cgroup.tenant",
        title=_TITLE,
        status="verified" if matches else "mismatch",
        expected=wanted,
        observed=f"under {parent} with {_shown(held)}",
        source=source,
        basis="kernel",
        why="" if matches else "the parent's limit files differ from the quota agentcell wrote",
    )
