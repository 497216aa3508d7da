"""``NetworkHost``: the resolver and egress gateway of every tenant network on this host.

Every ``poll_interval`` (1 s) it reads the tenant networks from the engine (gateway address,
subnets, each cell's address) and the tenants' documents from the control plane, then starts
the services of a new network on its gateway address, stops those of a network that is gone,
and hands the running ones a new view when a document or a cell changed. So an ``apply`` that
changes a tenant's allow-list reaches its running cells within two polls, without restarting
them.

It fails closed: a tenant without a document gets ``egress: none``; when the control plane does
not answer, the documents last read stay in force (and none means none). Names outside the
tenant resolve only through the upstream given (``AGENTCELL_DNS_UPSTREAM`` or the
``upstream`` argument); with none, no external name resolves.

``agentcell net serve`` runs it in the foreground (:meth:`NetworkHost.serve`); the sandbox
daemon embeds it (``await host.run()`` in its own loop).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from agentcell.cell.network import PROXY_PORT, RESOLVER_PORT, SNI_PORT
from agentcell.cell.paths import state_dir as default_state_dir
from agentcell.errors import Error
from agentcell.netsvc.decisions import DecisionLog, decision_log_path
from agentcell.netsvc.egress import Address, Network
from agentcell.netsvc.gateway import Gateway, GatewayLimits
from agentcell.netsvc.resolver import Resolver, ResolverLimits
from agentcell.netsvc.upstream import Upstream, UpstreamResolver, upstreams_from_environ
from agentcell.netsvc.view import LiveView, TenantNetView
from agentcell.runtime.docker.netinfo import TenantNetworkInfo
from agentcell.spec.tenant import TenantDocument, TenantNetwork

__all__ = [
    "NetworkHost",
    "NetworkSource",
    "ServicePorts",
    "TenantDirectory",
    "TenantRecordLike",
]

log = logging.getLogger("agentcell.netsvc")


class NetworkSource(Protocol):
    """Where the tenant networks come from (the engine: ``EngineNetworks``)."""

    def tenant_networks(self) -> list[TenantNetworkInfo]:
        """Every tenant network with its cells."""
        ...


class TenantRecordLike(Protocol):
    """A tenant as the control plane stores it."""

    @property
    def name(self) -> str: ...
    @property
    def version(self) -> int: ...
    @property
    def document(self) -> TenantDocument: ...


class TenantDirectory(Protocol):
    """Where the tenants' documents come from (the control plane: ``AdminClient``)."""

    def tenants(self) -> Sequence[TenantRecordLike]:
        """Every tenant's current document."""
        ...


@dataclass(frozen=True, kw_only=True)
class ServicePorts:
    """Where on the gateway address the services listen (tests move them)."""

    resolver: int = RESOLVER_PORT
    proxy: int = PROXY_PORT
    sni: int = SNI_PORT


@dataclass
class _Running:
    gateway: str
    live: LiveView
    resolver: Resolver
    egress: Gateway
    log: DecisionLog


