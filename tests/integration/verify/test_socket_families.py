"""A default cell creates only the socket families the strict seccomp profile allows.

The engine's own default profile (Docker 20.10) lets a ``network: none`` container open
AF_VSOCK sockets, which reach the hypervisor's host on a VM with a vsock device. A default
cell (a spec that names only its image) must get EAFNOSUPPORT for AF_VSOCK and the other
refused families, while AF_UNIX, AF_INET, AF_INET6 and netlink route sockets keep working.
"""

from __future__ import annotations

import json
import secrets
import socket
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from agentcell.errors import HostError
from agentcell.policy import admit
from agentcell.runtime.docker.backend import DockerBackend
from agentcell.spec.load import load_paths
from tests.conftest import Created
from tests.integration.verify.cells import unavailable
from tests.policies import AdmitAll

IMAGE = "agentcell/sandbox:0.1.0"
# Runs in the cell: the errno name of each socket() call, "ok" when it made a socket.
ATTEMPTS = """
import errno, json, socket
def attempt(family, kind, protocol=0):
    try:
        socket.socket(family, kind, protocol).close()
    except OSError as exc:
        return errno.errorcode.get(exc.errno, str(exc.errno))
    return "ok"
print(json.dumps({
    "AF_VSOCK": attempt(40, socket.SOCK_STREAM),
    "AF_ALG": attempt(38, socket.SOCK_SEQPACKET),
    "AF_TIPC": attempt(30, socket.SOCK_RDM),
    "AF_PACKET": attempt(17, socket.SOCK_DGRAM),
    "NETLINK_NETFILTER": attempt(16, socket.SOCK_RAW, 12),
    "AF_UNIX": attempt(socket.AF_UNIX, socket.SOCK_STREAM),
    "AF_INET": attempt(socket.AF_INET, socket.SOCK_STREAM),
    "AF_INET6": attempt(socket.AF_INET6, socket.SOCK_DGRAM),
    "NETLINK_ROUTE": attempt(16, socket.SOCK_RAW, 0),
    "interfaces": [name for _, name in socket.if_nameindex()],
}))
"""


@pytest.fixture(scope="module")
def backend() -> Iterator[DockerBackend]:
    try:
        engine = DockerBackend.connect()
    except HostError as exc:
        unavailable(f"no Docker Engine: {exc.what}")
    yield engine
    engine.close()


def default_cell(backend: DockerBackend, created: Created, tmp_path: Path, runtime: str) -> str:
    """Launch a cell whose spec names only its image and runtime; its container's name."""
    if backend.facts.runtime(runtime) is None:
        unavailable(f"runtime {runtime} is not registered with this engine")
    tenant = f"sf{runtime}{secrets.token_hex(3)}"
    spec = tmp_path / "cell.yaml"
    spec.write_text(
        "apiVersion: agentcell/v1\nkind: Agent\n"
        f"metadata: {{name: sockets, tenant: {tenant}}}\n"
        f"spec: {{image: {IMAGE}, security: {{runtime: {runtime}}}}}\n"
    )
    (doc,) = load_paths([spec])
    result = backend.up(admit(doc, AdmitAll()))
    return created.container(result.cell.container)


def attempts(docker_client: docker.DockerClient, container: str) -> dict[str, object]:
    code, output = docker_client.containers.get(container).exec_run(["python3", "-c", ATTEMPTS])
    assert code == 0 and isinstance(output, bytes), output
    parsed: dict[str, object] = json.loads(output)
    return parsed


@pytest.mark.parametrize("runtime", ["runc", "crun"])
def test_a_default_cell_gets_eafnosupport_for_vsock_and_keeps_unix_and_inet(
    backend: DockerBackend,
    docker_client: docker.DockerClient,
    created: Created,
    tmp_path: Path,
    runtime: str,
) -> None:
    container = default_cell(backend, created, tmp_path, runtime)
    seen = attempts(docker_client, container)
    assert seen["AF_VSOCK"] == "EAFNOSUPPORT"
    assert seen["AF_ALG"] == seen["AF_TIPC"] == seen["AF_PACKET"] == "EAFNOSUPPORT"
    assert seen["NETLINK_NETFILTER"] == "EPROTONOSUPPORT"
    assert seen["AF_UNIX"] == seen["AF_INET"] == seen["AF_INET6"] == "ok"
    assert seen["NETLINK_ROUTE"] == "ok"
    assert seen["interfaces"] == ["lo"], "if_nameindex() answers over netlink route"


def test_the_engine_default_profile_lets_vsock_through(
    docker_client: docker.DockerClient, created: Created
) -> None:
    """What the strict profile closes: the same attempt under the engine's default profile."""
    try:
        socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM).close()
    except OSError as exc:
        pytest.skip(f"this host has no vsock transport ({exc.strerror})")
    container = docker_client.containers.run(
        IMAGE,
        ["python3", "-c", "import time; time.sleep(60)"],
        name=created.container(f"agentcell-test-sockets-{secrets.token_hex(6)}"),
        detach=True,
        network_mode="none",
        user="65534:65534",
        cap_drop=["ALL"],
        security_opt=["no-new-privileges"],
        read_only=True,
    )
    assert container.name is not None
    assert attempts(docker_client, container.name)["AF_VSOCK"] == "ok"
