"""Cells are isolated from each other, not only from the host: names that cannot collide
across tenants, a host uid per cell, and no way into a neighbour through a host /proc or a
host PID namespace. Each attack here worked against the old scheme (shared uid 1001, names
joined with '-'); the weakened variants show the tests would see it again."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
from docker.models.containers import Container

from agentcell.cell.names import container_name
from agentcell.cell.network import tenant_network
from agentcell.cell.users import UID_RANGE
from agentcell.errors import CellConflict
from agentcell.policy import AdmittedSpec, admit
from agentcell.runtime.docker.backend import DockerBackend
from agentcell.spec.load import SpecDocument, load_text
from tests.conftest import Created
from tests.images import build_labelled
from tests.policies import AdmitAll

SANDBOX = "agentcell/sandbox:0.1.0"
MONITOR = "agentcell/monitor-agent:0.1.0"


def document(tenant: str, name: str, *, image: str = SANDBOX, extra: str = "") -> SpecDocument:
    (doc,) = load_text(
        "apiVersion: agentcell/v1\nkind: Agent\n"
        f"metadata:\n  name: {name}\n  tenant: {tenant}\n"
        f"spec:\n  image: {image}\n{extra}",
        file="cells.yaml",
    )
    return doc


def admitted(tenant: str, name: str, **kwargs: Any) -> AdmittedSpec:
    return admit(document(tenant, name, **kwargs), AdmitAll())


@pytest.fixture(scope="module")
def backend(docker_client: docker.DockerClient) -> DockerBackend:
    return DockerBackend(docker_client)


@pytest.fixture
def prefix(backend: DockerBackend) -> Iterator[str]:
    """A fresh tenant prefix; every cell of every tenant starting with it is removed after."""
    value = "t" + secrets.token_hex(2)
    try:
        yield value
    finally:
        for cell in backend.cells():
            if cell.tenant.startswith(value):
                backend.down(cell.tenant, cell.agent)
        for network in backend.networks.all():
            if network.tenant.startswith(value):
                backend.remove_tenant_network(network.tenant)


def in_cell(container: Container, program: str) -> dict[str, Any]:
    """Run a Python program in the cell; it prints one JSON object."""
    result = container.exec_run(["python3", "-c", program])
    assert isinstance(result.output, bytes)
    assert result.exit_code == 0, result.output.decode()
    decoded: dict[str, Any] = json.loads(result.output.decode().strip().splitlines()[-1])
    return decoded


def uid_of(container: Container) -> int:
    container.reload()
    return int(str(container.attrs["Config"]["User"]).partition(":")[0])


# -- names ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "second"), [(("ux", "a-x"), ("ux-a", "x")), (("a", "b-c"), ("a-b", "c"))]
)
def test_pairs_that_collided_run_side_by_side(
    backend: DockerBackend, prefix: str, first: tuple[str, str], second: tuple[str, str]
) -> None:
    one = admitted(prefix + first[0], first[1])
    two = admitted(prefix + second[0], second[1])
    made_one = backend.up(one)
    made_two = backend.up(two)
    assert (made_one.action, made_two.action) == ("created", "created")
    assert made_one.cell.container != made_two.cell.container
    # Bringing either up again touches neither.
    assert backend.up(one).action == backend.up(two).action == "unchanged"
    assert (
        backend.find(f"{prefix + first[0]}/{first[1]}").container_id == made_one.cell.container_id
    )
    assert (
        backend.find(f"{prefix + second[0]}/{second[1]}").container_id == made_two.cell.container_id
    )
    assert backend.down(prefix + first[0], first[1])
    assert backend.find(f"{prefix + second[0]}/{second[1]}").state == "running"


def test_tenant_networks_of_colliding_pairs_stay_apart(
    backend: DockerBackend, prefix: str, docker_client: docker.DockerClient
) -> None:
    # Tenants a and a-b: each has its own network, and one reaches nothing of the other.
    server = admitted(f"{prefix}a-b", "server", extra="  network: tenant\n")
    client = admitted(f"{prefix}a", "client", extra="  network: tenant\n")
    server_cell = backend.up(server).cell
    client_cell = backend.up(client).cell
    assert server_cell.network == tenant_network(f"{prefix}a-b")
    assert client_cell.network == tenant_network(f"{prefix}a")
    assert server_cell.network != client_cell.network
    listener = backend.container(server_cell.key)
    listener.exec_run(
        ["python3", "-c", "import socket,os\ns=socket.socket();s.bind(('0.0.0.0',8080));"
         "s.listen();os.fork() or [s.accept() for _ in iter(int, 1)]"],
        detach=True,
    )  # fmt: skip
    listener.reload()
    address = next(iter(listener.attrs["NetworkSettings"]["Networks"].values()))["IPAddress"]
    reached = in_cell(
        backend.container(client_cell.key),
        "import json,socket\ns=socket.socket();s.settimeout(2)\n"
        f"try:\n s.connect(({address!r},8080));r=True\nexcept OSError as e:\n r=str(e)\n"
        "print(json.dumps({'reached':r}))",
    )
    assert reached["reached"] is not True


def test_a_cell_of_another_tenant_found_by_name_is_never_touched(
    backend: DockerBackend, prefix: str, docker_client: docker.DockerClient, created: Created
) -> None:
    # A container carrying tenant B's labels under tenant A's cell name.
    victim = backend.up(admitted(f"{prefix}b", "x")).cell
    squatter_name = created.container(container_name(f"{prefix}a", "x"))
    labels = docker_client.containers.get(victim.container_id).labels
    docker_client.containers.create(SANDBOX, ["true"], name=squatter_name, labels=labels)
    with pytest.raises(
        CellConflict, match=f"is cell {prefix}b/x of tenant {prefix}b, not {prefix}a/x"
    ):
        backend.up(admitted(f"{prefix}a", "x"))
    with pytest.raises(CellConflict, match=f"{prefix}b/x"):
        backend.down(f"{prefix}a", "x")
    assert docker_client.containers.get(squatter_name).status == "created"
    assert backend.find(f"{prefix}b/x").container_id == victim.container_id


def test_a_cell_under_the_old_name_is_migrated(
    backend: DockerBackend, prefix: str, docker_client: docker.DockerClient, created: Created
) -> None:
    spec = admitted(prefix, "old")
    current = backend.up(spec).cell
    container = docker_client.containers.get(current.container_id)
    legacy = f"agentcell-{prefix}-old"
    container.rename(legacy)
    created.container(legacy)
    assert backend.find(f"{prefix}/old").container_id == current.container_id
    result = backend.up(spec)
    assert result.action == "replaced"
    assert result.cell.container == container_name(prefix, "old")
    assert [c.container for c in backend.cells(tenant=prefix)] == [container_name(prefix, "old")]


# -- one host uid per cell ------------------------------------------------------------------


def test_every_cell_gets_its_own_uid_and_keeps_it(backend: DockerBackend, prefix: str) -> None:
    cells = [backend.up(admitted(f"{prefix}{i}", "cell")).cell for i in range(3)]
    uids = [uid_of(backend.container(cell.key)) for cell in cells]
    assert len(set(uids)) == 3
    assert all(uid in UID_RANGE for uid in uids)
    # A replaced cell keeps its uid (its files stay its own).
    doc = admitted(f"{prefix}0", "cell", extra="  resources: {pids: 96}\n")
    replaced = backend.up(doc)
    assert replaced.action == "replaced"
    assert uid_of(backend.container(replaced.cell.key)) == uids[0]


def test_batch_allocation_hands_out_distinct_uids(backend: DockerBackend, prefix: str) -> None:
    specs = [admitted(prefix, f"c{i}") for i in range(3)]
    with backend.uid_allocation(specs) as uids:
        assert len(set(uids.values())) == 3
        for spec in specs:
            backend.up(spec, uid=uids[spec.doc.document.key])
    with backend.uid_allocation([admitted(prefix, "c9")]) as later:
        assert not set(later.values()) & set(uids.values())


def test_a_pinned_uid_held_by_another_tenant_is_refused(
    backend: DockerBackend, prefix: str
) -> None:
    holder = backend.up(admitted(f"{prefix}a", "holder")).cell
    taken = uid_of(backend.container(holder.key))
    pinned = admitted(f"{prefix}b", "pinned", extra=f"  security: {{user: {taken}}}\n")
    with pytest.raises(CellConflict, match=f"pins uid {taken}, which cell {prefix}a/holder"):
        backend.up(pinned)
    assert backend.cells(tenant=f"{prefix}b") == []


# -- no way into a neighbour -----------------------------------------------------------------

_ATTACK = """
import json, os, sys
pid = {pid}
base = {proc!r} + "/" + str(pid)
out = {{}}
def attempt(name, action):
    try:
        out[name] = repr(action())[:2000]
    except OSError as exc:
        out[name] = "refused: " + exc.__class__.__name__
