"""Files in a running cell's tmpfs, handled by a process in the cell: a 50 MiB round trip,
list and remove, and every refusal a hostile path or a hostile cell can cause (``..``, paths
outside the tmpfs, symlinks made in the cell, another mount beneath the tmpfs, a 10 GiB upload
into 128 MiB), each leaving the old file as it was, nothing half-written, and the cell working."""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from agentcell.policy import admit
from agentcell.runtime.docker.backend import DockerBackend
from agentcell.runtime.docker.files import CellFileError, CellFiles
from agentcell.spec.load import load_paths
from tests.conftest import TEST_LABEL, Created
from tests.policies import AdmitAll

MiB = 1024 * 1024
SPEC = """\
apiVersion: agentcell/v1
kind: Agent
metadata: {{name: files, tenant: {tenant}}}
spec:
  image: agentcell/sandbox:0.1.0
  command: [sleep, infinity]
  resources:
    cpus: 1
    memory: 512m
    pids: 64
    tmpfs:
      - {{path: /tmp, size: 64m}}
      - {{path: /workspace, size: 128m}}
      - {{path: /data, size: 1m}}
  network: none
"""
TMPFS = ("/tmp", "/workspace", "/data")


@pytest.fixture(scope="module")
def backend(docker_client: docker.DockerClient) -> DockerBackend:
    return DockerBackend(docker_client)


