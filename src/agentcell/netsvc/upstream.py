"""The upstream resolver the tenant services ask for names the allow-list permits.

Only servers configured here are ever asked (``AGENTCELL_DNS_UPSTREAM`` or an argument), over
dnspython's asyncio queries: never the host's resolver, never ``getaddrinfo``. With none
configured, no external name resolves at all (:class:`NoUpstream`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype

from agentcell.errors import Error, InvalidInput
from agentcell.netsvc.egress import Address, parse_address

__all__ = [
    "UPSTREAM_VARIABLE",
    "NoUpstream",
    "Upstream",
    "UpstreamFailed",
    "UpstreamResolver",
    "parse_upstreams",
    "upstreams_from_environ",
]

UPSTREAM_VARIABLE = "AGENTCELL_DNS_UPSTREAM"
QUERY_TIMEOUT_S = 2.0


class NoUpstream(Error):
    """No upstream resolver is configured, so no external name can be resolved."""


class UpstreamFailed(Error):
    """Every upstream resolver failed or timed out for a query."""


@dataclass(frozen=True, kw_only=True)
class Upstream:
    """One upstream DNS server: an IP address and a port."""

    address: Address
    port: int = 53

    def __str__(self) -> str:
        host = f"[{self.address}]" if self.address.version == 6 else str(self.address)
        return f"{host}:{self.port}"


def parse_upstreams(text: str) -> tuple[Upstream, ...]:
    """``10.0.0.2, 127.0.0.1:5353, [::1]:53`` into servers (IP addresses only: a name would
    need a resolver to find the resolver).

    Raises:
        InvalidInput: an entry is not ip or ip:port.
    """
    found = []
    for raw in (part.strip() for part in text.split(",")):
        if not raw:
            continue
        host, port = raw, 53
        if raw.startswith("["):
            host, _, rest = raw[1:].partition("]")
            if rest:
                port = _port(raw, rest.removeprefix(":"))
        elif raw.count(":") == 1:
            host, port_text = raw.split(":")
            port = _port(raw, port_text)
        address = parse_address(host)
        if address is None:
            raise InvalidInput(
                f"upstream resolver {raw!r} is not an IP address with an optional port",
                fix=f"set {UPSTREAM_VARIABLE} to e.g. 10.0.0.2 or 127.0.0.1:5353",
            )
        found.append(Upstream(address=address, port=port))
    return tuple(found)


def _port(raw: str, text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise InvalidInput(
            f"upstream resolver {raw!r} has no valid port",
            fix=f"set {UPSTREAM_VARIABLE} to e.g. 127.0.0.1:5353",
        )
    return int(text)


def upstreams_from_environ(environ: Mapping[str, str] | None = None) -> tuple[Upstream, ...]:
    """The servers ``AGENTCELL_DNS_UPSTREAM`` names (none when unset)."""
    env = os.environ if environ is None else environ
    return parse_upstreams(env.get(UPSTREAM_VARIABLE, ""))


class UpstreamResolver:
    """Asks the configured servers, in order, until one answers."""

    def __init__(self, servers: Sequence[Upstream], *, timeout: float = QUERY_TIMEOUT_S) -> None:
        self.servers = tuple(servers)
        self.timeout = timeout

    async def query(
        self, name: dns.name.Name, rdtype: dns.rdatatype.RdataType
    ) -> dns.message.Message:
        """The first answer of a server to ``name``/``rdtype`` (recursion desired).

        Raises:
            NoUpstream: no server is configured.
            UpstreamFailed: every server failed or timed out.
        """
        if not self.servers:
            raise NoUpstream(
                "no upstream resolver is configured",
                fix=f"set {UPSTREAM_VARIABLE} to the resolver allowed names are looked up in",
            )
        request = dns.message.make_query(name, rdtype)
        request.flags |= dns.flags.RD
        failures = []
        for server in self.servers:
            try:
                answer = await dns.asyncquery.udp(
                    request, str(server.address), port=server.port, timeout=self.timeout
                )
                if answer.flags & dns.flags.TC:
                    answer = await dns.asyncquery.tcp(
                        request, str(server.address), port=server.port, timeout=self.timeout
                    )
            except (dns.exception.DNSException, OSError) as exc:
                failures.append(f"{server}: {type(exc).__name__}")
                continue
            if answer.rcode() in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
                return answer
            failures.append(f"{server}: {dns.rcode.to_text(answer.rcode())}")
        raise UpstreamFailed(f"no upstream resolver answered {name}: {'; '.join(failures)}")

    async def addresses(self, name: str) -> list[Address]:
        """The IPv4 then IPv6 addresses of ``name`` (empty when it has none).

        Raises:
            NoUpstream: no server is configured.
            UpstreamFailed: every server failed or timed out, or ``name`` is no DNS name.
        """
        try:
            qname = dns.name.from_text(name)
        except dns.exception.DNSException as exc:
            raise UpstreamFailed(f"{name!r} is not a DNS name: {exc}") from exc
        found: list[Address] = []
        for rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
            answer = await self.query(qname, rdtype)
            if answer.rcode() == dns.rcode.NXDOMAIN:
                return found
            for rrset in answer.answer:
                if rrset.rdtype == rdtype:
                    for rdata in rrset:
                        address = parse_address(rdata.to_text())
                        if address is not None:
                            found.append(address)
        return found
