"""Quota admission: a batch that would take a tenant over any quota is refused with the numbers.

What counts is what the tenant's cells on the host use now (by their limits, which is what
they may take) plus the whole batch, minus the cells the batch replaces or keeps (they are
counted once, as the batch asks for them). Pure: the caller reads the host.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from agentcell.errors import AdmissionError, Location
from agentcell.policy.admission import AdmittedSpec
from agentcell.spec.tenant import TenantQuota
from agentcell.spec.units import format_bytes

__all__ = ["QuotaUse", "check_quota", "overruns", "quota_below_use", "use_of_specs"]


@dataclass(frozen=True, kw_only=True)
class QuotaUse:
    """What cells of one tenant take, summed."""

    cpus: float = 0.0
    memory: int = 0
    pids: int = 0
    cells: int = 0

    def __add__(self, other: QuotaUse) -> QuotaUse:
        return QuotaUse(
            cpus=self.cpus + other.cpus,
            memory=self.memory + other.memory,
            pids=self.pids + other.pids,
            cells=self.cells + other.cells,
        )


def use_of_specs(specs: Iterable[AdmittedSpec]) -> QuotaUse:
    """What the cells of ``specs`` will take."""
    total = QuotaUse()
    for spec in specs:
        resources = spec.doc.document.spec.resources
        total += QuotaUse(
            cpus=resources.cpus, memory=resources.memory, pids=resources.pids, cells=1
        )
    return total


def _over(quota: TenantQuota, in_use: QuotaUse, asked: QuotaUse) -> list[str]:
    over = []
    if quota.cpus is not None and in_use.cpus + asked.cpus > quota.cpus + 1e-9:
        over.append(f"cpus {in_use.cpus:g} in use + {asked.cpus:g} asked > {quota.cpus:g} quota")
    if quota.memory is not None and in_use.memory + asked.memory > quota.memory:
        over.append(
            f"memory {format_bytes(in_use.memory)} in use + {format_bytes(asked.memory)} "
            f"asked > {format_bytes(quota.memory)} quota"
        )
    if quota.pids is not None and in_use.pids + asked.pids > quota.pids:
        over.append(f"pids {in_use.pids} in use + {asked.pids} asked > {quota.pids} quota")
    if quota.cells is not None and in_use.cells + asked.cells > quota.cells:
        over.append(f"cells {in_use.cells} in use + {asked.cells} asked > {quota.cells} quota")
    return over


def check_quota(
    tenant: str,
    quota: TenantQuota,
    in_use: QuotaUse,
    batch: Sequence[AdmittedSpec],
    *,
    where: Location | None = None,
) -> None:
    """Refuse ``batch`` if its cells together with ``in_use`` exceed ``quota`` (also an empty
    batch: a quota lowered below what already runs).

    Raises:
        AdmissionError: every limit the batch would exceed, with the numbers.
    """
    over = overruns(tenant, quota, in_use, batch)
    if over:
        if where is None and batch:
            where = Location(file=batch[0].doc.file, line=batch[0].doc.line)
        raise AdmissionError(
            "\n".join(over) + "\nnothing was launched",
            where=where,
            fix=f"lower the cells' resources, remove cells of {tenant}, or raise its quota",
        )


def overruns(
    tenant: str, quota: TenantQuota, in_use: QuotaUse, batch: Sequence[AdmittedSpec]
) -> list[str]:
    """One line per limit of ``quota`` that ``in_use`` plus ``batch`` exceeds, with the
    numbers (``tenant acme: memory 1536m in use + 768m asked > 2g quota``)."""
    return [f"tenant {tenant}: {line}" for line in _over(quota, in_use, use_of_specs(batch))]


def quota_below_use(quota: TenantQuota, in_use: QuotaUse) -> list[str]:
    """The limits of ``quota`` that are already below what the tenant's cells use."""
    return _over(quota, in_use, QuotaUse())
