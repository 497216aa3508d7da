"""Container and network names of cells.

Tenants and names are DNS labels: letters, digits and '-', never '_'. Joining them with '_'
makes the name injective: ("ux", "a-x") and ("ux-a", "x") were both ``agentcell-ux-a-x`` under
the old '-' scheme, and one tenant's ``up`` replaced the other's cell.
"""

from __future__ import annotations

__all__ = [
    "CGROUP_ROOT",
    "LEGACY_PREFIX",
    "NAME_PREFIX",
    "NAME_SEPARATOR",
    "TENANT_MAX",
    "cgroup_parent",
    "container_name",
]

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
"""Tenants, agent names and network names: a DNS label (never '_' or '.')."""
TENANT_MAX = 12
NAME_MAX = 40
"""Lengths that keep ``agentcell_<tenant>_<name>`` within one DNS label (63) on Kubernetes."""

NAME_SEPARATOR = "_"
NAME_PREFIX = "agentcell"
LEGACY_PREFIX = "agentcell-"
"""The old scheme, ``agentcell-<tenant>-<name>``: cells under it are found and migrated."""


def container_name(tenant: str, name: str) -> str:
    """The container name of a cell: ``agentcell_<tenant>_<name>``, one per (tenant, name)."""
    return NAME_SEPARATOR.join((NAME_PREFIX, tenant, name))


CGROUP_ROOT = "/agentcell"
"""Under the engine's cgroup root: one directory per tenant holds that tenant's cells."""


def cgroup_parent(tenant: str) -> str:
    """The cgroup parent of a tenant's cells: ``/agentcell/<tenant>`` (one path component per
    tenant, so no tenant's parent is another's)."""
    return f"{CGROUP_ROOT}/{tenant}"
