"""The tenant network services with real cells, a real control plane and real TLS.

A cell on its tenant's network resolves through ``NetworkHost``'s resolver on the bridge's
gateway address and leaves only through its egress gateway. The outside world is made by the
test: a logging DNS upstream on loopback (the only resolver NetworkHost may ask) and a canary
HTTPS server in a container on a separate network the test creates, which the cell has no route
to. No query or connection goes anywhere else; nothing here asks the host's resolver.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dns.message
import docker
import pytest
from docker.models.containers import Container

from agentcell.cell.network import tenant_network
from agentcell.netsvc.decisions import decision_log_path, read_decisions
from agentcell.netsvc.host import NetworkHost
from agentcell.netsvc.upstream import parse_upstreams
from agentcell.policy import admit
from agentcell.runtime.docker.backend import DockerBackend
from agentcell.runtime.docker.netinfo import EngineNetworks
from agentcell.spec.load import load_text
from tests.conftest import TEST_LABEL, Created
from tests.integration.controlplane.cp_harness import (
    ControlPlane,
    make_home,
    start_control_plane,
)
from tests.netsvc_support import CANARY_GREETING, LoggingUpstream, self_signed
from tests.policies import AdmitAll

SANDBOX = "agentcell/sandbox:0.1.0"
ALLOWED = "canary.outside.test"
LATER = "later.outside.test"
DENIED = "denied.outside.test"

CANARY = (
    "import os,socket,ssl,threading\n"
    "open('/tmp/c.pem','w').write(os.environ['CERT'])\n"
    "open('/tmp/c.key','w').write(os.environ['KEY'])\n"
    "ctx=ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); ctx.load_cert_chain('/tmp/c.pem','/tmp/c.key')\n"
    "s=socket.create_server(('0.0.0.0',443))\n"
    "def serve(c):\n"
    "    try:\n"
    "        t=ctx.wrap_socket(c,server_side=True); req=t.recv(4096)\n"
    "        body=b'canary says hello\\n'\n"
    "        head=b'HTTP/1.1 200 OK\\r\\nConnection: close\\r\\n'\n"
    "        t.sendall(head+b'Content-Length: %d\\r\\n\\r\\n' % len(body) + body); t.close()\n"
    "    except Exception: c.close()\n"
    "while True:\n"
    "    c,_=s.accept(); threading.Thread(target=serve,args=(c,),daemon=True).start()\n"
)
# Run in the cell: each prints one JSON line.
RESOLVE = (
    "import json,socket,sys\n"
    "try: r=socket.gethostbyname(sys.argv[1])\n"
    "except OSError as e: r='error: '+type(e).__name__\n"
    "print(json.dumps({'result':r}))\n"
)
HTTPS_VIA_PROXY = (  # urllib takes HTTPS_PROXY from the environment agentcell gives the cell
    "import json,ssl,sys,urllib.request\n"
    "ctx=ssl.create_default_context(cadata=sys.argv[2])\n"
    "try: r=urllib.request.urlopen('https://'+sys.argv[1]+'/',context=ctx,timeout=5).read().decode()\n"
    "except Exception as e: r='error: '+type(e).__name__+': '+str(e)\n"
    "print(json.dumps({'result':r}))\n"
)
TLS_BY_NAME = (  # no proxy: the name resolves to the gateway, whose TLS listener reads the name
    "import json,socket,ssl,sys\n"
    "ctx=ssl.create_default_context(cadata=sys.argv[2])\n"
    "try:\n"
    "    s=socket.create_connection((sys.argv[1],443),timeout=5)\n"
    "    t=ctx.wrap_socket(s,server_hostname=sys.argv[1])\n"
    "    t.sendall(b'GET / HTTP/1.0\\r\\n\\r\\n')\n"
    "    r=t.recv(4096).decode().split('\\r\\n\\r\\n')[-1]\n"
    "except Exception as e: r='error: '+type(e).__name__\n"
    "print(json.dumps({'result':r}))\n"
)
SEND_RAW = (  # one UDP datagram (a DNS query the test built) to an address, answer or not
    "import json,socket,sys\n"
    "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.settimeout(2)\n"
    "s.sendto(bytes.fromhex(sys.argv[1]),(sys.argv[2],53))\n"
    "try: s.recvfrom(4096); r='answered'\n"
    "except OSError as e: r='error: '+type(e).__name__\n"
    "print(json.dumps({'result':r}))\n"
)
WAIT_FOR_NAME = (  # resolve until it works; print when (the cell shares the host's clock)
    "import json,socket,sys,time\n"
    "end=time.time()+float(sys.argv[2])\n"
    "while time.time()<end:\n"
    "    try: socket.gethostbyname(sys.argv[1]); break\n"
    "    except OSError: time.sleep(0.05)\n"
    "print(json.dumps({'result':time.time()}))\n"
)


def in_cell(container: Container, program: str, *args: str) -> Any:
    result = container.exec_run(["python3", "-c", program, *args])
    assert isinstance(result.output, bytes)
    assert result.exit_code == 0, result.output.decode()
    return json.loads(result.output.decode().strip().splitlines()[-1])["result"]


class HostThread:
    """A NetworkHost running in its own event loop on a thread, stopped on exit."""

    def __init__(self, host: NetworkHost) -> None:
        self.host = host
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _main(self) -> None:
        task = asyncio.create_task(self.host.run())
        await asyncio.to_thread(self._stop.wait)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    def __enter__(self) -> HostThread:
        self._thread.start()
        return self

    def wait_serving(self, tenant: str, cell: str, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            running = self.host.running.get(tenant)
            if running is not None and cell in running.live.current.cells:
                return
            time.sleep(0.1)
        raise AssertionError(f"NetworkHost does not serve tenant {tenant} with cell {cell}")

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


@pytest.fixture
def control_plane() -> Iterator[ControlPlane]:
    home = make_home()
    plane: ControlPlane | None = None
    try:
        plane = start_control_plane(home)
        yield plane
    finally:
        if plane is not None:
            plane.server.stop()
        shutil.rmtree(home, ignore_errors=True)


def tenant_document(tenant: str, names: list[str]) -> dict[str, Any]:
    return {
        "apiVersion": "agentcell/v1",
        "kind": "Tenant",
        "metadata": {"name": tenant},
        "spec": {"network": {"egress": {"allow": [{"name": n} for n in names]}}},
    }


@pytest.fixture
def canary(docker_client: docker.DockerClient, created: Created, tmp_path: Path) -> tuple[str, str]:
    """An HTTPS server on a network of its own; yields its address and certificate (PEM)."""
    token = secrets.token_hex(3)
    network = created.network(f"actest-outside-{token}")
    docker_client.networks.create(network, labels={TEST_LABEL: "netsvc"})
    cert, key = self_signed(ALLOWED, tmp_path)
    # One certificate names both outside names the tests reach.
    name = created.container(f"actest-canary-{token}")
    container = docker_client.containers.run(
        SANDBOX, ["python3", "-c", CANARY], name=name, network=network, detach=True,
        user="0", labels={TEST_LABEL: "netsvc"},
        environment={"CERT": cert.read_text(), "KEY": key.read_text()},
    )  # fmt: skip
    container.reload()
    address = container.attrs["NetworkSettings"]["Networks"][network]["IPAddress"]
    return str(address), cert.read_text()


@pytest.fixture
def tenant_cell(docker_client: docker.DockerClient, created: Created) -> tuple[str, Container]:
    tenant = created.tenant_network(f"ns{secrets.token_hex(3)}")
    (doc,) = load_text(
        "apiVersion: agentcell/v1\nkind: Agent\n"
        f"metadata:\n  name: client\n  tenant: {tenant}\n"
        f"spec:\n  image: {SANDBOX}\n  network: tenant\n",
        file="cells.yaml",
    )
    backend = DockerBackend(docker_client)
    result = backend.up(admit(doc, AdmitAll()))
    created.container(result.cell.container)
    container = docker_client.containers.get(result.cell.container)
    assert tenant_network(tenant) in container.attrs["NetworkSettings"]["Networks"]
    return tenant, container


def test_dns_and_egress_through_the_tenant_services(
    docker_client: docker.DockerClient,
    control_plane: ControlPlane,
    canary: tuple[str, str],
    tenant_cell: tuple[str, Container],
    tmp_path: Path,
) -> None:
    tenant, cell = tenant_cell
    canary_address, canary_cert = canary
    control_plane.admin.put_tenant(tenant_document(tenant, [ALLOWED]), changed_by="test")
    records = {ALLOWED: canary_address, LATER: canary_address, DENIED: canary_address}
    state = tmp_path / "state"
    with LoggingUpstream(records) as upstream:
        host = NetworkHost(
            networks=EngineNetworks(docker_client),
            directory=control_plane.admin,
            upstream=parse_upstreams(upstream.address),
            state_dir=state,
            poll_interval=0.5,
        )
        with HostThread(host) as running:
            running.wait_serving(tenant, "client")
            gateway = str(host.running[tenant].live.current.gateway)
            log = decision_log_path(tenant, directory=state)

            # An allowed name resolves, to the gateway.
            assert in_cell(cell, RESOLVE, ALLOWED) == gateway
            assert ALLOWED in upstream.seen

            # A denied name does not, is logged with the cell, and never left the resolver.
            assert in_cell(cell, RESOLVE, DENIED).startswith("error")
            denied = [e for e in read_decisions(log, denied_only=True) if e.name == DENIED]
            assert denied and denied[0].cell == "client" and denied[0].kind == "dns"
            assert DENIED not in upstream.seen

            # The engine's embedded DNS forwards nothing the test's upstream sees.
            probe = f"leak-{secrets.token_hex(4)}.outside.test"
            wire = dns.message.make_query(probe, "A").to_wire().hex()
            in_cell(cell, SEND_RAW, wire, "127.0.0.11")
            time.sleep(1)
            assert probe not in upstream.seen

            # The cell has no route to the canary itself ...
            assert "error" in in_cell(cell, TLS_BY_NAME, canary_address, canary_cert)
            # ... but reaches it by an allowed name through the gateway: CONNECT and TLS.
            assert in_cell(cell, HTTPS_VIA_PROXY, ALLOWED, canary_cert) == CANARY_GREETING.decode()
            assert in_cell(cell, TLS_BY_NAME, ALLOWED, canary_cert) == CANARY_GREETING.decode()
            decisions = list(read_decisions(log))
            kinds = {(e.kind, e.decision) for e in decisions if e.name == ALLOWED}
            assert {("connect", "allow"), ("sni", "allow")} <= kinds
            assert all(e.address == canary_address for e in decisions if e.kind == "connect")

            # A denied name through the proxy fails, and the denial is in the log.
            refused = in_cell(cell, HTTPS_VIA_PROXY, DENIED, canary_cert)
            assert refused.startswith("error") and "403" in refused
            assert ("connect", DENIED) in {
                (e.kind, e.name) for e in read_decisions(log, denied_only=True)
            }

            # An allow-list change reaches the running cell within 2 s.
            assert in_cell(cell, RESOLVE, LATER).startswith("error")
            waiter: dict[str, float] = {}
            thread = threading.Thread(
                target=lambda: waiter.update(at=in_cell(cell, WAIT_FOR_NAME, LATER, "10"))
            )
            thread.start()
            time.sleep(0.5)  # the waiter is running in the cell
            control_plane.admin.put_tenant(
                tenant_document(tenant, [ALLOWED, LATER]), changed_by="test"
            )
            changed = time.time()
            thread.join(timeout=20)
            assert waiter["at"] - changed < 2.0, f"took {waiter['at'] - changed:.2f} s"
            in_cell(cell, HTTPS_VIA_PROXY, LATER, canary_cert)  # its certificate names ALLOWED
            assert ("connect", "allow") in {(e.kind, e.decision) for e in read_decisions(log)
                                            if e.name == LATER}  # fmt: skip
        assert not host.running  # stopped with the thread
