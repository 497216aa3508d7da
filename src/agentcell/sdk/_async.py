"""The asyncio client: :class:`AsyncSandbox`, the same API as :class:`Sandbox` over aiohttp.

Loaded only when ``agentcell.sdk.AsyncSandbox`` is first used, so the synchronous client
never pays for aiohttp. The same discovery, errors, frame bookkeeping and resumption.
"""

from __future__ import annotations

import asyncio
import builtins
import json
import ssl
import urllib.parse
from collections.abc import AsyncIterator, Mapping, Sequence
from types import TracebackType
from typing import BinaryIO, Literal, overload

import aiohttp

from agentcell import __version__
from agentcell.sdk._discovery import DaemonAddress, discover
from agentcell.sdk._errors import (
    CommandTimeout,
    DaemonUnavailable,
    SandboxConflict,
    SandboxError,
    SandboxNotFound,
    error_from_response,
    unreachable,
)
from agentcell.sdk._frames import OutputCallback, OutputCollector
from agentcell.sdk._models import CommandInfo, CommandResult, FileEntry, SandboxInfo, items
from agentcell.sdk._sync import RESUME_ATTEMPTS, command_request
from agentcell.sdk._transport import CHUNK

__all__ = ["AsyncCommandHandle", "AsyncCommands", "AsyncFiles", "AsyncSandbox"]

_DROPPED = (aiohttp.ClientError, OSError, asyncio.TimeoutError)


def _quoted(identifier: str) -> str:
    return urllib.parse.quote(identifier, safe="")


class _Session:
    """One aiohttp session to the service (TLS verified against its CA, or its socket)."""

    def __init__(self, address: DaemonAddress, *, timeout: float) -> None:
        self.address = address
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None
        if address.is_unix:
            self.base = "http://localhost"
        else:
            host, port = address.host_port
            self.base = f"https://{host}:{port}"

    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector: aiohttp.BaseConnector
            if self.address.is_unix:
                connector = aiohttp.UnixConnector(path=self.address.socket_path)
            else:
                try:
                    context = ssl.create_default_context(cafile=self.address.ca)
                except (OSError, ssl.SSLError) as exc:
                    raise DaemonUnavailable(
                        f"cannot load the host service's CA certificate {self.address.ca}: {exc}",
                        fix="set AGENTCELL_DAEMON_CA to the service's <state>/daemon/tls/ca.pem",
                    ) from exc
                connector = aiohttp.TCPConnector(ssl=context)
            headers = {"User-Agent": f"agentcell-sdk/{__version__}"}
            if self.address.token:
                headers["Authorization"] = f"Bearer {self.address.token}"
            self._session = aiohttp.ClientSession(connector=connector, headers=headers)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _raise_for(self, response: aiohttp.ClientResponse, what: str) -> None:
        if response.status >= 400:
            body = await response.read()
            raise error_from_response(response.status, body, what_was_asked=what)

    async def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str | int | float] | None = None,
        json_body: object = None,
        body: bytes | AsyncIterator[bytes] | None = None,
        timeout: float | None = None,
    ) -> object:
        """One request; its JSON answer (None for an empty one).

        Raises:
            DaemonUnavailable, Error: as the synchronous transport.
        """
        headers = {"Accept": "application/json"}
        if json_body is not None:
            body = json.dumps(json_body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        elif body is not None:
            headers["Content-Type"] = "application/octet-stream"
        try:
            async with self.session().request(
                method,
                self.base + path,
                params=dict(query or {}),
                data=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=timeout or self.timeout),
            ) as response:
                await self._raise_for(response, f"{method} {path}")
                data = await response.read()
        except _DROPPED as exc:
            raise unreachable(self.address.url, exc) from exc
        if not data:
            return None
        try:
            return json.loads(data)
        except ValueError as exc:
            raise SandboxError(f"the host service answered {method} {path} with no JSON") from exc