@pytest.fixture(scope="module")
def cell(backend: DockerBackend, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tenant = "itfs" + secrets.token_hex(3)
    path = tmp_path_factory.mktemp("files") / "cell.yaml"
    path.write_text(SPEC.format(tenant=tenant))
    (doc,) = load_paths([path])
    try:
        backend.up(admit(doc, AdmitAll()))
        yield f"agentcell_{tenant}_files"
    finally:
        for made in backend.cells(tenant=tenant):
            backend.down(made.tenant, made.agent, timeout_s=1)


@pytest.fixture
def files(docker_client: docker.DockerClient, cell: str) -> CellFiles:
    return CellFiles(docker_client, cell, TMPFS)


def sh(client: docker.DockerClient, container: str, script: str) -> str:
    result = client.containers.get(container).exec_run(["sh", "-c", script])
    assert result.exit_code == 0, result.output
    assert isinstance(result.output, bytes)
    return result.output.decode()


def pattern(size: int, chunk: int) -> Iterator[bytes]:
    """``size`` bytes that differ everywhere, in chunks of an awkward size."""
    block = hashlib.sha256(b"agentcell").digest() * (chunk // 32 + 1)
    sent, counter = 0, 0
    while sent < size:
        piece = (counter.to_bytes(8, "big") + block)[: min(chunk, size - sent)]
        yield piece
        sent += len(piece)
        counter += 1


def leftovers(files: CellFiles, directory: str) -> list[str]:
    return [e.name for e in files.list(directory) if ".agentcell-" in e.name]


def test_a_50_mib_file_goes_in_and_comes_back_the_same(files: CellFiles) -> None:
    size = 50 * MiB
    sent = hashlib.sha256()
    for piece in pattern(size, 777_777):
        sent.update(piece)
    started = time.monotonic()
    assert files.write("/tmp/big.bin", pattern(size, 777_777)) == size
    written = time.monotonic() - started
    got = hashlib.sha256()
    received = 0
    started = time.monotonic()
    for piece in files.read("/tmp/big.bin"):
        got.update(piece)
        received += len(piece)
    read = time.monotonic() - started
    print(f"50 MiB: write {written:.2f} s, read {read:.2f} s")
    assert received == size
    assert got.hexdigest() == sent.hexdigest()
    (entry,) = [e for e in files.list("/tmp") if e.name == "big.bin"]
    assert (entry.kind, entry.size, entry.path) == ("file", size, "/tmp/big.bin")
    files.remove("/tmp/big.bin")


def test_list_and_remove(docker_client: docker.DockerClient, cell: str, files: CellFiles) -> None:
    sh(docker_client, cell, "mkdir -p /tmp/d/sub && ln -sf /etc /tmp/d/link && mkfifo /tmp/d/fifo")
    assert files.write("/tmp/d/a.txt", [b"hello"]) == 5
    entries = {e.name: e for e in files.list("/tmp/d")}
    assert {name: e.kind for name, e in entries.items()} == {
        "a.txt": "file",
        "sub": "dir",
        "link": "symlink",
        "fifo": "other",
    }
    assert entries["a.txt"].size == 5 and entries["a.txt"].mode == 0o644
    assert entries["a.txt"].path == "/tmp/d/a.txt"
    assert abs(entries["a.txt"].mtime - time.time()) < 60
    # Written as the cell's user, readable by the cell.
    uid = docker_client.api.inspect_container(cell)["Config"]["User"].split(":")[0]
    assert sh(docker_client, cell, "stat -c %u /tmp/d/a.txt; cat /tmp/d/a.txt") == f"{uid}\nhello"
    assert b"".join(files.read("/tmp/d/a.txt")) == b"hello"
    # A write replaces the file whole and keeps its mode.
    sh(docker_client, cell, "chmod 600 /tmp/d/a.txt")
    files.write("/tmp/d/a.txt", [b"bye"])
    (entry,) = [e for e in files.list("/tmp/d") if e.name == "a.txt"]
    assert (entry.size, entry.mode) == (3, 0o600)

    with pytest.raises(CellFileError) as refused:
        files.remove("/tmp/d")
    assert refused.value.reason == "is_directory"
    files.remove("/tmp/d/a.txt")
    files.remove("/tmp/d/sub")
    files.remove("/tmp/d/link")  # the link itself; /etc is not touched
    files.remove("/tmp/d/fifo")
    assert files.list("/tmp/d") == []
    files.remove("/tmp/d")
    for action in (
        lambda: files.remove("/tmp/d"),
        lambda: files.list("/tmp/d"),
        lambda: files.read("/tmp/nothing"),
        lambda: files.write("/tmp/no/dir", [b""]),
    ):
        with pytest.raises(CellFileError) as refused:
            action()
        assert refused.value.reason == "not_found"
    assert "big.bin" not in [e.name for e in files.list("/tmp")]


@pytest.mark.parametrize(
    "path",
    [
        "tmp/x",
        "/tmp/../etc/passwd",
        "/tmp/a/../../etc/passwd",
        "/tmp/./x",
        "/tmp//x",
        "/tmp/x/",
        "//tmp/x",
        "/etc/passwd",
        "/tmp2/x",
        "/tmp2",
        "/",
        "/tmp",
        "/workspace",
        "/tmp/\x00x",
    ],
)
def test_a_path_not_strictly_inside_a_tmpfs_is_refused_on_the_host(
    files: CellFiles, path: str
) -> None:
    with pytest.raises(CellFileError) as refused:
        files.write(path, iter(pytest.fail, None))  # no chunk may be taken
    assert refused.value.reason == "bad_path"
    assert refused.value.fix


def test_a_tmpfs_root_can_be_listed_but_not_read(files: CellFiles) -> None:
    assert isinstance(files.list("/workspace"), list)
    with pytest.raises(CellFileError) as refused:
        files.read("/workspace")
    assert refused.value.reason == "is_directory"


def test_symlinks_made_in_the_cell_are_not_followed(
    docker_client: docker.DockerClient, cell: str, files: CellFiles
) -> None:
    files.write("/data/secret", [b"other tmpfs"])
    sh(
        docker_client,
        cell,
        "ln -sfn /etc /tmp/x && ln -sf /data/secret /tmp/last"
        " && ln -sfn /data /tmp/dir && mkdir -p /tmp/real && ln -sfn /tmp/real /tmp/inside",
    )
    passwd = sh(docker_client, cell, "cat /etc/passwd")
    for path in ("/tmp/x/passwd", "/tmp/last", "/tmp/dir/secret", "/tmp/inside/f"):
        with pytest.raises(CellFileError) as refused:
            files.write(path, [b"owned\n"])
        assert refused.value.reason == "bad_path", path
        assert "symlink" in str(refused.value)
        with pytest.raises(CellFileError) as refused:
            files.read(path)
        assert refused.value.reason == "bad_path", path
    with pytest.raises(CellFileError) as refused:
        files.list("/tmp/x")
    assert refused.value.reason == "bad_path"
    assert b"".join(files.read("/data/secret")) == b"other tmpfs"
    assert sh(docker_client, cell, "cat /etc/passwd") == passwd
    assert leftovers(files, "/tmp") == []


def test_a_10_gib_upload_into_128_mib_stops_soon_leaving_the_old_file(
    docker_client: docker.DockerClient, cell: str, files: CellFiles
) -> None:
    files.write("/workspace/model.bin", [b"the old model"])
    taken = 0

    def ten_gib() -> Iterator[bytes]:
        nonlocal taken
        block = b"\xa5" * MiB
        for _ in range(10 * 1024):
            taken += 1
            yield block

    started = time.monotonic()
    with pytest.raises(CellFileError) as refused:
        files.write("/workspace/model.bin", ten_gib())
    elapsed = time.monotonic() - started
    print(f"10 GiB into 128 MiB: refused after {taken} MiB taken, {elapsed:.2f} s")
    assert refused.value.reason == "too_large"
    assert "full" in str(refused.value)
    # Stopped once the tmpfs was full: 128 MiB, and what the pipes held on the way.
    assert taken < 200
    assert b"".join(files.read("/workspace/model.bin")) == b"the old model"
    assert leftovers(files, "/workspace") == []
    # The space is free again and the cell works.
    assert sh(docker_client, cell, "df -k /workspace | tail -1").split()[2] == "4"
    assert files.write("/workspace/after.txt", [b"ok"]) == 2
    files.remove("/workspace/after.txt")


def test_an_upload_whose_source_fails_leaves_the_old_file(files: CellFiles) -> None:
    files.write("/tmp/keep.txt", [b"old"])

    def failing() -> Iterator[bytes]:
        yield b"new" * 100_000
        raise OSError("the client went away")

    with pytest.raises(OSError, match="went away"):
        files.write("/tmp/keep.txt", failing())
    assert b"".join(files.read("/tmp/keep.txt")) == b"old"
    assert leftovers(files, "/tmp") == []
    files.remove("/tmp/keep.txt")


def run_hardened(
    client: docker.DockerClient,
    created: Created,
    image: str,
    argv: list[str],
    tmpfs: dict[str, str],
    mem_limit: str = "256m",
) -> str:
    name = created.container("agentcell-test-files-" + secrets.token_hex(4))
    client.containers.run(
        image,
        argv,
        name=name,
        detach=True,
        read_only=True,
        user="65534:65534",
        cap_drop=["ALL"],
        security_opt=["no-new-privileges"],
        network_mode="none",
        tmpfs=tmpfs,
        labels={TEST_LABEL: "test_cell_files"},
    )
    return name


def test_another_mount_beneath_the_tmpfs_is_refused(
    docker_client: docker.DockerClient, created: Created
) -> None:
    name = run_hardened(
        docker_client,
        created,
        "agentcell/sandbox:0.1.0",
        ["sleep", "infinity"],
        {"/tmp": "size=8m,mode=1777", "/tmp/inner": "size=1m,mode=1777"},
    )
    files = CellFiles(docker_client, name, ["/tmp"])
    assert files.write("/tmp/ok", [b"x"]) == 1
    for action in (lambda: files.write("/tmp/inner/x", [b"x"]), lambda: files.list("/tmp/inner")):
        with pytest.raises(CellFileError) as refused:
            action()
        assert refused.value.reason == "bad_path"
        assert "another mount" in str(refused.value)


def test_an_image_without_a_shell_works_and_one_without_python3_is_not_supported(
    docker_client: docker.DockerClient, created: Created, tmp_path: Path
) -> None:
    # python-runtime: an interpreter and nothing else, no shell.
    name = run_hardened(
        docker_client,
        created,
        "agentcell/python-runtime:0.1.0",
        ["python3", "-c", "import time; time.sleep(3600)"],
        {"/tmp": "size=8m,mode=1777"},
    )
    files = CellFiles(docker_client, name, ["/tmp"])
    assert files.write("/tmp/f", [b"no shell needed"]) == 15
    assert b"".join(files.read("/tmp/f")) == b"no shell needed"

    # No local image lacks python3: make one from the base, removed afterwards.
    tag = "agentcell-test/no-python:" + secrets.token_hex(4)
    (tmp_path / "Dockerfile").write_text(
        "FROM agentcell/base:bookworm\nRUN rm -f /usr/bin/python3*\n"
    )
    docker_client.images.build(
        path=str(tmp_path),
        tag=tag,
        pull=False,
        rm=True,
        network_mode="none",
        labels={TEST_LABEL: "test_cell_files"},
    )
    try:
        name = run_hardened(
            docker_client, created, tag, ["sleep", "infinity"], {"/tmp": "size=8m,mode=1777"}
        )
        files = CellFiles(docker_client, name, ["/tmp"])
        for action in (
            lambda: files.write("/tmp/f", [b"x"]),
            lambda: files.read("/tmp/f"),
            lambda: files.list("/tmp"),
        ):
            with pytest.raises(CellFileError) as refused:
                action()
            assert refused.value.reason == "not_supported"
            assert "python3" in str(refused.value)
    finally:
        created.remove_all()
        created.containers.clear()
        docker_client.images.remove(tag, force=True)
