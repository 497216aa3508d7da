"""A tenant's network, as every layer names it: its engine network, its bridge, its nftables
tables, and the ports agentcell serves the tenant on the bridge's gateway address.

Each tenant has one internal network. Its cells reach, besides each other (when the tenant
allows intra-tenant traffic), only the gateway address, and there only :data:`RESOLVER_PORT`
(udp and tcp: the tenant's resolver), :data:`PROXY_PORT` (the egress gateway, HTTP CONNECT) and
:data:`SNI_PORT` (the egress gateway, TLS by server name). Host rules drop everything else.
"""

from __future__ import annotations

from agentcell.cell.names import NAME_PREFIX, NAME_SEPARATOR

__all__ = [
    "BRIDGE_PREFIX",
    "NFT_TABLE_PREFIX",
    "PROXY_PORT",
    "RESOLVER_PORT",
    "SERVED_TCP_PORTS",
    "SNI_PORT",
    "TENANT_NETWORK",
    "nft_table",
    "tenant_bridge",
    "tenant_network",
]

TENANT_NETWORK = "tenant"
"""What a spec writes (``network: tenant``) to join its tenant's network."""
BRIDGE_PREFIX = "ac-"
"""Bridges are ``ac-<tenant>``: at most 15 characters (IFNAMSIZ - 1) for a 12-character tenant."""
NFT_TABLE_PREFIX = NAME_PREFIX + NAME_SEPARATOR
"""nftables tables are ``agentcell_<tenant>`` (family ``inet`` and, without intra-tenant
traffic, ``bridge``)."""
RESOLVER_PORT = 53
PROXY_PORT = 3128
SNI_PORT = 443
SERVED_TCP_PORTS = (RESOLVER_PORT, PROXY_PORT, SNI_PORT)


def tenant_network(tenant: str) -> str:
    """The engine network of ``tenant``: ``agentcell_<tenant>``."""
    return NAME_SEPARATOR.join((NAME_PREFIX, tenant))


def tenant_bridge(tenant: str) -> str:
    """The Linux bridge behind the tenant's network: ``ac-<tenant>``."""
    return BRIDGE_PREFIX + tenant


def nft_table(tenant: str) -> str:
    """The name of the tenant's nftables tables: ``agentcell_<tenant>``."""
    return NFT_TABLE_PREFIX + tenant