async def _read_frames(
    response: aiohttp.ClientResponse, collector: OutputCollector, idle_timeout: float
) -> None:
    """As the synchronous SDK's: the head came within the request timeout; from here a line
    that takes longer than ``idle_timeout`` raises ``TimeoutError``."""
    while not collector.ended:
        line = await asyncio.wait_for(response.content.readline(), idle_timeout)
        if not line.endswith(b"\n"):
            return
        collector.feed_line(line)


class AsyncCommandHandle:
    """A background command (see :class:`agentcell.sdk.CommandHandle`)."""

    def __init__(self, sandbox: AsyncSandbox, command_id: str) -> None:
        self._sandbox = sandbox
        self.id = command_id

    async def info(self) -> CommandInfo:
        return await self._sandbox.commands.get(self.id)

    async def wait(self, timeout: float | None = None) -> CommandResult:
        """Wait for the end; everything it wrote.

        Raises:
            CommandTimeout: ``timeout`` passed and the command still runs.
        """
        if timeout is not None:
            info = await self._sandbox.commands.get(self.id, wait=min(timeout, 300.0))
            if info.state != "ended":
                raise CommandTimeout(
                    f"command {self.id} still runs after {timeout:g} s",
                    fix="wait longer, or kill() it",
                )
        return await self.stream()

    async def stream(
        self, on_stdout: OutputCallback | None = None, on_stderr: OutputCallback | None = None
    ) -> CommandResult:
        collector = OutputCollector(on_stdout=on_stdout, on_stderr=on_stderr, command_id=self.id)
        return await self._sandbox.commands.follow(collector)

    async def kill(self) -> CommandInfo:
        document = await self._sandbox.http.request(
            "POST", f"{self._sandbox.path}/commands/{_quoted(self.id)}/kill"
        )
        return CommandInfo.from_json(document)


