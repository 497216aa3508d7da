"""Each example spec becomes a cell whose engine settings *and* in-cell view match the spec,
on every runtime this host offers (runsc only for cells without network)."""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from docker.models.containers import Container

from agentcell.cell.users import UID_RANGE
from agentcell.errors import HostError
from agentcell.policy import AdmittedSpec, admit
from agentcell.runtime.cells import Cell
from agentcell.runtime.docker.backend import DockerBackend
from agentcell.spec.load import SpecDocument, load_paths
from agentcell.spec.model import RuntimeName
from tests.policies import AdmitAll

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
RUNTIMES: tuple[RuntimeName, ...] = ("runc", "crun", "runsc")


def with_runtime(doc: SpecDocument, runtime: RuntimeName, tenant: str) -> SpecDocument:
    spec = doc.document.spec
    security = spec.security.model_copy(update={"runtime": runtime})
    metadata = doc.document.metadata.model_copy(update={"tenant": tenant})
    document = doc.document.model_copy(
        update={"metadata": metadata, "spec": spec.model_copy(update={"security": security})}
    )
    return dataclasses.replace(doc, document=document)


@pytest.fixture(scope="module")
def backend(docker_client: docker.DockerClient) -> DockerBackend:
    return DockerBackend(docker_client)


@pytest.fixture
def tenant(backend: DockerBackend) -> Iterator[str]:
    """A fresh tenant name; every cell of it is removed afterwards."""
    name = "it" + secrets.token_hex(3)
    try:
        yield name
    finally:
        for cell in backend.cells(tenant=name):
            backend.down(cell.tenant, cell.agent)


def run_in_cell(container: Container, argv: list[str]) -> tuple[int, str]:
    result = container.exec_run(argv)
    assert isinstance(result.output, bytes)
    return int(result.exit_code or 0), result.output.decode()


def read_in_cell(container: Container, path: str) -> str:
    code, output = run_in_cell(container, ["cat", path])
    assert code == 0, output
    return output


def status_fields(text: str) -> dict[str, str]:
    return {
        key: value.strip()
        for key, _, value in (line.partition(":") for line in text.splitlines())
        if value
    }


def host_cgroup_file(pid: int, controller: str, name: str) -> str:
    """A cgroup v1 file of the process, read on the host (not through the cell)."""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(","):
            return Path(f"/sys/fs/cgroup/{controller}{path}/{name}").read_text().strip()
    raise AssertionError(f"process {pid} has no {controller} cgroup")


def launch(backend: DockerBackend, example: str, runtime: RuntimeName, tenant: str) -> AdmittedSpec:
    (doc,) = load_paths([EXAMPLES / example])
    admitted = admit(with_runtime(doc, runtime, tenant), AdmitAll())
    result = backend.up(admitted)
    assert result.action == "created"
    return admitted


CELLS = [
    (example, runtime)
    for example in ("monitor-agent.yaml", "sandbox.yaml")
    for runtime in RUNTIMES
    # gVisor cannot serve the host's /proc and /sys: that cell is refused (test below).
    if not (example == "monitor-agent.yaml" and runtime == "runsc")
]


def test_gvisor_cell_with_host_proc_is_refused_before_anything_is_made(
    backend: DockerBackend, tenant: str
) -> None:
    (doc,) = load_paths([EXAMPLES / "monitor-agent.yaml"])
    admitted = admit(with_runtime(doc, "runsc", tenant), AdmitAll())
    with pytest.raises(HostError, match="gVisor cannot serve host /proc, /sys"):
        backend.up(admitted)
    assert backend.cells(tenant=tenant) == []