class NetworkHost:
    """Runs and follows the services of every tenant network."""

    def __init__(
        self,
        *,
        networks: NetworkSource,
        directory: TenantDirectory | None,
        upstream: Sequence[Upstream] | None = None,
        state_dir: Path | None = None,
        poll_interval: float = 1.0,
        ports: ServicePorts | None = None,
        resolver_limits: ResolverLimits | None = None,
        gateway_limits: GatewayLimits | None = None,
        tls_port: int = SNI_PORT,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        """``upstream`` None reads ``AGENTCELL_DNS_UPSTREAM`` from ``environ``; ``()`` is no
        upstream at all. ``directory`` None: no tenant documents (every tenant egress none).

        Raises:
            InvalidInput: ``AGENTCELL_DNS_UPSTREAM`` is malformed.
        """
        self.networks = networks
        self.directory = directory
        servers = upstreams_from_environ(environ) if upstream is None else tuple(upstream)
        self.upstream = UpstreamResolver(servers)
        self.state_dir = state_dir or default_state_dir(environ)
        self.poll_interval = poll_interval
        self.ports = ports or ServicePorts()
        self.resolver_limits = resolver_limits
        self.gateway_limits = gateway_limits
        self.tls_port = tls_port
        self.running: dict[str, _Running] = {}
        self._documents: dict[str, tuple[int, TenantNetwork]] = {}
        self.ready = asyncio.Event()
        """Set after the first refresh: the services of every network found are up."""

    # -- running ------------------------------------------------------------------------------

    def serve(self) -> None:
        """Run in the foreground until interrupted (``agentcell net serve``)."""
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(self.run())

    async def run(self) -> None:
        """Follow the engine and the control plane until cancelled; then stop every service."""
        try:
            while True:
                await self.refresh()
                self.ready.set()
                await asyncio.sleep(self.poll_interval)
        finally:
            await self.stop()

    async def stop(self) -> None:
        """Stop every tenant's services."""
        for tenant in list(self.running):
            await self._stop(tenant)

    async def refresh(self) -> None:
        """One round: read networks and documents, then start, stop and update services."""
        try:
            found = await asyncio.to_thread(self.networks.tenant_networks)
        except Error as exc:
            log.warning("cannot read the tenant networks: %s", exc.what)
            return
        await self._read_documents()
        wanted = {info.tenant: info for info in found}
        for tenant in [t for t in self.running if t not in wanted]:
            await self._stop(tenant)
        for tenant, info in wanted.items():
            view = self._view(info)
            running = self.running.get(tenant)
            if running is not None and running.gateway != info.gateway:
                await self._stop(tenant)
                running = None
            if running is None:
                await self._start(info, view)
            elif running.live.current != view:
                running.live.update(view)

    async def _read_documents(self) -> None:
        if self.directory is None:
            return
        try:
            records = await asyncio.to_thread(self.directory.tenants)
        except Error as exc:
            log.warning("cannot read the tenants, keeping the documents last read: %s", exc.what)
            return
        self._documents = {
            record.name: (record.version, record.document.spec.network) for record in records
        }

    def _view(self, info: TenantNetworkInfo) -> TenantNetView:
        version, network = self._documents.get(info.tenant, (0, TenantNetwork()))
        subnets: list[Network] = []
        for subnet in info.subnets:
            with contextlib.suppress(ValueError):
                subnets.append(ipaddress.ip_network(subnet, strict=False))
        cells: dict[str, Address] = {}
        for agent, address in info.cells.items():
            with contextlib.suppress(ValueError):
                cells[agent] = ipaddress.ip_address(address)
        return TenantNetView(
            tenant=info.tenant,
            gateway=ipaddress.ip_address(info.gateway),
            network=network,
            subnets=tuple(subnets),
            cells=cells,
            version=version,
        )

    async def _start(self, info: TenantNetworkInfo, view: TenantNetView) -> None:
        live = LiveView(view)
        decisions = DecisionLog(decision_log_path(info.tenant, directory=self.state_dir))
        resolver = Resolver(
            live, upstream=self.upstream, log=decisions, limits=self.resolver_limits
        )
        egress = Gateway(
            live,
            upstream=self.upstream,
            log=decisions,
            limits=self.gateway_limits,
            tls_port=self.tls_port,
        )
        try:
            await resolver.start(info.gateway, self.ports.resolver)
            try:
                await egress.start(info.gateway, self.ports.proxy, self.ports.sni)
            except OSError:
                await resolver.close()
                raise
        except OSError as exc:
            decisions.close()
            log.error("tenant %s: cannot listen on %s: %s", info.tenant, info.gateway, exc)
            return
        self.running[info.tenant] = _Running(
            gateway=info.gateway, live=live, resolver=resolver, egress=egress, log=decisions
        )
        log.info("tenant %s: resolver and gateway on %s", info.tenant, info.gateway)

    async def _stop(self, tenant: str) -> None:
        running = self.running.pop(tenant)
        await running.resolver.close()
        await running.egress.close()
        running.log.close()
        log.info("tenant %s: services stopped", tenant)
