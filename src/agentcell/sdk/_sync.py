"""The synchronous client: :class:`Sandbox`, its ``commands`` and ``files``.

A foreground command's output is read from the answer to ``POST .../commands`` as it
arrives; when that connection drops (or stays silent longer than ``stream_idle_timeout``),
the client asks ``GET .../commands/{id}/output?after=<last seq>`` and goes on, as many times
as it takes, so no frame is lost or taken twice (:class:`OutputCollector` checks both).
"""

from __future__ import annotations

import atexit
import base64
import builtins
import contextlib
import http.client
import threading
import time
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from types import TracebackType
from typing import BinaryIO, Literal, overload

from agentcell.sdk._discovery import DaemonAddress, discover
from agentcell.sdk._errors import (
    CommandTimeout,
    DaemonUnavailable,
    SandboxConflict,
    SandboxError,
    SandboxNotFound,
    unreachable,
)
from agentcell.sdk._frames import OutputCallback, OutputCollector
from agentcell.sdk._models import CommandInfo, CommandResult, FileEntry, SandboxInfo, items
from agentcell.sdk._transport import CHUNK, DROPPED, Transport

__all__ = ["CommandHandle", "Commands", "Files", "Sandbox", "command_request"]

RESUME_ATTEMPTS = 5
"""Reconnections in a row that bring no new frame before a stream is given up."""


def command_request(
    cmd: str | Sequence[str],
    *,
    timeout: float,
    background: bool,
    cwd: str | None,
    envs: Mapping[str, str] | None,
    stdin: bytes | str | None,
    max_output_bytes: int | None,
) -> dict[str, object]:
    """The ``CommandRequest`` body: a string runs through ``/bin/sh -c``, a sequence as argv."""
    if isinstance(stdin, str):
        stdin = stdin.encode("utf-8")
    body: dict[str, object] = {
        "argv": None if isinstance(cmd, str) else [str(arg) for arg in cmd],
        "shell": cmd if isinstance(cmd, str) else None,
        "cwd": cwd,
        "env": dict(envs or {}),
        "stdin": None if stdin is None else base64.b64encode(stdin).decode("ascii"),
        "timeout_s": timeout,
        "background": background,
    }
    if max_output_bytes is not None:
        body["max_output_bytes"] = max_output_bytes
    return body


def _quoted(identifier: str) -> str:
    return urllib.parse.quote(identifier, safe="")


def _read_frames(response: http.client.HTTPResponse, collector: OutputCollector) -> None:
    """Feed complete lines until the end frame or the end of the body (a cut line is left for
    the resumed stream to send again)."""
    while not collector.ended:
        line = response.readline()
        if not line.endswith(b"\n"):
            return
        collector.feed_line(line)


class CommandHandle:
    """A background command: wait for it, stream its output, or kill it."""

    def __init__(self, sandbox: Sandbox, command_id: str) -> None:
        self._sandbox = sandbox
        self.id = command_id

    def __repr__(self) -> str:
        return f"CommandHandle({self.id!r}, sandbox={self._sandbox.id!r})"

    def info(self) -> CommandInfo:
        """The command as the service holds it now."""
        return self._sandbox.commands.get(self.id)

    def wait(self, timeout: float | None = None) -> CommandResult:
        """Wait for the end and return everything the command wrote.

        Raises:
            CommandTimeout: ``timeout`` seconds passed and the command still runs (it goes on
                running; the server's own timeout, set at start, still ends it).
        """
        if timeout is not None:
            deadline = time.monotonic() + timeout
            while True:
                left = deadline - time.monotonic()
                info = self._sandbox.commands.get(self.id, wait=max(0.0, min(left, 300.0)))
                if info.state == "ended":
                    break
                if time.monotonic() >= deadline:
                    raise CommandTimeout(
                        f"command {self.id} still runs after {timeout:g} s",
                        fix="wait longer, or kill() it",
                    )
        return self.stream()

    def stream(
        self, on_stdout: OutputCallback | None = None, on_stderr: OutputCallback | None = None
    ) -> CommandResult:
        """Call back with the output (from the first frame) until the command ends."""
        collector = OutputCollector(on_stdout=on_stdout, on_stderr=on_stderr, command_id=self.id)
        return self._sandbox.commands.follow(collector)

    def kill(self) -> CommandInfo:
        """Kill the command's whole process group."""
        answer = self._sandbox.transport.request(
            "POST", f"{self._sandbox.path}/commands/{_quoted(self.id)}/kill"
        )
        return CommandInfo.from_json(answer.json())


