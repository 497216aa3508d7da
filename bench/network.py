"""What the tenant network services cost, against the raw path in the same run.

1. egress gateway: a cell on its tenant network reaches a server container through
   ``NetworkHost``'s gateway (HTTP CONNECT to an allowed name, resolved by a loopback upstream
   the bench runs), against a container on the server's own network connecting to it directly.
   Connect latency (connect, and for the gateway the CONNECT exchange, until one byte echoes)
   and upload throughput. Rounds alternate A and B so drift hits both alike;
2. resolver: queries per second and p99 latency of the tenant resolver on loopback, for names
   it answers itself (denied: NXDOMAIN) and names it forwards (allowed: upstream, answered
   with the gateway), against the bench's upstream asked directly.

Traffic goes only to loopback and to containers and networks the bench makes; everything is
removed at the end. Usage: python bench/network.py [--rounds 5] [--connects 40] [--mib 64]
[--queries 4000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import secrets
import socket
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import dns.asyncquery
import dns.message
import dns.rcode
import dns.rrset
import docker
import docker.errors

from agentcell.cell.network import PROXY_PORT, tenant_network
from agentcell.netsvc.decisions import DecisionLog
from agentcell.netsvc.gateway import GatewayLimits
from agentcell.netsvc.host import NetworkHost
from agentcell.netsvc.resolver import Resolver, ResolverLimits
from agentcell.netsvc.upstream import Upstream, UpstreamResolver
from agentcell.netsvc.view import LiveView, TenantNetView
from agentcell.policy import admit, preset
from agentcell.runtime.docker.backend import DockerBackend
from agentcell.runtime.docker.netinfo import EngineNetworks
from agentcell.runtime.docker.networks import TenantNetworks
from agentcell.spec.load import load_text
from agentcell.spec.tenant import TenantDocument, TenantNetwork
from stats import summary

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "network.json"
SANDBOX = "agentcell/sandbox:0.1.0"
SERVER_PORT = 9000
SERVER_NAME = "server.bench.test"
LABEL = {"bench.agentcell.made-by": "network"}

SERVER = (  # 'e': echo one byte; 's': read to EOF, answer the byte count
    "import socket,threading\n"
    f"s=socket.create_server(('0.0.0.0',{SERVER_PORT}),backlog=128)\n"
    "def serve(c):\n"
    "    with c:\n"
    "        m=c.recv(1)\n"
    "        if m==b'e': c.sendall(c.recv(1))\n"
    "        elif m==b's':\n"
    "            n=0\n"
    "            while d:=c.recv(1<<16): n+=len(d)\n"
    "            c.sendall(str(n).encode())\n"
    "while True:\n"
    "    c,_=s.accept(); threading.Thread(target=serve,args=(c,),daemon=True).start()\n"
)
CLIENT = (  # argv: host port proxy(host:port or -) connects mib; prints JSON
    "import http.client,json,socket,sys,time\n"
    "host,port,proxy,count,mib=sys.argv[1],int(sys.argv[2]),sys.argv[3],int(sys.argv[4]),"
    "int(sys.argv[5])\n"
    "def open_():\n"
    "    if proxy=='-': return socket.create_connection((host,port),timeout=10)\n"
    "    ph,pp=proxy.rsplit(':',1)\n"
    "    t=http.client.HTTPConnection(ph,int(pp),timeout=10); t.set_tunnel(host,port)\n"
    "    t.connect(); return t.sock\n"
    "ms=[]\n"
    "for _ in range(count):\n"
    "    t=time.perf_counter(); c=open_(); c.sendall(b'ex'); assert c.recv(1)==b'x'\n"
    "    ms.append((time.perf_counter()-t)*1000); c.close()\n"
    "c=open_(); c.sendall(b's'); chunk=b'\\0'*(1<<16); t=time.perf_counter()\n"
    "for _ in range(mib*16): c.sendall(chunk)\n"
    "c.shutdown(socket.SHUT_WR); n=int(c.recv(64)); s=time.perf_counter()-t\n"
    "assert n==mib*1024*1024,n\n"
    "print(json.dumps({'connect_ms':ms,'mib_per_s':mib/s}))\n"
)


class Upstream4:
    """A loopback DNS server answering every name with one address (the bench's upstream)."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = int(self.sock.getsockname()[1])
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        while not self.stop.is_set():
            try:
                data, peer = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            query = dns.message.from_wire(data)
            response = dns.message.make_response(query)
            response.answer.append(
                dns.rrset.from_text(query.question[0].name, 60, "IN", "A", self.address)
            )
            self.sock.sendto(response.to_wire(), peer)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        self.sock.close()


class HostThread:
    """NetworkHost on its own event loop in a thread."""

    def __init__(self, host: NetworkHost) -> None:
        self.host = host
        self.done = threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self.main()), daemon=True)
        self.thread.start()

    async def main(self) -> None:
        task = asyncio.create_task(self.host.run())
        await asyncio.to_thread(self.done.wait)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    def close(self) -> None:
        self.done.set()
        self.thread.join(timeout=30)


