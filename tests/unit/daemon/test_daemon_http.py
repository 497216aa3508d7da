"""The host service's HTTP layer without Docker: the route table against the doc and the
OpenAPI document, tokens at rest, the error mapping, and the one authentication middleware on
a real loopback server over an engine that implements the contract in memory."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from agentcell.daemon.app import ROUTES, build_app, problem_of
from agentcell.daemon.contract import (
    CommandInfo,
    CommandNotFound,
    CommandRequest,
    FileEntry,
    FileRefused,
    Frame,
    PoolExhausted,
    QuotaExceeded,
    SandboxConflict,
    SandboxInfo,
    SandboxNotFound,
    TemplateInfo,
    TemplateNotFound,
    TimeoutRefused,
)
from agentcell.daemon.openapi import document
from agentcell.daemon.store import DaemonStore
from agentcell.daemon.tokens import TokenAuthority, bearer_token
from agentcell.errors import EngineUnavailable, InvalidInput

DOC = Path(__file__).resolve().parents[3] / "docs" / "sandbox-api.md"


def test_the_route_table_is_the_documented_one() -> None:
    rows = re.findall(
        r"^\| (GET|POST|PUT|DELETE) \| `([^`?]+)(?:\?[^`]*)?` \| (\w+) \|", DOC.read_text(), re.M
    )
    documented = {(method, path, audience) for method, path, audience in rows}
    assert documented == {(r.method, r.path, r.audience) for r in ROUTES}


def test_openapi_comes_from_the_route_table() -> None:
    paths = document(ROUTES)["paths"]
    operations = {(m.upper(), p) for p, ops in paths.items() for m in ops}
    assert operations == {(r.method, r.path) for r in ROUTES}
    for route in ROUTES:
        operation = paths[route.path][route.method.lower()]
        assert operation["x-agentcell-audience"] == route.audience
        assert (operation["security"] == []) == (route.audience == "public")


@pytest.mark.parametrize(
    ("error", "status", "reason"),
    [
        (SandboxNotFound("x"), 404, "sandbox_not_found"),
        (TemplateNotFound("x"), 404, "template_not_found"),
        (CommandNotFound("x"), 404, "command_not_found"),
        (SandboxConflict("x"), 409, "sandbox_not_running"),
        (TimeoutRefused("x"), 400, "timeout_refused"),
        (FileRefused("x", reason="not_found"), 404, "not_found"),
        (FileRefused("x", reason="too_large"), 413, "too_large"),
        (FileRefused("x", reason="symlink"), 400, "symlink"),
        (QuotaExceeded("x"), 429, "quota_exceeded"),
        (PoolExhausted("x"), 429, "pool_exhausted"),
        (EngineUnavailable("x"), 503, "engine_unavailable"),
        (InvalidInput("x"), 400, "bad_input"),
    ],
)
def test_engine_errors_get_the_documented_status(
    error: Exception, status: int, reason: str
) -> None:
    from agentcell.errors import Error

    assert isinstance(error, Error)
    problem = problem_of(error)
    assert (problem.status, problem.body.reason) == (status, reason)


def test_tokens_are_kept_as_digests_and_revocation_holds(tmp_path: Path) -> None:
    store = DaemonStore.open(tmp_path / "daemon")
    authority = TokenAuthority(store.tokens, admin_token="the-admin-token")
    row, secret = authority.issue("acme")
    assert secret not in (tmp_path / "daemon" / "daemon.db").read_bytes().decode("latin-1")
    assert row.digest != secret and len(row.digest) == 64
    assert authority.identify(secret) is not None
    assert authority.identify(secret).tenant == "acme"  # type: ignore[union-attr]
    admin = authority.identify("the-admin-token")
    assert admin is not None and admin.is_admin
    assert authority.identify(secret + "x") is None
    assert store.tokens.revoke(row.id)
    assert authority.identify(secret) is None
    assert not store.tokens.revoke(row.id)
    with pytest.raises(InvalidInput):
        authority.issue("Not A Tenant")
    store.close()


def test_a_known_token_is_forgotten_at_the_next_commit_by_anyone(tmp_path: Path) -> None:
    store = DaemonStore.open(tmp_path / "daemon")
    authority = TokenAuthority(store.tokens, admin_token="the-admin-token")
    row, secret = authority.issue("acme")
    other_row, other = authority.issue("acme")
    assert authority.known(secret) is None  # never identified yet: the database is asked
    assert authority.identify(secret) is not None
    known = authority.known(secret)
    assert known is not None and known.tenant == "acme"
    assert authority.known(secret + "x") is None
    admin = authority.known("the-admin-token")
    assert admin is not None and admin.is_admin
    # A second connection to the file, as the CLI's `daemon token revoke` has.
    cli = DaemonStore.open(tmp_path / "daemon")
    try:
        assert cli.tokens.revoke(row.id)
    finally:
        cli.close()
    assert authority.known(secret) is None
    assert authority.identify(secret) is None
    # A revocation through the service's own store is a commit too.
    assert authority.identify(other) is not None
    assert store.tokens.revoke(other_row.id)
    assert authority.known(other) is None
    assert authority.identify(other) is None
    store.close()


def test_bearer_token_reads_only_the_bearer_scheme() -> None:
    assert bearer_token("Bearer abc") == "abc"
    assert bearer_token("bearer  abc ") == "abc"
    assert bearer_token("Basic abc") is None
    assert bearer_token("Bearer ") is None
    assert bearer_token(None) is None
    assert bearer_token("Bearer " + "x" * 1000) is None


class MemoryEngine:
    """The contract in memory: one sandbox per tenant, found only by its own tenant."""

    def __init__(self) -> None:
        self.boxes = {
            "sbx-aaaaaaaaaaaaaaaa": SandboxInfo(
                id="sbx-aaaaaaaaaaaaaaaa", tenant="a", template="py", state="running",
                cell="agentcell_a_sbx-aaaaaaaaaaaaaaaa", warm=True, created_at=0.0,
                expires_at=300.0, acquire_ms=1.0,
            )
        }  # fmt: skip

    def _box(self, tenant: str | None, sandbox_id: str) -> SandboxInfo:
        box = self.boxes.get(sandbox_id)
        if box is None or (tenant is not None and box.tenant != tenant):
            raise SandboxNotFound(f"no sandbox {sandbox_id}")
        return box

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def templates(self, tenant: str | None) -> list[TemplateInfo]:
        return []

    async def create(
        self, tenant: str | None, template: str, *, timeout_s: float | None, as_tenant: str | None
    ) -> SandboxInfo:
        raise TemplateNotFound(f"no template {template}")

    def sandbox(self, tenant: str | None, sandbox_id: str) -> SandboxInfo:
        return self._box(tenant, sandbox_id)

    def sandboxes(self, tenant: str | None) -> list[SandboxInfo]:
        return [b for b in self.boxes.values() if tenant in (None, b.tenant)]

    async def kill(self, tenant: str | None, sandbox_id: str) -> None:
        self._box(tenant, sandbox_id)

    async def set_timeout(
        self, tenant: str | None, sandbox_id: str, timeout_s: float
    ) -> SandboxInfo:
        return self._box(tenant, sandbox_id)

    async def run(
        self, tenant: str | None, sandbox_id: str, request: CommandRequest
    ) -> CommandInfo:
        self._box(tenant, sandbox_id)
        return CommandInfo(
            id="cmd-1", sandbox=sandbox_id, argv=("true",), state="running", started_at=0.0,
            ended_at=None, last_seq=-1, end=None,
        )  # fmt: skip

    def command(self, tenant: str | None, sandbox_id: str, command_id: str) -> CommandInfo:
        self._box(tenant, sandbox_id)
        raise CommandNotFound(f"no command {command_id}")

    def commands(self, tenant: str | None, sandbox_id: str) -> list[CommandInfo]:
        self._box(tenant, sandbox_id)
        return []

    async def wait(
        self, tenant: str | None, sandbox_id: str, command_id: str, timeout_s: float
    ) -> CommandInfo:
        return self.command(tenant, sandbox_id, command_id)

    async def frames(
        self, tenant: str | None, sandbox_id: str, command_id: str, *, after: int
    ) -> AsyncIterator[Frame]:
        self._box(tenant, sandbox_id)
        yield Frame(seq=0, type="start", command=command_id, pid=1)

    async def kill_command(
        self, tenant: str | None, sandbox_id: str, command_id: str
    ) -> CommandInfo:
        return self.command(tenant, sandbox_id, command_id)

    async def write_file(
        self, tenant: str | None, sandbox_id: str, path: str, chunks: AsyncIterator[bytes]
    ) -> int:
        self._box(tenant, sandbox_id)
        return sum([len(chunk) async for chunk in chunks])

    async def read_file(
        self, tenant: str | None, sandbox_id: str, path: str
    ) -> AsyncIterator[bytes]:
        self._box(tenant, sandbox_id)
        yield b"data"

    async def list_files(self, tenant: str | None, sandbox_id: str, path: str) -> list[FileEntry]:
        self._box(tenant, sandbox_id)
        return []

    async def remove_file(self, tenant: str | None, sandbox_id: str, path: str) -> None:
        self._box(tenant, sandbox_id)


def test_the_middleware_on_a_loopback_server(tmp_path: Path) -> None:
    store = DaemonStore.open(tmp_path / "daemon")
    authority = TokenAuthority(store.tokens, admin_token="admin-secret")
    _, token_a = authority.issue("a")
    _, token_b = authority.issue("b")

    async def scenario() -> None:
        runner = web.AppRunner(build_app(MemoryEngine(), authority))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        try:
            async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as http:
                for route in ROUTES:
                    path = route.path.replace("{id}", "sbx-aaaaaaaaaaaaaaaa")
                    path = path.replace("{cid}", "cmd-1")
                    params = {"path": "/tmp/x"}
                    async with http.request(route.method, path, params=params) as anonymous:
                        expected = 200 if route.audience == "public" else 401
                        assert anonymous.status == expected, route.path
                    if route.audience != "tenant" or "{id}" not in route.path:
                        continue
                    headers = {"Authorization": f"Bearer {token_b}"}
                    body = b"" if route.body == "raw" else b"{}"
                    async with http.request(
                        route.method, path, params=params, headers=headers, data=body
                    ) as other:
                        answer = await other.json()
                        assert other.status in (404, 422), route.path
                        if other.status == 404:
                            assert answer["reason"] == "sandbox_not_found", route.path
                headers = {"Authorization": f"Bearer {token_a}"}
                async with http.get("/v1/sandboxes", headers=headers) as mine:
                    assert len((await mine.json())["items"]) == 1
                headers = {"Authorization": f"Bearer {token_b}"}
                async with http.get("/v1/sandboxes", headers=headers) as theirs:
                    assert (await theirs.json())["items"] == []
                headers = {"Authorization": f"Bearer {token_a}", "X-Agentcell-Tenant": "b"}
                async with http.get("/v1/admin/cells", headers=headers) as admin_only:
                    assert admin_only.status == 401
        finally:
            await runner.cleanup()

    asyncio.run(scenario())
    store.close()
