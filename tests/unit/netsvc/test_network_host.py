"""NetworkHost without an engine: networks and documents from in-memory sources, services on
loopback ports. It starts a network's services, applies a changed document to the running
services within a poll, keeps the last documents when the directory fails, fails closed for a
tenant without a document, and stops the services of a network that is gone."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass
from pathlib import Path

import dns.asyncquery
import dns.message
import dns.rcode

from agentcell.errors import ControlPlaneUnavailable
from agentcell.netsvc.host import NetworkHost, ServicePorts
from agentcell.netsvc.upstream import parse_upstreams
from agentcell.runtime.docker.netinfo import TenantNetworkInfo
from agentcell.spec.tenant import TenantDocument
from tests.netsvc_support import LoggingUpstream


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", 0))
        return int(udp.getsockname()[1])


class Networks:
    def __init__(self) -> None:
        self.found = [
            TenantNetworkInfo(
                tenant="acme", network="agentcell_acme", gateway="127.0.0.1",
                subnets=("172.31.250.0/24",), cells={"web": "172.31.250.2"},
            )
        ]  # fmt: skip

    def tenant_networks(self) -> list[TenantNetworkInfo]:
        return list(self.found)


@dataclass
class Record:
    name: str
    version: int
    document: TenantDocument


class Directory:
    def __init__(self) -> None:
        self.allow: list[str] = []
        self.version = 1
        self.down = False

    def tenants(self) -> list[Record]:
        if self.down:
            raise ControlPlaneUnavailable("the control plane is down")
        document = TenantDocument.model_validate(
            {"apiVersion": "agentcell/v1", "kind": "Tenant", "metadata": {"name": "acme"},
             "spec": {"network": {"egress": {"allow": [{"name": n} for n in self.allow]}}}}
        )  # fmt: skip
        return [Record(name="acme", version=self.version, document=document)]


async def ask(port: int, name: str) -> int:
    answer = await dns.asyncquery.udp(
        dns.message.make_query(name, "A"), "127.0.0.1", port=port, timeout=3
    )
    return answer.rcode()


def test_host_follows_documents_and_networks(tmp_path: Path) -> None:
    networks, directory = Networks(), Directory()
    ports = ServicePorts(resolver=free_port(), proxy=free_port(), sni=free_port())
    with LoggingUpstream({"pypi.org": "198.51.100.7"}) as upstream:
        host = NetworkHost(
            networks=networks, directory=directory, upstream=parse_upstreams(upstream.address),
            state_dir=tmp_path, poll_interval=0.1, ports=ports,
        )  # fmt: skip

        async def main() -> None:
            task = asyncio.create_task(host.run())
            await asyncio.wait_for(host.ready.wait(), 5)
            assert set(host.running) == {"acme"}
            assert await ask(ports.resolver, "pypi.org") == dns.rcode.NXDOMAIN  # egress none
            assert await ask(ports.resolver, "web") == dns.rcode.NOERROR

            directory.allow, directory.version = ["pypi.org"], 2
            await asyncio.sleep(0.5)
            assert await ask(ports.resolver, "pypi.org") == dns.rcode.NOERROR

            directory.down = True  # the documents last read stay in force
            await asyncio.sleep(0.3)
            assert await ask(ports.resolver, "pypi.org") == dns.rcode.NOERROR

            networks.found = []
            await asyncio.sleep(0.3)
            assert host.running == {}
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

        asyncio.run(main())
        assert upstream.seen == ["pypi.org", "pypi.org"]
    assert (tmp_path / "net" / "acme" / "decisions.jsonl").exists()


def test_a_tenant_without_a_document_gets_egress_none(tmp_path: Path) -> None:
    ports = ServicePorts(resolver=free_port(), proxy=free_port(), sni=free_port())
    with LoggingUpstream({"pypi.org": "198.51.100.7"}) as upstream:
        host = NetworkHost(
            networks=Networks(), directory=None, upstream=parse_upstreams(upstream.address),
            state_dir=tmp_path, poll_interval=0.1, ports=ports,
        )  # fmt: skip

        async def main() -> None:
            task = asyncio.create_task(host.run())
            await asyncio.wait_for(host.ready.wait(), 5)
            assert await ask(ports.resolver, "pypi.org") == dns.rcode.NXDOMAIN
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

        asyncio.run(main())
        assert upstream.seen == []


def test_upstream_from_the_environment(tmp_path: Path) -> None:
    host = NetworkHost(
        networks=Networks(), directory=None, state_dir=tmp_path,
        environ={"AGENTCELL_DNS_UPSTREAM": "127.0.0.1:5353, [::1]"},
    )  # fmt: skip
    assert [str(server) for server in host.upstream.servers] == ["127.0.0.1:5353", "[::1]:53"]
    assert NetworkHost(networks=Networks(), directory=None, state_dir=tmp_path,
                       environ={}).upstream.servers == ()  # fmt: skip
