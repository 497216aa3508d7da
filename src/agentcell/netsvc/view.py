"""What a tenant's services know of its network at one moment: the rules, the cells, the
gateway address. :class:`NetworkHost` makes a new :class:`TenantNetView` when the tenant's
document or its cells change and hands it to the running services through a
:class:`LiveView`, so a changed allow-list applies to the next query and connection."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field

from agentcell.netsvc.decisions import ENGINE_DNS
from agentcell.netsvc.egress import Address, EgressPolicy, Network, parse_address
from agentcell.spec.tenant import TenantNetwork

__all__ = ["LiveView", "TenantNetView"]

_LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


@dataclass(frozen=True, kw_only=True)
class TenantNetView:
    """One tenant network's facts and rules."""

    tenant: str
    gateway: Address
    """The bridge's gateway address: where the resolver and gateway listen, and the address
    the resolver gives for every allowed external name."""
    network: TenantNetwork = field(default_factory=TenantNetwork)
    subnets: tuple[Network, ...] = ()
    cells: Mapping[str, Address] = field(default_factory=dict)
    """Agent name -> its address on the tenant network."""
    version: int = 0
    """The tenant document's version in the control plane (0: none known)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "policy", EgressPolicy(self.network, private=self.subnets))
        object.__setattr__(
            self, "_by_address", {str(address): name for name, address in self.cells.items()}
        )

    policy: EgressPolicy = field(init=False, compare=False, repr=False)
    _by_address: Mapping[str, str] = field(init=False, compare=False, repr=False)

    def cell_of(self, source: str) -> str:
        """The agent name of the cell at ``source``; :data:`ENGINE_DNS` for the host's side of
        the bridge (the engine's embedded DNS forwards from there); else the address."""
        name = self._by_address.get(source)
        if name is not None:
            return name
        address = parse_address(source)
        if address is not None and (
            address == self.gateway or any(address in net for net in _LOOPBACK)
        ):
            return ENGINE_DNS
        return source


class LiveView:
    """The current :class:`TenantNetView` of a tenant, swapped whole when anything changes."""

    def __init__(self, view: TenantNetView) -> None:
        self.current = view

    def update(self, view: TenantNetView) -> None:
        """Make ``view`` the one the next query and connection see."""
        self.current = view