class AsyncCommands:
    """``sandbox.commands`` for asyncio."""

    def __init__(self, sandbox: AsyncSandbox) -> None:
        self._sandbox = sandbox

    @overload
    async def run(
        self,
        cmd: str | Sequence[str],
        *,
        on_stdout: OutputCallback | None = ...,
        on_stderr: OutputCallback | None = ...,
        timeout: float = ...,
        background: Literal[False] = ...,
        cwd: str | None = ...,
        envs: Mapping[str, str] | None = ...,
        stdin: bytes | str | None = ...,
        max_output_bytes: int | None = ...,
    ) -> CommandResult: ...

    @overload
    async def run(
        self,
        cmd: str | Sequence[str],
        *,
        on_stdout: OutputCallback | None = ...,
        on_stderr: OutputCallback | None = ...,
        timeout: float = ...,
        background: Literal[True],
        cwd: str | None = ...,
        envs: Mapping[str, str] | None = ...,
        stdin: bytes | str | None = ...,
        max_output_bytes: int | None = ...,
    ) -> AsyncCommandHandle: ...

    async def run(
        self,
        cmd: str | Sequence[str],
        *,
        on_stdout: OutputCallback | None = None,
        on_stderr: OutputCallback | None = None,
        timeout: float = 60,
        background: bool = False,
        cwd: str | None = None,
        envs: Mapping[str, str] | None = None,
        stdin: bytes | str | None = None,
        max_output_bytes: int | None = None,
    ) -> CommandResult | AsyncCommandHandle:
        """As :meth:`agentcell.sdk.Commands.run`."""
        body = command_request(
            cmd,
            timeout=timeout,
            background=background,
            cwd=cwd,
            envs=envs,
            stdin=stdin,
            max_output_bytes=max_output_bytes,
        )
        sandbox = self._sandbox
        if background:
            document = await sandbox.http.request(
                "POST", f"{sandbox.path}/commands", json_body=body
            )
            handle = AsyncCommandHandle(sandbox, CommandInfo.from_json(document).id)
            if on_stdout is not None or on_stderr is not None:
                await handle.stream(on_stdout, on_stderr)
            return handle
        collector = OutputCollector(on_stdout=on_stdout, on_stderr=on_stderr)
        http = sandbox.http
        try:
            async with http.session().post(
                http.base + f"{sandbox.path}/commands",
                json=body,
                headers={"Accept": "application/x-ndjson"},
                timeout=aiohttp.ClientTimeout(sock_read=http.timeout),
            ) as response:
                await http._raise_for(response, "POST commands")
                await _read_frames(response, collector, sandbox.stream_idle_timeout)
        except _DROPPED as exc:
            if collector.command_id is None:
                raise unreachable(http.address.url, exc) from exc
        if collector.command_id is None:
            raise SandboxError("the host service ended the stream before the command started")
        return await self.follow(collector)

    async def follow(self, collector: OutputCollector) -> CommandResult:
        """Resume the command's output after ``collector.last_seq`` until its end frame."""
        sandbox, http = self._sandbox, self._sandbox.http
        fruitless = 0
        while collector.result is None:
            before = collector.last_seq
            path = f"{sandbox.path}/commands/{_quoted(collector.command_id or '')}/output"
            try:
                async with http.session().get(
                    http.base + path,
                    params={"after": collector.last_seq},
                    headers={"Accept": "application/x-ndjson"},
                    timeout=aiohttp.ClientTimeout(sock_read=http.timeout),
                ) as response:
                    await http._raise_for(response, f"GET {path}")
                    await _read_frames(response, collector, sandbox.stream_idle_timeout)
            except TimeoutError:
                continue
            except _DROPPED as exc:
                fruitless = 0 if collector.last_seq > before else fruitless + 1
                if fruitless >= RESUME_ATTEMPTS:
                    raise unreachable(http.address.url, exc) from exc
                await asyncio.sleep(0.05 * 2**fruitless)
        return collector.result

    async def get(self, command_id: str, *, wait: float | None = None) -> CommandInfo:
        sandbox = self._sandbox
        document = await sandbox.http.request(
            "GET",
            f"{sandbox.path}/commands/{_quoted(command_id)}",
            query=None if wait is None else {"wait": round(wait, 3)},
            timeout=None if wait is None else wait + sandbox.http.timeout,
        )
        return CommandInfo.from_json(document)

    async def list(self) -> builtins.list[CommandInfo]:
        document = await self._sandbox.http.request("GET", f"{self._sandbox.path}/commands")
        return [CommandInfo.from_json(item) for item in items(document, "commands")]


async def _chunks(data: BinaryIO) -> AsyncIterator[bytes]:
    while chunk := await asyncio.to_thread(data.read, CHUNK):
        yield chunk


class AsyncFiles:
    """``sandbox.files`` for asyncio."""

    def __init__(self, sandbox: AsyncSandbox) -> None:
        self._sandbox = sandbox

    async def write(self, path: str, data: bytes | str | BinaryIO) -> int:
        """As :meth:`agentcell.sdk.Files.write` (a file object is read in a thread, chunk by
        chunk)."""
        body: bytes | AsyncIterator[bytes]
        if isinstance(data, str):
            body = data.encode("utf-8")
        elif isinstance(data, bytes | bytearray | memoryview):
            body = bytes(data)
        else:
            body = _chunks(data)
        document = await self._sandbox.http.request(
            "PUT", f"{self._sandbox.path}/files", query={"path": path}, body=body
        )
        size = document.get("size") if isinstance(document, dict) else None
        if not isinstance(size, int):
            raise SandboxError(f"the host service answered a write with {document!r}")
        return size

    async def read(self, path: str) -> bytes:
        return b"".join([chunk async for chunk in self.read_stream(path)])

    async def read_stream(self, path: str, *, chunk_size: int = CHUNK) -> AsyncIterator[bytes]:
        http = self._sandbox.http
        target = f"{self._sandbox.path}/files"
        try:
            async with http.session().get(
                http.base + target,
                params={"path": path},
                timeout=aiohttp.ClientTimeout(sock_read=http.timeout),
            ) as response:
                await http._raise_for(response, f"GET {target}")
                async for chunk in response.content.iter_chunked(chunk_size):
                    yield chunk
        except _DROPPED as exc:
            raise unreachable(http.address.url, exc) from exc

    async def list(self, path: str) -> builtins.list[FileEntry]:
        document = await self._sandbox.http.request(
            "GET", f"{self._sandbox.path}/files/list", query={"path": path}
        )
        return [FileEntry.from_json(item) for item in items(document, "files")]

    async def remove(self, path: str) -> None:
        await self._sandbox.http.request(
            "DELETE", f"{self._sandbox.path}/files", query={"path": path}
        )


