"""A command that takes longer to start than the stream idle timeout is not a lost service.

The service answers ``POST .../commands`` only once the command runs (its first frame names
the command). The idle timeout is for a stream that went quiet *after* that: a slow start on a
loaded host must wait the request timeout, as any other request, and then stream as usual.
The service here is a real HTTP server on a Unix socket that starts its commands slowly.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web

from agentcell.sdk import AsyncSandbox, Sandbox

START_DELAY_S = 0.8
IDLE_S = 0.2

SANDBOX = {
    "id": "sbx-1",
    "tenant": "acme",
    "template": "python",
    "state": "running",
    "cell": "agentcell_acme_sbx-1",
    "warm": True,
    "created_at": 1.0,
    "expires_at": 301.0,
    "acquire_ms": 1.0,
}


def frame(seq: int, **fields: object) -> bytes:
    return json.dumps({"seq": seq, **fields}).encode() + b"\n"


FRAMES = [
    frame(0, type="start", command="cmd-1", pid=7),
    frame(1, type="stdout", data=base64.b64encode(b"started late\n").decode()),
    frame(2, type="end", exit_code=0, timed_out=False, killed=False, reason="exited"),
]


async def create(request: web.Request) -> web.Response:
    return web.json_response(SANDBOX)


async def run(request: web.Request) -> web.StreamResponse:
    await request.read()
    await asyncio.sleep(START_DELAY_S)  # the engine starting the command
    answer = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await answer.prepare(request)
    for line in FRAMES:
        await answer.write(line)
    await answer.write_eof()
    return answer


async def kill(request: web.Request) -> web.Response:
    return web.json_response({**SANDBOX, "state": "killed"})


@pytest.fixture
def socket_url(tmp_path: Path) -> Iterator[str]:
    path = str(tmp_path / "daemon.sock")
    loop = asyncio.new_event_loop()
    app = web.Application()
    app.router.add_post("/v1/sandboxes", create)
    app.router.add_post("/v1/sandboxes/sbx-1/commands", run)
    app.router.add_delete("/v1/sandboxes/sbx-1", kill)
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.UnixSite(runner, path).start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"unix://{path}"
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        loop.run_until_complete(runner.cleanup())
        loop.close()


def test_the_sync_sdk_waits_for_a_slow_start(socket_url: str) -> None:
    sbx = Sandbox.create("python", url=socket_url, token="t")
    sbx.stream_idle_timeout = IDLE_S
    result = sbx.commands.run("echo started late")
    assert (result.command_id, result.exit_code, result.stdout) == ("cmd-1", 0, "started late\n")


def test_the_async_sdk_waits_for_a_slow_start(socket_url: str) -> None:
    async def scenario() -> None:
        sbx = await AsyncSandbox.create("python", url=socket_url, token="t")
        try:
            sbx.stream_idle_timeout = IDLE_S
            result = await sbx.commands.run("echo started late")
            assert (result.command_id, result.exit_code, result.stdout) == (
                "cmd-1",
                0,
                "started late\n",
            )
        finally:
            await sbx.http.close()

    asyncio.run(scenario())