class Commands:
    """``sandbox.commands``: run commands in the sandbox."""

    def __init__(self, sandbox: Sandbox) -> None:
        self._sandbox = sandbox

    @overload
    def run(
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
    def run(
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
    ) -> CommandHandle: ...

    def run(
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
    ) -> CommandResult | CommandHandle:
        """Run ``cmd`` as the cell's user: a string through ``/bin/sh -c``, a sequence as argv.

        The service kills the command's whole process group after ``timeout`` seconds and
        reports ``timed_out``. In the foreground, ``on_stdout``/``on_stderr`` get the output
        as it is written and the :class:`CommandResult` comes at the end; with
        ``background=True`` a :class:`CommandHandle` comes at once (the callbacks are then
        given to its ``stream``).

        Raises:
            SandboxNotFound, SandboxConflict: no such sandbox, or it is not running.
            InvalidRequest: a shell string where the image has no shell, or a bad field.
            DaemonUnavailable: the service cannot be reached (also when it drops before the
                command started, so the command's id is unknown).
        """
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
            answer = sandbox.transport.request("POST", f"{sandbox.path}/commands", json_body=body)
            handle = CommandHandle(sandbox, CommandInfo.from_json(answer.json()).id)
            if on_stdout is not None or on_stderr is not None:
                handle.stream(on_stdout, on_stderr)
            return handle
        collector = OutputCollector(on_stdout=on_stdout, on_stderr=on_stderr)
        try:
            with sandbox.transport.stream(
                "POST",
                f"{sandbox.path}/commands",
                json_body=body,
                idle_timeout=sandbox.stream_idle_timeout,
            ) as response:
                _read_frames(response, collector)
        except DROPPED as exc:
            if collector.command_id is None:
                raise unreachable(sandbox.transport.address.url, exc) from exc
        if collector.command_id is None:
            raise SandboxError("the host service ended the stream before the command started")
        return self.follow(collector)

    def follow(self, collector: OutputCollector) -> CommandResult:
        """Resume the command's output after ``collector.last_seq`` until its end frame."""
        sandbox = self._sandbox
        fruitless = 0
        while collector.result is None:
            before = collector.last_seq
            try:
                with sandbox.transport.stream(
                    "GET",
                    f"{sandbox.path}/commands/{_quoted(collector.command_id or '')}/output",
                    query={"after": collector.last_seq},
                    idle_timeout=sandbox.stream_idle_timeout,
                ) as response:
                    _read_frames(response, collector)
            except TimeoutError:
                continue  # a quiet command: ask again from where it stands
            except (DaemonUnavailable, *DROPPED) as exc:
                fruitless = 0 if collector.last_seq > before else fruitless + 1
                if fruitless >= RESUME_ATTEMPTS:
                    if isinstance(exc, DaemonUnavailable):
                        raise
                    raise unreachable(sandbox.transport.address.url, exc) from exc
                time.sleep(0.05 * 2**fruitless)
        return collector.result

    def get(self, command_id: str, *, wait: float | None = None) -> CommandInfo:
        """A command of this sandbox; with ``wait``, after up to that many seconds for it to
        end."""
        sandbox = self._sandbox
        answer = sandbox.transport.request(
            "GET",
            f"{sandbox.path}/commands/{_quoted(command_id)}",
            query=None if wait is None else {"wait": round(wait, 3)},
            timeout=None if wait is None else wait + sandbox.transport.timeout,
        )
        return CommandInfo.from_json(answer.json())

    def list(self) -> builtins.list[CommandInfo]:
        """Every command this sandbox has run."""
        answer = self._sandbox.transport.request("GET", f"{self._sandbox.path}/commands")
        return [CommandInfo.from_json(item) for item in items(answer.json(), "commands")]

    def connect(self, command_id: str) -> CommandHandle:
        """A handle on a command started earlier (by this or another client)."""
        return CommandHandle(self._sandbox, self.get(command_id).id)


class Files:
    """``sandbox.files``: files in the cell's writable tmpfs mounts, streamed both ways."""

    def __init__(self, sandbox: Sandbox) -> None:
        self._sandbox = sandbox

    def _target(self, path: str) -> tuple[str, dict[str, str | int | float]]:
        return f"{self._sandbox.path}/files", {"path": path}

    def write(self, path: str, data: bytes | str | BinaryIO) -> int:
        """Write ``data`` to ``path`` (a file object is sent in chunks as it is read, never
        read whole); the size written.

        Raises:
            FileRefused: the path is outside the tmpfs mounts, goes through ``..`` or a
                symlink, or the file does not fit (``reason`` says which).
        """
        target, query = self._target(path)
        body: bytes | Iterator[bytes]
        if isinstance(data, str):
            body = data.encode("utf-8")
        elif isinstance(data, bytes | bytearray | memoryview):
            body = bytes(data)
        else:
            body = iter(lambda: data.read(CHUNK), b"")
        headers = {"Content-Type": "application/octet-stream"}
        answer = self._sandbox.transport.request(
            "PUT", target, query=query, body=body, headers=headers
        )
        document = answer.json()
        size = document.get("size") if isinstance(document, dict) else None
        if not isinstance(size, int):
            raise SandboxError(f"the host service answered a write with {document!r}")
        return size

    def read(self, path: str) -> bytes:
        """The whole file (for a large one, :meth:`read_stream`)."""
        return b"".join(self.read_stream(path))

    def read_stream(self, path: str, *, chunk_size: int = CHUNK) -> Iterator[bytes]:
        """The file in chunks as they arrive.

        Raises:
            FileRefused: no such file, or a path outside the tmpfs mounts.
            DaemonUnavailable: the connection broke part way (the file is incomplete).
        """
        target, query = self._target(path)
        sandbox = self._sandbox
        with sandbox.transport.stream(
            "GET", target, query=query, idle_timeout=sandbox.transport.timeout
        ) as response:
            try:
                while chunk := response.read(chunk_size):
                    yield chunk
            except DROPPED as exc:
                raise unreachable(sandbox.transport.address.url, exc) from exc

    def list(self, path: str) -> builtins.list[FileEntry]:
        """The entries of the directory ``path``."""
        target, query = self._target(path)
        answer = self._sandbox.transport.request("GET", f"{target}/list", query=query)
        return [FileEntry.from_json(item) for item in items(answer.json(), "files")]

    def remove(self, path: str) -> None:
        """Remove a file or an empty directory."""
        target, query = self._target(path)
        self._sandbox.transport.request("DELETE", target, query=query)


_SHARED: dict[tuple[str, str | None, str | None, float], Transport] = {}
_SHARED_LOCK = threading.Lock()


def _close_shared() -> None:
    with _SHARED_LOCK:
        for transport in _SHARED.values():
            transport.close()
        _SHARED.clear()


atexit.register(_close_shared)


def _transport(
    url: str | None, token: str | None, ca: str | None, request_timeout: float
) -> Transport:
    """The process's one transport to this service with this token: every :class:`Sandbox`
    of a program shares its kept-alive connections, so a ``create`` pays no TLS handshake
    but the first."""
    address = discover(url=url, token=token, ca=ca)
    key = (address.url, address.ca, address.token, request_timeout)
    with _SHARED_LOCK:
        transport = _SHARED.get(key)
        if transport is None:
            transport = _SHARED[key] = Transport(address, timeout=request_timeout)
        return transport


class Sandbox:
    """A sandbox: a never-used cell from a template, yours until it is killed or expires.

    ``with Sandbox.create("python") as sbx: ...`` kills it on leaving the block. The service is
    found as :func:`agentcell.sdk.discover` says, unless ``url``/``token``/``ca`` are given.
    """

    def __init__(
        self, info: SandboxInfo, transport: Transport, *, stream_idle_timeout: float = 30.0
    ) -> None:
        self.id = info.id
        self.transport = transport
        self.stream_idle_timeout = stream_idle_timeout
        """A stream silent this long is dropped and resumed (nothing is lost)."""
        self.path = f"/v1/sandboxes/{_quoted(info.id)}"
        self.commands = Commands(self)
        self.files = Files(self)
        self._last_info = info

    def __repr__(self) -> str:
        return f"Sandbox({self.id!r}, template={self._last_info.template!r})"

    @classmethod
    def create(
        cls,
        template: str,
        timeout: float = 300,
        *,
        tenant: str | None = None,
        url: str | None = None,
        token: str | None = None,
        ca: str | None = None,
        request_timeout: float = 30.0,
    ) -> Sandbox:
        """A sandbox from ``template`` that lives ``timeout`` seconds unless extended.

        ``tenant`` is for the admin token only (a tenant token's tenant is its own).

        Raises:
            TemplateNotFound: the token's tenant has no such template.
            TimeoutRefused: ``timeout`` is over the template's maximum.
            QuotaExceeded, PoolExhausted: no room for another cell.
            DaemonUnavailable, AuthenticationFailed: no service, or it refused the token.
        """
        transport = _transport(url, token, ca, request_timeout)
        body: dict[str, object] = {"template": template, "timeout_s": timeout}
        if tenant is not None:
            body["tenant"] = tenant
        answer = transport.request("POST", "/v1/sandboxes", json_body=body)
        return cls(SandboxInfo.from_json(answer.json()), transport)

    @classmethod
    def connect(
        cls,
        sandbox_id: str,
        *,
        url: str | None = None,
        token: str | None = None,
        ca: str | None = None,
        request_timeout: float = 30.0,
    ) -> Sandbox:
        """The running sandbox ``sandbox_id`` (made by this or another client).

        Raises:
            SandboxNotFound: no such sandbox for this token.
        """
        transport = _transport(url, token, ca, request_timeout)
        answer = transport.request("GET", f"/v1/sandboxes/{_quoted(sandbox_id)}")
        return cls(SandboxInfo.from_json(answer.json()), transport)

    @classmethod
    def list(
        cls,
        *,
        url: str | None = None,
        token: str | None = None,
        ca: str | None = None,
    ) -> builtins.list[SandboxInfo]:
        """The token's tenant's sandboxes (every tenant's for the admin token)."""
        answer = _transport(url, token, ca, 30.0).request("GET", "/v1/sandboxes")
        return [SandboxInfo.from_json(item) for item in items(answer.json(), "sandboxes")]

    @property
    def address(self) -> DaemonAddress:
        return self.transport.address

    @property
    def info(self) -> SandboxInfo:
        """The sandbox as the service holds it now (asked each time)."""
        answer = self.transport.request("GET", self.path)
        self._last_info = SandboxInfo.from_json(answer.json())
        return self._last_info

    def set_timeout(self, seconds: float) -> SandboxInfo:
        """Make the sandbox expire ``seconds`` from now.

        Raises:
            TimeoutRefused: over the template's maximum, or not positive.
        """
        answer = self.transport.request(
            "POST", f"{self.path}/timeout", json_body={"timeout_s": seconds}
        )
        self._last_info = SandboxInfo.from_json(answer.json())
        return self._last_info

    def kill(self) -> None:
        """Destroy the sandbox's cell (a killed cell is never handed out again)."""
        self.transport.request("DELETE", self.path)

    def close(self) -> None:
        """Close the idle connections to the service (the sandbox keeps running). They are
        shared by every Sandbox of this process and closed at exit anyway; a later call
        opens new ones."""
        self.transport.close()

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # The connections stay for the next sandbox of this process (see close()).
        with contextlib.suppress(SandboxNotFound, SandboxConflict):
            self.kill()  # expired or killed already: gone either way