class Directory:
    """The bench tenant's document, without a control plane: the gateway reads it the same."""

    def __init__(self, tenant: str) -> None:
        self.record = type("Record", (), {})()
        self.record.name = tenant
        self.record.version = 1
        self.record.document = TenantDocument.model_validate(
            {"apiVersion": "agentcell/v1", "kind": "Tenant", "metadata": {"name": tenant},
             "spec": {"network": {"egress": {"allow": [
                 {"name": SERVER_NAME, "ports": [SERVER_PORT]}]}}}}
        )  # fmt: skip

    def tenants(self) -> list[Any]:
        return [self.record]


def run_client(container: Any, host: str, proxy: str, connects: int, mib: int) -> dict[str, Any]:
    result = container.exec_run(
        ["python3", "-c", CLIENT, host, str(SERVER_PORT), proxy, str(connects), str(mib)]
    )
    output = result.output.decode()
    if result.exit_code != 0:
        raise RuntimeError(output)
    parsed: dict[str, Any] = json.loads(output.strip().splitlines()[-1])
    return parsed


def egress(options: argparse.Namespace) -> dict[str, Any]:
    backend = DockerBackend.connect()
    client = backend.client
    tenant = f"bn{secrets.token_hex(3)}"
    outside = f"agentcell-bench-outside-{secrets.token_hex(3)}"
    made: list[str] = []
    upstream: Upstream4 | None = None
    host_thread: HostThread | None = None
    try:
        client.networks.create(outside, labels=LABEL)
        common: dict[str, Any] = {"detach": True, "network": outside, "labels": LABEL}
        server = client.containers.run(
            SANDBOX, ["python3", "-c", SERVER], name=f"{outside}-server", **common
        )
        made.append(server.name or "")
        direct = client.containers.run(
            SANDBOX, ["sleep", "infinity"], name=f"{outside}-direct", **common
        )
        made.append(direct.name or "")
        server.reload()
        server_ip = server.attrs["NetworkSettings"]["Networks"][outside]["IPAddress"]
        (doc,) = load_text(
            "apiVersion: agentcell/v1\nkind: Agent\n"
            f"metadata:\n  name: client\n  tenant: {tenant}\n"
            f"spec:\n  image: {SANDBOX}\n  network: tenant\n",
            file="bench.yaml",
        )
        result = backend.up(admit(doc, preset("restricted")))
        made.append(result.cell.container)
        cell = client.containers.get(result.cell.container)
        upstream = Upstream4(server_ip)
        host = NetworkHost(
            networks=EngineNetworks(client), directory=Directory(tenant),
            upstream=(Upstream(address=ipaddress.ip_address("127.0.0.1"), port=upstream.port),),
            state_dir=Path(f"/tmp/{tenant}-state"), poll_interval=1.0,
            gateway_limits=GatewayLimits(max_connections_per_source=512),
        )  # fmt: skip
        host_thread = HostThread(host)
        deadline = time.monotonic() + 20
        while tenant not in host.running and time.monotonic() < deadline:
            time.sleep(0.1)
        gateway = host.running[tenant].gateway
        samples: dict[str, dict[str, list[float]]] = {
            "gateway": {"connect_ms": [], "mib_per_s": []},
            "direct": {"connect_ms": [], "mib_per_s": []},
        }
        for _ in range(options.rounds):
            for key, container, target, proxy in (
                ("gateway", cell, SERVER_NAME, f"{gateway}:{PROXY_PORT}"),
                ("direct", direct, server_ip, "-"),
            ):
                measured = run_client(container, target, proxy, options.connects, options.mib)
                samples[key]["connect_ms"].extend(measured["connect_ms"])
                samples[key]["mib_per_s"].append(measured["mib_per_s"])
        return {
            key: {
                "connect": summary(values["connect_ms"]),
                "mib_per_s_median": statistics.median(values["mib_per_s"]),
                "raw": values,
            }
            for key, values in samples.items()
        }
    finally:
        if host_thread is not None:
            host_thread.close()
        if upstream is not None:
            upstream.close()
        for name in made:
            with contextlib.suppress(docker.errors.NotFound):
                client.containers.get(name).remove(force=True)
        with contextlib.suppress(docker.errors.NotFound):
            client.networks.get(outside).remove()
        TenantNetworks(client).remove(tenant)
        backend.tenant_cgroup(tenant).remove()
        import shutil

        shutil.rmtree(f"/tmp/{tenant}-state", ignore_errors=True)
        backend.close()