@pytest.mark.parametrize(("example", "runtime"), CELLS)
def test_example_cell_matches_its_spec(
    backend: DockerBackend, tenant: str, example: str, runtime: RuntimeName
) -> None:
    admitted = launch(backend, example, runtime, tenant)
    spec = admitted.doc.document.spec
    cell: Cell = backend.find(f"{tenant}/{admitted.doc.name}")
    container = backend.container(cell.key)

    # What the engine holds.
    host_config = container.attrs["HostConfig"]
    # The cell runs as a host uid of its own from agentcell's range, recorded on the cell.
    cell_uid = int(container.labels["org.agentcell.uid"])
    assert cell_uid in UID_RANGE
    assert container.attrs["Config"]["User"] == f"{cell_uid}:{cell_uid}"
    assert host_config["CapDrop"] == ["ALL"]
    assert not host_config["CapAdd"]
    assert host_config["ReadonlyRootfs"] is True
    assert "no-new-privileges:true" in host_config["SecurityOpt"]
    assert host_config["Privileged"] is False
    assert host_config["NanoCpus"] == int(spec.resources.cpus * 1e9)
    assert host_config["Memory"] == spec.resources.memory
    assert host_config["MemorySwap"] == spec.resources.memory_swap
    assert host_config["PidsLimit"] == spec.resources.pids
    assert host_config["NetworkMode"] == "none"
    assert host_config["Runtime"] == runtime
    assert sorted(host_config["Tmpfs"]) == sorted(t.path for t in spec.resources.tmpfs)
    assert sorted(
        (m["Source"], m["Target"], m["ReadOnly"], m["BindOptions"]["NonRecursive"])
        for m in host_config.get("Mounts") or []
    ) == sorted((m.source, m.target, True, True) for m in spec.host.mounts)
    assert host_config["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 5}
    assert container.attrs["Config"]["Healthcheck"]["Test"][0] == "CMD"

    # What the kernel enforces, read on the host: the cgroup files of the cell's process.
    pid = cell.pid
    assert pid > 0
    assert int(host_cgroup_file(pid, "memory", "memory.limit_in_bytes")) == spec.resources.memory
    assert (
        int(host_cgroup_file(pid, "memory", "memory.memsw.limit_in_bytes"))
        == spec.resources.memory_swap
    )
    assert int(host_cgroup_file(pid, "pids", "pids.max")) == spec.resources.pids
    quota = int(host_cgroup_file(pid, "cpu", "cpu.cfs_quota_us"))
    period = int(host_cgroup_file(pid, "cpu", "cpu.cfs_period_us"))
    assert quota / period == pytest.approx(spec.resources.cpus)

    # What the process sees inside the cell.
    status = status_fields(read_in_cell(container, "/proc/self/status"))
    uid = gid = str(cell_uid)
    assert status["Uid"].split() == [uid] * 4
    assert status["Gid"].split() == [gid] * 4
    assert int(status["CapEff"], 16) == 0
    assert int(status["CapBnd"], 16) == 0
    write_code, write_error = run_in_cell(container, ["touch", "/agentcell-should-not-exist"])
    assert write_code != 0
    mounts = read_in_cell(container, "/proc/self/mounts").splitlines()
    if runtime == "runsc":
        # gVisor answers from its own kernel: no seccomp inside the sandbox (the sentry itself
        # is filtered on the host), and no NoNewPrivs line at all.
        assert status["Seccomp"] == "0"
        assert "NoNewPrivs" not in status
        assert Path(f"/proc/{pid}/status").read_text().count("Seccomp:\t2") == 1
    else:
        assert status["NoNewPrivs"] == "1"
        assert status["Seccomp"] == "2"
        assert "Read-only file system" in write_error
        root = next(line.split() for line in mounts if line.split()[1] == "/")
        assert "ro" in root[3].split(",")
        memory_limit = read_in_cell(container, "/sys/fs/cgroup/memory/memory.limit_in_bytes")
        assert int(memory_limit) == spec.resources.memory
    for tmpfs in spec.resources.tmpfs:
        (line,) = [m.split() for m in mounts if m.split()[1] == tmpfs.path]
        options = line[3].split(",")
        # Linux prints the size in KiB; gVisor prints bytes.
        assert {f"size={tmpfs.size // 1024}k", f"size={tmpfs.size}"} & set(options), line
        assert "noexec" in options
    for host_mount in spec.host.mounts:
        (line,) = [m.split() for m in mounts if m.split()[1] == host_mount.target]
        assert "ro" in line[3].split(",")
        # The host's submounts (e.g. /sys/fs/cgroup/*, writable on the host) stay behind.
        assert [m for m in mounts if m.split()[1].startswith(host_mount.target + "/")] == []


def test_up_is_idempotent_and_replaces_on_change(backend: DockerBackend, tenant: str) -> None:
    admitted = launch(backend, "sandbox.yaml", "runc", tenant)
    first = backend.find(f"{tenant}/sandbox")
    again = backend.up(admitted)
    assert again.action == "unchanged"
    assert again.cell.container_id == first.container_id

    doc = admitted.doc
    resources = doc.document.spec.resources.model_copy(update={"pids": 96})
    spec = doc.document.spec.model_copy(update={"resources": resources})
    changed = dataclasses.replace(doc, document=doc.document.model_copy(update={"spec": spec}))
    replaced = backend.up(admit(changed, AdmitAll()))
    assert replaced.action == "replaced"
    assert replaced.cell.container_id != first.container_id
    assert replaced.cell.pids == 96
    assert [c.container_id for c in backend.cells(tenant=tenant)] == [replaced.cell.container_id]


def test_stopped_cell_is_started_again(backend: DockerBackend, tenant: str) -> None:
    admitted = launch(backend, "sandbox.yaml", "runc", tenant)
    backend.container(f"{tenant}/sandbox").stop(timeout=5)
    assert backend.up(admitted).action == "started"
    assert backend.find(f"{tenant}/sandbox").state == "running"
