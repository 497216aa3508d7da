"""Tenant networks on the real engine and the real kernel: one internal network per tenant,
host rules that drop everything from a tenant bridge to the host but what agentcell serves,
tenants apart, intra-tenant traffic on or off, no default route, and verify reading the rules
back (a deleted rule is a mismatch until ``agentcell net check`` puts it back).

Traffic goes only to the test's own cells and to the gateway addresses of the bridges the
test made, where the test process itself listens. Nothing here resolves a name.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
from docker.models.containers import Container

from agentcell.cell.network import nft_table, tenant_bridge, tenant_network
from agentcell.errors import ImageError
from agentcell.policy import AdmittedSpec, admit
from agentcell.runtime import netfilter
from agentcell.runtime.docker.backend import DockerBackend
from agentcell.runtime.docker.networks import tenant_net_dir
from agentcell.runtime.docker.proof import DockerProof
from agentcell.spec.load import load_text
from tests.conftest import Created
from tests.policies import AdmitAll

AGENTCELL = Path(sys.executable).with_name("agentcell")
SANDBOX = "agentcell/sandbox:0.1.0"
CANARY_PORT = 8080
# Tries one connection from inside a cell and prints what happened as JSON.
ATTEMPT = (
    "import json,socket,sys\n"
    "kind,host,port=sys.argv[1],sys.argv[2],int(sys.argv[3])\n"
    "try:\n"
    "    if kind=='tcp':\n"
    "        s=socket.create_connection((host,port),timeout=2); s.recv(16)\n"
    "    else:\n"
    "        s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.settimeout(2)\n"
    "        s.sendto(b'ping',(host,port)); s.recvfrom(16)\n"
    "    r='reached'\n"
    "except OSError as e:\n"
    "    r=type(e).__name__+': '+str(e)\n"
    "print(json.dumps({'result':r}))\n"
)
CANARY = (
    "import socket\n"
    "s=socket.socket(); s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
    f"s.bind(('0.0.0.0',{CANARY_PORT})); s.listen(16)\n"
    "while True:\n"
    "    c,_=s.accept(); c.sendall(b'canary\\n'); c.close()\n"
)


@pytest.fixture(scope="module")
def backend(docker_client: docker.DockerClient) -> DockerBackend:
    return DockerBackend(docker_client)


@pytest.fixture
def tenants(created: Created) -> list[str]:
    """Three fresh tenant names; their cells, networks, host rules and files go afterwards."""
    token = secrets.token_hex(3)
    names = [f"n{letter}{token}" for letter in "abc"]
    for name in names:
        created.tenant_network(name)
    return names


def admitted(tenant: str, name: str) -> AdmittedSpec:
    (doc,) = load_text(
        "apiVersion: agentcell/v1\nkind: Agent\n"
        f"metadata:\n  name: {name}\n  tenant: {tenant}\n"
        f"spec:\n  image: {SANDBOX}\n  network: tenant\n",
        file="cells.yaml",
    )
    return admit(doc, AdmitAll())


def cell(backend: DockerBackend, created: Created, tenant: str, name: str) -> Container:
    result = backend.up(admitted(tenant, name))
    created.container(result.cell.container)
    container = backend.container(result.cell.key)
    container.reload()
    return container


def address(container: Container, tenant: str) -> str:
    container.reload()
    return str(container.attrs["NetworkSettings"]["Networks"][tenant_network(tenant)]["IPAddress"])


def gateway(client: docker.DockerClient, tenant: str) -> str:
    network = client.networks.get(tenant_network(tenant))
    return str(network.attrs["IPAM"]["Config"][0]["Gateway"])


def attempt(container: Container, kind: str, host: str, port: int) -> str:
    result = container.exec_run(["python3", "-c", ATTEMPT, kind, host, str(port)])
    assert isinstance(result.output, bytes)
    assert result.exit_code == 0, result.output.decode()
    outcome: dict[str, Any] = json.loads(result.output.decode().strip().splitlines()[-1])
    return str(outcome["result"])


def start_canary(container: Container) -> str:
    """A TCP server in the cell; waits until the host (which may reach in) gets its banner."""
    container.exec_run(["python3", "-c", CANARY], detach=True)
    host = next(iter(container.attrs["NetworkSettings"]["Networks"].values()))["IPAddress"]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, CANARY_PORT), timeout=1) as conn:
                assert conn.recv(16) == b"canary\n"
                return str(host)
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"the canary in {container.name} did not listen")


class HostServices:
    """A TCP and a UDP service the test process runs on one address of the host."""

    def __init__(self, host: str) -> None:
        self.tcp = socket.create_server((host, 0))
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind((host, 0))
        self.tcp_port = self.tcp.getsockname()[1]
        self.udp_port = self.udp.getsockname()[1]
        self.served: list[str] = []
        self._threads = [
            threading.Thread(target=self._serve_tcp, daemon=True),
            threading.Thread(target=self._serve_udp, daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _serve_tcp(self) -> None:
        while True:
            try:
                conn, peer = self.tcp.accept()
            except OSError:
                return
            self.served.append(f"tcp {peer[0]}")
            with conn:
                conn.sendall(b"host\n")

    def _serve_udp(self) -> None:
        while True:
            try:
                _, peer = self.udp.recvfrom(64)
            except OSError:
                return
            if peer is None:  # shut down
                return
            self.served.append(f"udp {peer[0]}")
            self.udp.sendto(b"host", peer)

    def close(self) -> None:
        for sock in (self.tcp, self.udp):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


@pytest.fixture
def host_services() -> Iterator[list[HostServices]]:
    started: list[HostServices] = []
    yield started
    for services in started:
        services.close()


def default_routes(pid: int) -> list[str]:
    lines = Path(f"/proc/{pid}/net/route").read_text().splitlines()[1:]
    return [line for line in lines if line.split()[1] == "00000000"]


def test_a_cell_reaches_neither_the_host_nor_another_tenant(
    backend: DockerBackend,
    created: Created,
    docker_client: docker.DockerClient,
    tenants: list[str],
    host_services: list[HostServices],
) -> None:
    mine, theirs, _ = tenants
    client = cell(backend, created, mine, "client")
    server = cell(backend, created, theirs, "server")
    canary = start_canary(server)
    # Services on the host: on the cell's own gateway address and on the other bridge's.
    own = HostServices(gateway(docker_client, mine))
    other = HostServices(gateway(docker_client, theirs))
    host_services += [own, other]
    for services in (own, other):
        # The services answer on the host itself, so a failure below is the rules'.
        with socket.create_connection(services.tcp.getsockname()[:2], timeout=2) as conn:
            assert conn.recv(8) == b"host\n"

    for services in (own, other):
        address_ = services.tcp.getsockname()[0]
        assert attempt(client, "tcp", address_, services.tcp_port) != "reached"
        assert attempt(client, "udp", address_, services.udp_port) != "reached"
    assert attempt(client, "tcp", canary, CANARY_PORT) != "reached"
    # Nothing the cell sent reached the services (the host's own probe above did).
    client_ip = address(client, mine)
    assert [entry for entry in own.served + other.served if entry.endswith(client_ip)] == []

    # No default route, read from the host; the engine's DNS only to the gateway.
    client.reload()
    assert default_routes(int(client.attrs["State"]["Pid"])) == []
    assert client.attrs["HostConfig"]["Dns"] == [gateway(docker_client, mine)]
    resolv = Path(f"/proc/{client.attrs['State']['Pid']}/root/etc/resolv.conf").read_text()
    assert resolv.startswith(f"nameserver {gateway(docker_client, mine)}\n")
    # One network per tenant, on its own bridge, with the agent name as alias.
    network = docker_client.networks.get(tenant_network(mine))
    assert network.attrs["Internal"] is True
    assert network.attrs["Options"]["com.docker.network.bridge.name"] == tenant_bridge(mine)
    aliases = client.attrs["NetworkSettings"]["Networks"][tenant_network(mine)]["Aliases"]
    assert "client" in aliases


def test_intra_tenant_traffic_follows_the_tenants_setting(
    backend: DockerBackend, created: Created, tenants: list[str]
) -> None:
    together, apart, _ = tenants
    server = cell(backend, created, together, "server")
    peer = cell(backend, created, together, "peer")
    assert attempt(peer, "tcp", start_canary(server), CANARY_PORT) == "reached"

    backend.ensure_tenant_network(apart, intra_tenant=False)
    lonely = cell(backend, created, apart, "server")
    neighbour = cell(backend, created, apart, "peer")
    assert attempt(neighbour, "tcp", start_canary(lonely), CANARY_PORT) != "reached"
    # The setting stays with the network: a later `up` keeps intra-tenant traffic off.
    assert backend.networks.intra_tenant(apart) is False
    kernel = {family for family, name in netfilter.agentcell_tables() if name == nft_table(apart)}
    assert kernel == {"inet", "bridge"}


def statuses(backend: DockerBackend, key: str) -> dict[str, str]:
    proof = DockerProof(backend)
    (subject,) = proof.subjects([key])
    return {check.id: check.status for check in proof.report(subject).checks}


def net_check(tenant: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(AGENTCELL), "net", "check", tenant], capture_output=True, text=True, timeout=120
    )


def test_verify_reads_the_rules_back_and_net_check_repairs_them(
    backend: DockerBackend, created: Created, tenants: list[str]
) -> None:
    tenant = tenants[0]
    container = cell(backend, created, tenant, "watched")
    key = f"{tenant}/watched"
    before = statuses(backend, key)
    assert before["net.host-rules"] == before["net.resolver"] == "verified"
    assert before["net.default-route"] == "verified"
    assert before["net.dns"] == "configured"

    # Someone deletes the drop rule; and the engine gives a restarted cell its route back.
    listed = subprocess.run(
        ["nft", "-a", "list", "chain", "inet", nft_table(tenant), "input"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    handle = next(
        line.rsplit("handle ", 1)[1]
        for line in listed.splitlines()
        if line.strip().startswith("iifname") and line.split("#")[0].strip().endswith("drop")
    )
    subprocess.run(
        ["nft", "delete", "rule", "inet", nft_table(tenant), "input", "handle", handle], check=True
    )
    pid = int(container.attrs["State"]["Pid"])
    gw = container.attrs["NetworkSettings"]["Networks"][tenant_network(tenant)]["Gateway"]
    subprocess.run(
        ["nsenter", f"--net=/proc/{pid}/ns/net", "ip", "route", "add", "default", "via", gw],
        check=True,
    )
    broken = statuses(backend, key)
    assert broken["net.host-rules"] == "mismatch"
    assert broken["net.default-route"] == "mismatch"

    repaired = net_check(tenant)
    assert repaired.returncode == 0, repaired.stderr
    assert "fixed host rules: missing rule inet input" in repaired.stdout
    assert "removed default route (IPv4)" in repaired.stdout
    after = statuses(backend, key)
    assert after["net.host-rules"] == after["net.default-route"] == "verified"
    again = net_check(tenant)
    assert again.stdout.strip() == f"{tenant}: in place"


def test_the_network_goes_only_when_no_cell_is_on_it(
    backend: DockerBackend, created: Created, docker_client: docker.DockerClient, tenants: list[str]
) -> None:
    tenant = tenants[0]
    cell(backend, created, tenant, "last")
    with pytest.raises(Exception, match="still has 1 containers"):
        backend.remove_tenant_network(tenant)
    # A cell's `down` leaves the tenant's network: it goes with the tenant.
    assert backend.down(tenant, "last")
    assert docker_client.networks.list(names=[tenant_network(tenant)])
    # A tenant the control plane does not hold loses its network with `net remove`.
    removed = subprocess.run(
        [str(AGENTCELL), "net", "remove", tenant], capture_output=True, text=True, timeout=120
    )
    assert removed.returncode == 0, removed.stderr
    assert removed.stdout.strip() == f"{tenant}: network, host rules and files removed"
    assert [n for n in docker_client.networks.list() if n.name == tenant_network(tenant)] == []
    assert [t for t in netfilter.agentcell_tables() if t[1] == nft_table(tenant)] == []
    assert not tenant_net_dir(tenant).exists()


def test_a_failed_first_cell_leaves_no_network_behind(
    backend: DockerBackend, docker_client: docker.DockerClient, tenants: list[str]
) -> None:
    tenant = tenants[0]
    (doc,) = load_text(
        "apiVersion: agentcell/v1\nkind: Agent\n"
        f"metadata:\n  name: broken\n  tenant: {tenant}\n"
        "spec:\n  image: agentcell/no-such-image:0.0.0\n  network: tenant\n",
        file="cells.yaml",
    )
    with pytest.raises(ImageError):
        backend.up(admit(doc, AdmitAll()))
    assert [n for n in docker_client.networks.list() if n.name == tenant_network(tenant)] == []
    assert [t for t in netfilter.agentcell_tables() if t[1] == nft_table(tenant)] == []


def test_verify_and_probe_pass_on_a_networked_cell(
    backend: DockerBackend, created: Created, tenants: list[str]
) -> None:
    tenant = tenants[0]
    cell(backend, created, tenant, "proved")
    key = f"{tenant}/proved"
    verified = subprocess.run(
        [str(AGENTCELL), "verify", key], capture_output=True, text=True, timeout=120
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
    probed = subprocess.run(
        [str(AGENTCELL), "probe", key, "-o", "json"], capture_output=True, text=True, timeout=300
    )
    assert probed.returncode == 0, probed.stdout + probed.stderr
    results = {item["id"]: item["status"] for item in json.loads(probed.stdout)["items"]}
    assert results["default-route"] == "blocked"
    assert results["canary"] == "blocked"