async def query_load(port: int, names: list[str], concurrency: int) -> tuple[float, list[float]]:
    """Queries per second and each query's latency (ms), ``concurrency`` in flight."""
    latencies: list[float] = []
    pending = iter(names)

    async def worker() -> None:
        for name in pending:
            query = dns.message.make_query(name, "A")
            start = time.perf_counter()
            await dns.asyncquery.udp(query, "127.0.0.1", port=port, timeout=5)
            latencies.append((time.perf_counter() - start) * 1000)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return len(names) / (time.perf_counter() - start), latencies


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, (len(ordered) * 99) // 100)]


def resolver(options: argparse.Namespace, state: Path) -> dict[str, Any]:
    upstream = Upstream4("198.51.100.7")
    gateway = ipaddress.ip_address("127.0.0.1")
    network = TenantNetwork.model_validate({"egress": {"allow": [{"name": "*.allowed.test"}]}})
    view = TenantNetView(tenant="bench", gateway=gateway, network=network)
    log = DecisionLog(state / "decisions.jsonl")
    ready = threading.Event()
    done = threading.Event()
    port_box: list[int] = []

    async def serve() -> None:
        server = Resolver(
            LiveView(view),
            upstream=UpstreamResolver([Upstream(address=gateway, port=upstream.port)]),
            log=log,
            limits=ResolverLimits(queries_per_second=1e9, burst=10**9, max_pending_lookups=4096),
        )
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        await server.start("127.0.0.1", port)
        port_box.append(port)
        ready.set()
        await asyncio.to_thread(done.wait)
        await server.close()

    thread = threading.Thread(target=lambda: asyncio.run(serve()), daemon=True)
    thread.start()
    ready.wait(10)
    results: dict[str, Any] = {}
    try:
        count = options.queries
        for key, port, names in (
            ("resolver_denied", port_box[0], [f"q{i}.denied.test" for i in range(count)]),
            ("resolver_allowed", port_box[0], [f"q{i}.allowed.test" for i in range(count)]),
            ("upstream_direct", upstream.port, [f"q{i}.allowed.test" for i in range(count)]),
        ):
            qps, latencies = asyncio.run(query_load(port, names, options.concurrency))
            results[key] = {
                "qps": qps,
                "p50_ms": statistics.median(latencies),
                "p99_ms": p99(latencies),
                "queries": count,
            }
    finally:
        done.set()
        thread.join(timeout=10)
        log.close()
        upstream.close()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--connects", type=int, default=40)
    parser.add_argument("--mib", type=int, default=64)
    parser.add_argument("--queries", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=16)
    options = parser.parse_args()

    import tempfile

    gateway = egress(options)
    with tempfile.TemporaryDirectory() as tmp:
        dns_results = resolver(options, Path(tmp))

    ratios = {
        "connect_gateway_vs_direct": gateway["gateway"]["connect"]["median_ms"]
        / gateway["direct"]["connect"]["median_ms"],
        "throughput_gateway_vs_direct": gateway["gateway"]["mib_per_s_median"]
        / gateway["direct"]["mib_per_s_median"],
        "qps_resolver_allowed_vs_upstream": dns_results["resolver_allowed"]["qps"]
        / dns_results["upstream_direct"]["qps"],
    }
    print(f"{'what':46} {'median':>10} {'p10':>8} {'p90':>8}")
    for key, label in (("gateway", "connect via gateway (CONNECT) ms"),
                       ("direct", "connect direct, container to container ms")):  # fmt: skip
        row = gateway[key]["connect"]
        print(f"{label:46} {row['median_ms']:10.2f} {row['p10_ms']:8.2f} {row['p90_ms']:8.2f}")
    for key, label in (("gateway", "upload via gateway MiB/s"),
                       ("direct", "upload direct MiB/s")):  # fmt: skip
        print(f"{label:46} {gateway[key]['mib_per_s_median']:10.1f}")
    print(f"{'resolver (concurrency ' + str(options.concurrency) + ')':46} {'q/s':>10} "
          f"{'p50 ms':>8} {'p99 ms':>8}")  # fmt: skip
    for key, label in (("resolver_denied", "resolver, denied names (NXDOMAIN)"),
                       ("resolver_allowed", "resolver, allowed names (forwarded)"),
                       ("upstream_direct", "upstream asked directly (baseline)")):  # fmt: skip
        row = dns_results[key]
        print(f"{label:46} {row['qps']:10.0f} {row['p50_ms']:8.2f} {row['p99_ms']:8.2f}")
    for key, value in ratios.items():
        print(f"ratio {key}: {value:.3f}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "options": vars(options),
                "egress": gateway,
                "dns": dns_results,
                "ratios": ratios,
                "network": tenant_network("<tenant>"),
            },
            indent=2,
        )
    )
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
