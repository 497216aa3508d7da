"""The sandbox engine against the real Docker Engine, driven directly (no HTTP): warm cells
handed out once and destroyed after, TTL expiry ending a live stream, a command timeout that
leaves no process behind (read from the host's /proc), a restart of the service that keeps
live sandboxes, `verify` on a handed-out sandbox, and bad input refused."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest

from agentcell.daemon.contract import (
    CellUnverified,
    CommandRequest,
    FileRefused,
    Frame,
    QuotaExceeded,
    SandboxConflict,
    SandboxInfo,
    SandboxNotFound,
    TemplateNotFound,
    TimeoutRefused,
)
from agentcell.daemon.records import JsonSandboxRecords
from agentcell.daemon.sandboxes import SandboxManager
from agentcell.runtime.docker.backend import DockerBackend
from agentcell.runtime.docker.proof import DockerProof
from agentcell.spec.template import TemplateSpecDocument, load_template_text
from agentcell.spec.tenant import TenantDocument
from agentcell.trust.config import TrustConfig

SANDBOX = "agentcell/sandbox:0.1.0"
Scenario = Callable[[SandboxManager], Awaitable[None]]


def template(tenant: str, *, pool_min: int = 1, pool_max: int = 4) -> list[TemplateSpecDocument]:
    return load_template_text(
        "apiVersion: agentcell/v1\nkind: SandboxTemplate\n"
        f"metadata: {{name: py, tenant: {tenant}}}\n"
        "spec:\n"
        f"  cell: {{image: '{SANDBOX}', command: [sleep, infinity]}}\n"
        f"  pool: {{min: {pool_min}, max: {pool_max}}}\n"
        "  ttl: {default: 5m, max: 10m}\n",
        file="templates/py.yaml",
    )


@pytest.fixture
def backend(docker_client: docker.DockerClient) -> DockerBackend:
    return DockerBackend(docker_client)


@pytest.fixture
def tenant(backend: DockerBackend) -> Iterator[str]:
    """A fresh tenant; every cell of it is removed afterwards, whatever happened."""
    name = "sb" + secrets.token_hex(3)
    try:
        yield name
    finally:
        for cell in backend.cells(tenant=name):
            backend.down(cell.tenant, cell.agent, timeout_s=1)


def manager(backend: DockerBackend, tenant: str, records: Path, **kwargs: int) -> SandboxManager:
    return SandboxManager(
        backend=backend,
        templates=template(tenant, **kwargs),
        records=JsonSandboxRecords(records),
        trust=TrustConfig(),
        reap_interval_s=0.2,
    )


async def started(engine: SandboxManager) -> SandboxManager:
    await engine.start()
    return engine


async def ready(engine: SandboxManager, count: int = 1, within_s: float = 90) -> None:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if sum(info.ready for info in engine.templates(None)) >= count:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"the pool did not fill to {count} within {within_s} s")


async def run(
    engine: SandboxManager, sandbox: SandboxInfo, argv: list[str], **kwargs: float
) -> list[Frame]:
    command = await engine.run(None, sandbox.id, CommandRequest(argv=argv, shell=None, **kwargs))  # type: ignore[arg-type]
    return [frame async for frame in engine.frames(None, sandbox.id, command.id, after=-1)]


def stdout(frames: list[Frame]) -> bytes:
    return b"".join(frame.data for frame in frames if frame.type == "stdout")


def container_exists(client: docker.DockerClient, name: str) -> bool:
    try:
        client.containers.get(name)
    except docker.errors.NotFound:
        return False
    return True


def test_warm_cells_are_handed_out_once_and_never_return(
    backend: DockerBackend, tenant: str, tmp_path: Path, docker_client: docker.DockerClient
) -> None:
    async def scenario() -> None:
        engine = await started(manager(backend, tenant, tmp_path))
        try:
            await ready(engine)
            first = await engine.create(tenant, "py", timeout_s=None, as_tenant=None)
            assert first.warm and first.state == "running"
            frames = await run(engine, first, ["sh", "-c", "echo secret > /tmp/mine; id -u"])
            assert frames[-1].end is not None and frames[-1].end.exit_code == 0
            await engine.kill(tenant, first.id)
            assert not container_exists(docker_client, first.cell)
            assert engine.sandbox(tenant, first.id).state == "killed"
            await ready(engine)
            second = await engine.create(tenant, "py", timeout_s=None, as_tenant=None)
            assert second.warm and second.id != first.id
            frames = await run(engine, second, ["sh", "-c", "test -e /tmp/mine; echo $?"])
            assert stdout(frames) == b"1\n"
            with pytest.raises(SandboxConflict):
                await engine.run(tenant, first.id, CommandRequest(argv=["true"], shell=None))
        finally:
            await engine.close()

    asyncio.run(scenario())


def test_a_handed_out_sandbox_passes_verify(
    backend: DockerBackend, tenant: str, tmp_path: Path
) -> None:
    async def scenario() -> SandboxInfo:
        engine = await started(manager(backend, tenant, tmp_path))
        try:
            await ready(engine)
            return await engine.create(None, "py", timeout_s=60, as_tenant=tenant)
        finally:
            await engine.close()

    sandbox = asyncio.run(scenario())
    proof = DockerProof(backend)
    (subject,) = proof.subjects([sandbox.cell])
    report = proof.report(subject)
    assert report.ok, [check for check in report.mismatches]


class FailingProof(SandboxManager):
    """A manager whose proof finds a mismatch on every cell (as verify's cross.uid did when
    two services in two homes gave one uid to cells of two tenants)."""

    def _verify(self, tenant: str, sandbox_id: str) -> list[str]:
        assert super()._verify(tenant, sandbox_id) == []  # the real proof passed
        return ["cross.uid: expected the cell's own uid, saw uid 1000000001 is also cell x/y"]


def test_a_cold_cell_that_fails_verify_is_destroyed_never_handed_out(
    backend: DockerBackend, tenant: str, tmp_path: Path
) -> None:
    async def scenario() -> None:
        engine = FailingProof(
            backend=backend,
            templates=template(tenant, pool_min=0),
            records=JsonSandboxRecords(tmp_path),
            trust=TrustConfig(),
            reap_interval_s=0.2,
        )
        await engine.start()
        try:
            with pytest.raises(CellUnverified, match=r"cold cell .* failed verify .* cross\.uid"):
                await engine.create(tenant, "py", timeout_s=None, as_tenant=None)
            assert engine.sandboxes(None) == []
            assert backend.cells(tenant=tenant) == []
        finally:
            await engine.close()

    asyncio.run(scenario())


def test_ttl_expiry_destroys_the_cell_and_ends_the_stream(
    backend: DockerBackend, tenant: str, tmp_path: Path, docker_client: docker.DockerClient
) -> None:
    async def scenario() -> None:
        engine = await started(manager(backend, tenant, tmp_path, pool_min=0))
        try:
            sandbox = await engine.create(tenant, "py", timeout_s=3, as_tenant=None)
            assert not sandbox.warm
            frames = await asyncio.wait_for(
                run(engine, sandbox, ["sleep", "60"], timeout_s=120), 30
            )
            end = frames[-1].end
            assert end is not None and end.reason == "sandbox_expired"
            assert engine.sandbox(tenant, sandbox.id).state == "expired"
            assert not container_exists(docker_client, sandbox.cell)
        finally:
            await engine.close()

    asyncio.run(scenario())


def _cell_processes(container_id: str, argv: bytes) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cgroup = (entry / "cgroup").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if container_id in cgroup and cmdline == argv:
            found.append(int(entry.name))
    return found


def test_a_timeout_kills_every_process_of_the_command(
    backend: DockerBackend, tenant: str, tmp_path: Path, docker_client: docker.DockerClient
) -> None:
    async def scenario() -> None:
        engine = await started(manager(backend, tenant, tmp_path, pool_min=0))
        try:
            sandbox = await engine.create(tenant, "py", timeout_s=None, as_tenant=None)
            container_id = str(docker_client.containers.get(sandbox.cell).id)
            started_at = time.monotonic()
            frames = await run(
                engine, sandbox, ["sh", "-c", "sleep 300 & sleep 300 & echo up; wait"], timeout_s=2
            )
            assert time.monotonic() - started_at < 20
            end = frames[-1].end
            assert end is not None and end.timed_out and end.reason == "timeout"
            assert stdout(frames) == b"up\n"
            assert _cell_processes(container_id, b"sleep\x00300\x00") == []
            # The sandbox lives on and runs the next command.
            frames = await run(engine, sandbox, ["echo", "next"])
            assert stdout(frames) == b"next\n"
        finally:
            await engine.close()

    asyncio.run(scenario())


def test_background_command_wait_and_kill(
    backend: DockerBackend, tenant: str, tmp_path: Path
) -> None:
    async def scenario() -> None:
        engine = await started(manager(backend, tenant, tmp_path, pool_min=0))
        try:
            sandbox = await engine.create(tenant, "py", timeout_s=None, as_tenant=None)
            request = CommandRequest(argv=["sleep", "60"], shell=None, background=True)
            command = await engine.run(tenant, sandbox.id, request)
            assert command.state == "running"
            waited = await engine.wait(tenant, sandbox.id, command.id, 0.5)
            assert waited.state == "running"
            killed = await engine.kill_command(tenant, sandbox.id, command.id)
            assert killed.end is not None and killed.end.reason == "killed" and killed.end.killed
            quick = await engine.run(
                tenant, sandbox.id, CommandRequest(argv=None, shell="echo $((6*7))")
            )
            done = await engine.wait(tenant, sandbox.id, quick.id, 30)
            assert done.end is not None and done.end.exit_code == 0
            frames = [f async for f in engine.frames(tenant, sandbox.id, quick.id, after=0)]
            assert frames[0].seq == 1 and stdout(frames) == b"42\n"
        finally:
            await engine.close()

    asyncio.run(scenario())


def test_a_restarted_service_keeps_live_sandboxes(
    backend: DockerBackend, tenant: str, tmp_path: Path, docker_client: docker.DockerClient
) -> None:
    async def scenario() -> None:
        first = await started(manager(backend, tenant, tmp_path))
        try:
            await ready(first)
            kept = await first.create(tenant, "py", timeout_s=None, as_tenant=None)
            ended = await first.create(tenant, "py", timeout_s=None, as_tenant=None)
            await ready(first)
        finally:
            await first.close()
        # While no service runs, one sandbox's cell dies and a stray sandbox cell appears.
        docker_client.containers.get(ended.cell).remove(force=True)
        second = await started(manager(backend, tenant, tmp_path))
        try:
            assert second.sandbox(tenant, kept.id).state == "running"
            assert second.sandbox(tenant, ended.id).state == "dead"
            frames = await run(second, kept, ["echo", "still here"])
            assert stdout(frames) == b"still here\n"
            assert second.templates(tenant)[0].ready == 1  # the waiting warm cell, re-verified
            await second.kill(tenant, kept.id)
        finally:
            await second.close()

    asyncio.run(scenario())


def test_bad_input_is_refused_with_the_numbers(
    backend: DockerBackend, tenant: str, tmp_path: Path
) -> None:
    async def scenario() -> None:
        engine = await started(manager(backend, tenant, tmp_path, pool_min=0))
        try:
            with pytest.raises(TemplateNotFound):
                await engine.create(tenant, "nope", timeout_s=None, as_tenant=None)
            with pytest.raises(TemplateNotFound):
                await engine.create("other", "py", timeout_s=None, as_tenant=None)
            with pytest.raises(TimeoutRefused) as refused:
                await engine.create(tenant, "py", timeout_s=3600, as_tenant=None)
            assert "3600" in refused.value.what and "600" in refused.value.what
            assert backend.cells(tenant=tenant) == []
        finally:
            await engine.close()

    asyncio.run(scenario())


@dataclass(frozen=True)
class StoredTenant:
    name: str
    version: int
    document: TenantDocument


class Tenants:
    """A tenant directory holding given documents (what the control plane would answer)."""

    def __init__(self, *documents: TenantDocument) -> None:
        self.documents = documents

    def tenants(self) -> list[StoredTenant]:
        return [StoredTenant(name=d.name, version=1, document=d) for d in self.documents]

    def put_tenant(self, document: Mapping[str, Any], *, changed_by: str) -> StoredTenant:
        raise NotImplementedError

    def delete_tenant(self, name: str) -> bool:
        raise NotImplementedError


def quota(tenant: str, **limits: object) -> TenantDocument:
    return TenantDocument.model_validate(
        {
            "apiVersion": "agentcell/v1",
            "kind": "Tenant",
            "metadata": {"name": tenant},
            "spec": {"quota": limits},
        }
    )


def test_pools_and_sandboxes_count_against_the_tenants_quota(
    backend: DockerBackend, tenant: str, tmp_path: Path
) -> None:
    async def scenario() -> None:
        too_big = SandboxManager(
            backend=backend,
            templates=template(tenant, pool_min=3),
            records=JsonSandboxRecords(tmp_path),
            directory=Tenants(quota(tenant, cells=2)),
            trust=TrustConfig(),
        )
        with pytest.raises(QuotaExceeded) as refused:
            await too_big.start()
        assert f"tenant {tenant}: cells 0 in use + 3 asked > 2 quota" in refused.value.what
        await too_big.close()
        engine = SandboxManager(
            backend=backend,
            templates=template(tenant, pool_min=1),
            records=JsonSandboxRecords(tmp_path),
            directory=Tenants(quota(tenant, cells=2)),
            trust=TrustConfig(),
            reap_interval_s=0.2,
        )
        await engine.start()
        try:
            await ready(engine)
            warm = await engine.create(tenant, "py", timeout_s=None, as_tenant=None)
            cold = await engine.create(tenant, "py", timeout_s=None, as_tenant=None)
            assert warm.warm and not cold.warm
            with pytest.raises(QuotaExceeded) as refused:
                await engine.create(tenant, "py", timeout_s=None, as_tenant=None)
            assert "cells 2 in use + 1 asked > 2 quota" in refused.value.what
            assert len(backend.cells(tenant=tenant)) == 2
        finally:
            await engine.close()

    asyncio.run(scenario())


def test_files_stay_in_their_sandbox(backend: DockerBackend, tenant: str, tmp_path: Path) -> None:
    pytest.importorskip("agentcell.runtime.docker.files")

    async def chunks(data: bytes) -> AsyncIterator[bytes]:
        for start in range(0, len(data), 65536):
            yield data[start : start + 65536]

    async def scenario() -> None:
        engine = await started(manager(backend, tenant, tmp_path, pool_min=2))
        try:
            await ready(engine, 2)
            first = await engine.create(tenant, "py", timeout_s=None, as_tenant=None)
            data = secrets.token_bytes(3 * 1024 * 1024)
            size = await engine.write_file(tenant, first.id, "/tmp/data.bin", chunks(data))
            assert size == len(data)
            read = b"".join([c async for c in engine.read_file(tenant, first.id, "/tmp/data.bin")])
            assert read == data
            names = [entry.name for entry in await engine.list_files(tenant, first.id, "/tmp")]
            assert "data.bin" in names
            with pytest.raises(FileRefused) as refused:
                await engine.write_file(tenant, first.id, "/etc/passwd", chunks(b"x"))
            assert refused.value.reason == "bad_path"
            await engine.kill(tenant, first.id)
            second = await engine.create(tenant, "py", timeout_s=None, as_tenant=None)
            assert second.warm
            with pytest.raises(FileRefused) as refused:
                [c async for c in engine.read_file(tenant, second.id, "/tmp/data.bin")]
            assert refused.value.reason == "not_found"
        finally:
            await engine.close()

    asyncio.run(scenario())


def test_set_timeout_extends_from_now_within_the_maximum(
    backend: DockerBackend, tenant: str, tmp_path: Path
) -> None:
    async def scenario() -> None:
        engine = await started(manager(backend, tenant, tmp_path, pool_min=0))
        try:
            sandbox = await engine.create(tenant, "py", timeout_s=2, as_tenant=None)
            longer = await engine.set_timeout(tenant, sandbox.id, 120)
            assert longer.expires_at >= time.time() + 119
            with pytest.raises(TimeoutRefused):
                await engine.set_timeout(tenant, sandbox.id, 601)
            await asyncio.sleep(3)
            assert engine.sandbox(tenant, sandbox.id).state == "running"
            with pytest.raises(SandboxNotFound):
                engine.sandbox("someone", sandbox.id)
        finally:
            await engine.close()

    asyncio.run(scenario())