attempt("root", lambda: open(base + "/root/tmp/secret").read())
attempt("cwd", lambda: os.listdir(base + "/cwd"))
attempt("environ", lambda: open(base + "/environ", "rb").read())
def mem():
    with open(base + "/maps") as maps:
        start = int(maps.readline().split("-")[0], 16)
    with open(base + "/mem", "rb") as memory:
        memory.seek(start)
        return memory.read(16)
attempt("mem", mem)
def fd():
    descriptor = os.open(base + "/fd/1", os.O_WRONLY)
    os.write(descriptor, b"written by the neighbour\\n")
    return "wrote"
attempt("fd", fd)
if {signal}:
    attempt("signal", lambda: os.kill(pid, 0) or "signalled")
print(json.dumps(out))
"""


def victim_cell(backend: DockerBackend, tenant: str) -> tuple[Container, int]:
    cell = backend.up(admitted(tenant, "victim", extra="  env: {VICTIM_SECRET: s3cret}\n")).cell
    container = backend.container(cell.key)
    in_cell(container, "open('/tmp/secret','w').write('s3cret');print('{}')")
    container.reload()
    return container, int(container.attrs["State"]["Pid"])


@pytest.mark.parametrize("host_pid", [False, True], ids=["host-proc", "host-pid"])
def test_a_monitoring_cell_cannot_reach_a_sandbox_of_another_tenant(
    backend: DockerBackend, prefix: str, host_pid: bool
) -> None:
    _, pid = victim_cell(backend, f"{prefix}b")
    extra = (
        "  host:\n    pid: true\n"
        if host_pid
        else ("  host:\n    mounts: [{source: /proc, target: /host/proc}]\n")
    )
    monitor = backend.up(admitted(f"{prefix}a", "monitor", image=MONITOR, extra=extra)).cell
    found = in_cell(
        backend.container(monitor.key),
        _ATTACK.format(pid=pid, proc="/proc" if host_pid else "/host/proc", signal=host_pid),
    )
    assert found, found
    assert all(value.startswith("refused: PermissionError") for value in found.values()), found


def test_the_same_attack_succeeds_when_the_uid_is_shared(
    backend: DockerBackend, prefix: str
) -> None:
    """The weakened pair: a monitor pinned to the sandbox's uid reads it all. This is what
    every cell could do to every other under the old shared uid 1001."""
    victim, pid = victim_cell(backend, f"{prefix}b")
    uid = uid_of(victim)
    extra = (
        f"  security: {{user: {uid}}}\n"
        "  host:\n    mounts: [{source: /proc, target: /host/proc}]\n"
    )
    monitor = backend.up(admitted(f"{prefix}b", "monitor", image=MONITOR, extra=extra)).cell
    found = in_cell(
        backend.container(monitor.key), _ATTACK.format(pid=pid, proc="/host/proc", signal=False)
    )
    assert found["root"] == "'s3cret'"
    assert "VICTIM_SECRET" in found["environ"]
    assert found["fd"] == "'wrote'"
    assert not found["mem"].startswith("refused")


# -- labels only agentcell sets ----------------------------------------------------------------


@pytest.fixture
def forged_image(docker_client: docker.DockerClient) -> Iterator[str]:
    tag = build_labelled(
        docker_client,
        f"agentcell-test/forged:{secrets.token_hex(4)}",
        {
            "org.agentcell.managed": "true",
            "org.agentcell.tenant": "demo",
            "org.agentcell.exceptions": "AC-003,AC-005,AC-007",
        },
    )
    try:
        yield tag
    finally:
        docker_client.images.remove(tag, force=True)


def test_a_container_from_an_image_with_agentcell_labels_is_no_cell(
    backend: DockerBackend, docker_client: docker.DockerClient, created: Created, forged_image: str
) -> None:
    from agentcell.policy.presets import preset
    from agentcell.runtime.docker.facts import observe_host

    name = created.container(f"forged-{secrets.token_hex(3)}")
    docker_client.containers.create(forged_image, ["sleep", "60"], name=name, user="0")
    assert name not in [cell.container for cell in backend.cells()]
    (observed,) = [o for o in observe_host(docker_client) if o.view.name == name]
    assert not observed.managed
    assert observed.view.exceptions == ()
    rules = {f.rule for f in preset("restricted").judge(observed.view) if not f.excepted}
    assert {"AC-039", "AC-005"} <= rules  # judged as what it is: a root container


def test_launching_an_image_with_agentcell_labels_is_refused(
    backend: DockerBackend, prefix: str, forged_image: str, tmp_path: Path
) -> None:
    from agentcell.errors import AdmissionError
    from agentcell.launch import up_files
    from agentcell.trust.config import TrustConfig

    path = tmp_path / "forged.yaml"
    path.write_text(
        "apiVersion: agentcell/v1\nkind: Agent\n"
        f"metadata: {{name: forged, tenant: {prefix}}}\n"
        f"spec:\n  image: {forged_image}\n  healthcheck: {{command: [python3, -V]}}\n"
    )
    with pytest.raises(AdmissionError, match="AC-039"):
        up_files([path], policy_name="restricted", backend=backend, warn=lambda _: None,
                 trust=TrustConfig())  # fmt: skip
    assert backend.cells(tenant=prefix) == []