class AsyncSandbox:
    """:class:`agentcell.sdk.Sandbox` for asyncio: ``async with await AsyncSandbox.create(..)``."""

    def __init__(
        self, info: SandboxInfo, http: _Session, *, stream_idle_timeout: float = 30.0
    ) -> None:
        self.id = info.id
        self.http = http
        self.stream_idle_timeout = stream_idle_timeout
        self.path = f"/v1/sandboxes/{_quoted(info.id)}"
        self.commands = AsyncCommands(self)
        self.files = AsyncFiles(self)
        self._last_info = info

    def __repr__(self) -> str:
        return f"AsyncSandbox({self.id!r}, template={self._last_info.template!r})"

    @classmethod
    async def create(
        cls,
        template: str,
        timeout: float = 300,
        *,
        tenant: str | None = None,
        url: str | None = None,
        token: str | None = None,
        ca: str | None = None,
        request_timeout: float = 30.0,
    ) -> AsyncSandbox:
        """As :meth:`agentcell.sdk.Sandbox.create`."""
        http = _Session(discover(url=url, token=token, ca=ca), timeout=request_timeout)
        body: dict[str, object] = {"template": template, "timeout_s": timeout}
        if tenant is not None:
            body["tenant"] = tenant
        try:
            document = await http.request("POST", "/v1/sandboxes", json_body=body)
            return cls(SandboxInfo.from_json(document), http)
        except BaseException:
            await http.close()
            raise

    @classmethod
    async def connect(
        cls,
        sandbox_id: str,
        *,
        url: str | None = None,
        token: str | None = None,
        ca: str | None = None,
        request_timeout: float = 30.0,
    ) -> AsyncSandbox:
        http = _Session(discover(url=url, token=token, ca=ca), timeout=request_timeout)
        try:
            document = await http.request("GET", f"/v1/sandboxes/{_quoted(sandbox_id)}")
            return cls(SandboxInfo.from_json(document), http)
        except BaseException:
            await http.close()
            raise

    @classmethod
    async def list(
        cls, *, url: str | None = None, token: str | None = None, ca: str | None = None
    ) -> builtins.list[SandboxInfo]:
        http = _Session(discover(url=url, token=token, ca=ca), timeout=30.0)
        try:
            document = await http.request("GET", "/v1/sandboxes")
            return [SandboxInfo.from_json(item) for item in items(document, "sandboxes")]
        finally:
            await http.close()

    async def info(self) -> SandboxInfo:
        """The sandbox as the service holds it now."""
        self._last_info = SandboxInfo.from_json(await self.http.request("GET", self.path))
        return self._last_info

    async def set_timeout(self, seconds: float) -> SandboxInfo:
        document = await self.http.request(
            "POST", f"{self.path}/timeout", json_body={"timeout_s": seconds}
        )
        self._last_info = SandboxInfo.from_json(document)
        return self._last_info

    async def kill(self) -> None:
        await self.http.request("DELETE", self.path)

    async def close(self) -> None:
        """Close this client's connections; the sandbox keeps running."""
        await self.http.close()

    async def __aenter__(self) -> AsyncSandbox:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self.kill()
        except (SandboxNotFound, SandboxConflict):
            pass
        finally:
            await self.close()
