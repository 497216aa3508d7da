"""The checks of the cell's cgroup limits: cpu, memory, memory+swap, pids (v1 or v2)."""

from __future__ import annotations

from agentcell.spec.model import AgentSpec
from agentcell.spec.units import format_bytes
from agentcell.verify.cgroups import CgroupLimits
from agentcell.verify.compare.check import Check
from agentcell.verify.facts import Reading

__all__ = [
    "cgroup_checks",
]


def _bytes_text(value: int | None) -> str:
    return "unlimited" if value is None else format_bytes(value)


def cgroup_checks(spec: AgentSpec, reading: Reading[CgroupLimits]) -> list[Check]:
    resources = spec.resources
    limits = reading.value
    if limits is None:
        return [
            Check.unknown(
                id="cgroup.cpu", title="cpu limit", expected=f"{resources.cpus:g}", reading=reading
            ),
            Check.unknown(
                id="cgroup.memory",
                title="memory limit",
                expected=format_bytes(resources.memory),
                reading=reading,
            ),
            Check.unknown(
                id="cgroup.memory-swap",
                title="memory+swap limit",
                expected=format_bytes(resources.memory_swap),
                reading=reading,
            ),
            Check.unknown(
                id="cgroup.pids", title="pids limit", expected=str(resources.pids), reading=reading
            ),
        ]
    version = f"cgroup v{limits.version}"

    cpus = limits.cpus
    quota_text = (
        "unlimited"
        if cpus is None
        else f"{cpus:g} ({limits.cpu_quota_us}/{limits.cpu_period_us} us)"
    )
    checks = [
        Check.judged(
            id="cgroup.cpu",
            title="cpu limit (quota/period)",
            ok=cpus is not None and abs(cpus - resources.cpus) < 0.001,
            expected=f"{resources.cpus:g}",
            observed=f"{quota_text} ({version})",
            source=limits.sources.get("cpu", reading.source),
            basis="kernel",
        ),
        Check.judged(
            id="cgroup.memory",
            title="memory limit",
            ok=limits.memory_bytes == resources.memory,
            expected=format_bytes(resources.memory),
            observed=f"{_bytes_text(limits.memory_bytes)} ({version})",
            source=limits.sources.get("memory", reading.source),
            basis="kernel",
        ),
    ]
    if not limits.swap_accounting:
        checks.append(
            Check(
                id="cgroup.memory-swap",
                title="memory+swap limit",
                status="not-enforced",
                expected=format_bytes(resources.memory_swap),
                observed="no swap accounting",
                source=limits.sources.get("memory-swap", reading.source),
                basis="kernel",
                why="this kernel does not account swap per cgroup (boot with swapaccount=1 on v1)",
            )
        )
    else:
        checks.append(
            Check.judged(
                id="cgroup.memory-swap",
                title="memory+swap limit",
                ok=limits.memory_swap_bytes == resources.memory_swap,
                expected=format_bytes(resources.memory_swap),
                observed=f"{_bytes_text(limits.memory_swap_bytes)} ({version})",
                source=limits.sources.get("memory-swap", reading.source),
                basis="kernel",
            )
        )
    checks.append(
        Check.judged(
            id="cgroup.pids",
            title="pids limit",
            ok=limits.pids_max == resources.pids,
            expected=str(resources.pids),
            observed=("unlimited" if limits.pids_max is None else str(limits.pids_max))
            + f" ({version})",
            source=limits.sources.get("pids", reading.source),
            basis="kernel",
        )
    )
    return checks
