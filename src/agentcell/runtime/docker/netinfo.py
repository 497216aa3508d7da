"""What the tenant network services need to know of each tenant network, read from the engine:
its gateway address and subnets (IPAM) and the address of each cell on it, by agent name.

A container counts as a cell of the tenant only when its name is the cell name
``agentcell_<tenant>_<agent>`` (which no image can set) and its ``org.agentcell.agent`` label
agrees; anything else on the network is no one's name.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import docker

from agentcell.cell.labels import LABEL_AGENT
from agentcell.cell.names import DNS_LABEL, container_name
from agentcell.runtime.docker.client import connect, translated
from agentcell.runtime.docker.networks import TenantNetworks

__all__ = ["EngineNetworks", "TenantNetworkInfo"]

_AGENT = re.compile(DNS_LABEL)


@dataclass(frozen=True, kw_only=True)
class TenantNetworkInfo:
    """One tenant network as its services see it."""

    tenant: str
    network: str
    gateway: str
    subnets: tuple[str, ...]
    cells: Mapping[str, str] = field(default_factory=dict)
    """Agent name -> IPv4 address on this network."""


class EngineNetworks:
    """Reads every tenant network agentcell made on one engine."""

    def __init__(self, client: docker.DockerClient | None = None) -> None:
        self._own = client is None
        self.client = client if client is not None else connect()

    def tenant_networks(self) -> list[TenantNetworkInfo]:
        """Every tenant network with its cells.

        Raises:
            EngineUnavailable: the engine does not answer.
            BackendError: the engine refused a call.
        """
        found = []
        for state in TenantNetworks(self.client).all():
            with translated("inspect network", subject=state.name):
                attrs = self.client.api.inspect_network(state.name)
                containers = self.client.api.containers(filters={"network": [state.name]})
            found.append(
                TenantNetworkInfo(
                    tenant=state.tenant,
                    network=state.name,
                    gateway=state.gateway,
                    subnets=state.subnets,
                    cells=_cells(state.tenant, attrs.get("Containers") or {}, containers),
                )
            )
        return found

    def close(self) -> None:
        """Close the engine connection this reader opened."""
        if self._own:
            self.client.close()


def _cells(
    tenant: str,
    attached: Mapping[str, Mapping[str, str]],
    containers: Sequence[Mapping[str, object]],
) -> dict[str, str]:
    labels_by_id = {
        str(c.get("Id")): c.get("Labels") or {} for c in containers if isinstance(c, Mapping)
    }
    cells = {}
    for container_id, entry in attached.items():
        name = str(entry.get("Name") or "")
        labels = labels_by_id.get(container_id)
        agent = labels.get(LABEL_AGENT) if isinstance(labels, Mapping) else None
        if not isinstance(agent, str) or not _AGENT.match(agent):
            continue
        if name != container_name(tenant, agent):
            continue
        address = str(entry.get("IPv4Address") or "").partition("/")[0]
        try:
            ipaddress.IPv4Address(address)
        except ValueError:
            continue
        cells[agent] = address
    return cells
