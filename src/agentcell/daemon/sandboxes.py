"""The sandbox engine: templates, one-shot warm pools, TTLs, commands and files.

Every sandbox is a cell made from its template's Agent document (named after the sandbox,
in the template's tenant) and launched through the one launch path
(:func:`agentcell.launch.launch_admitted`): admitted by the ``restricted`` preset under the
tenant's isolation level, its image pinned and verified with the host's trust config and the
tenant's keys, a host uid of its own, the tenant's quota written into its cgroup parent and
counted before launch. Nothing here calls the backend's ``up`` directly.

Pools are one-shot: a warm cell is started and passes ``verify`` before it is offered, is
handed out once, and is destroyed when its sandbox ends; it never returns to the pool. A
cold start (an empty pool) passes ``verify`` too before it is handed out. A cell that fails
``verify`` is destroyed, never offered.

The engine's calls block; they run on the manager's thread pool. Command output is read on a
thread per command (:mod:`agentcell.daemon.commands`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import secrets
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from agentcell.cell.labels import (
    LABEL_SANDBOX,
    LABEL_SANDBOX_POOL,
    LABEL_SANDBOX_TEMPLATE,
    LABEL_SPEC_HASH,
    LABEL_TENANT,
)
from agentcell.cell.names import container_name
from agentcell.daemon.commands import Command, CommandLog, drive, new_command_id
from agentcell.daemon.contract import (
    CellUnverified,
    CommandEnd,
    CommandInfo,
    CommandNotFound,
    CommandRequest,
    EndReason,
    FileEntry,
    FileRefused,
    Frame,
    PoolExhausted,
    QuotaExceeded,
    SandboxConflict,
    SandboxEngine,
    SandboxInfo,
    SandboxNotFound,
    SandboxState,
    TemplateInfo,
    TemplateNotFound,
    TimeoutRefused,
)
from agentcell.daemon.records import SandboxRecord, SandboxRecords, is_sandbox_id
from agentcell.errors import AdmissionError, BackendError, Error, InvalidInput
from agentcell.launch import launch_admitted
from agentcell.launch.apply import tenant_limits
from agentcell.policy.admission import AdmittedSpec, admit
from agentcell.policy.presets import TenantPolicy, preset
from agentcell.policy.quota import QuotaUse, overruns
from agentcell.runtime.docker.translate import spec_hash
from agentcell.spec.template import TemplateSpecDocument
from agentcell.spec.tenant import TenantDocument
from agentcell.trust.config import TrustConfig, load_trust_config, with_tenant

if TYPE_CHECKING:
    from agentcell.launch.apply import TenantDirectory
    from agentcell.runtime.docker.backend import DockerBackend
    from agentcell.runtime.docker.commands import CellFacts, RunningCommand
    from agentcell.runtime.docker.exec_exits import ExecExits
    from agentcell.runtime.docker.files import CellFiles

__all__ = ["POLICY", "SandboxManager", "new_sandbox_id", "pool_overruns"]

log = logging.getLogger("agentcell.daemon.sandboxes")

POLICY = "restricted"
"""The preset every sandbox cell is admitted by, as ``agentcell up`` does by default."""
MAX_COMMAND_TIMEOUT_S = 24 * 3600.0
MAX_OUTPUT_BYTES = 64 * 1024 * 1024
KEEP_ENDED_S = 600.0
"""How long an ended sandbox (and its commands' frames) can still be read."""
TENANTS_FRESH_S = 30.0
FILE_QUEUE_CHUNKS = 8
"""Chunks in flight between a file's thread and the event loop (no whole-file buffering)."""
_T = TypeVar("_T")


def new_sandbox_id() -> str:
    """``sbx-<16 hex>``."""
    return f"sbx-{secrets.token_hex(8)}"


@dataclass(eq=False)
class _Pool:
    """One template's pool: ids of warm, verified, never-used cells, and those being made."""

    template: TemplateSpecDocument
    ready: deque[str] = field(default_factory=deque)
    starting: int = 0
    claiming: int = 0
    """Creates in progress that hold a place under ``pool.max`` (cold starts)."""
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def key(self) -> tuple[str, str]:
        return self.template.document.key


@dataclass(eq=False)
class _Sandbox:
    record: SandboxRecord
    template: TemplateSpecDocument
    commands: dict[str, Command] = field(default_factory=dict)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    adopted: bool = False
    """Taken over from an earlier run of the service (its commands are gone)."""
    facts: CellFacts | None = None
    """The engine's facts about its cell, read by its first command, kept for the next."""

    @property
    def running(self) -> bool:
        return self.record.state == "running"


class SandboxManager:
    """The :class:`~agentcell.daemon.contract.SandboxEngine` on one Docker Engine.

    ``templates`` come from :func:`agentcell.spec.template.load_templates`; ``records``
    keeps sandboxes across restarts (e.g.
    :class:`~agentcell.daemon.records.JsonSandboxRecords`); ``directory`` is the control
    plane's tenants (their quota, isolation level and trust), or None for no control plane
    (then no quota applies, and a log line says so); ``trust`` defaults to the host's trust
    config.
    """

    def __init__(
        self,
        *,
        backend: DockerBackend,
        templates: Sequence[TemplateSpecDocument],
        records: SandboxRecords,
        directory: TenantDirectory | None = None,
        trust: TrustConfig | None = None,
        reap_interval_s: float = 1.0,
        engine_threads: int = 8,
    ) -> None:
        self._backend = backend
        self._records = records
        self._directory = directory
        self._trust = trust if trust is not None else load_trust_config()
        self._reap_interval_s = reap_interval_s
        self._templates = {template.document.key: template for template in templates}
        self._pools: dict[tuple[str, str], _Pool] = {}
        self._sandboxes: dict[str, _Sandbox] = {}
        self._tenants: dict[str, TenantDocument] = {}
        self._tenants_read_at = 0.0
        self._tenant_locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self._shells: dict[str, bool] = {}
        self._executor = ThreadPoolExecutor(engine_threads, thread_name_prefix="sandbox-engine")
        self._exits: ExecExits | None = None
        self._lock: asyncio.Lock | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False

    # -- life -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Check every template, reconcile the records with the engine, then start the pools'
        refill and the TTL reaper.

        Raises:
            AdmissionError: a template's cell is refused by policy.
            QuotaExceeded: a tenant's pools' minimums together exceed its quota.
            HostError: this host cannot run a template's cell (e.g. its runtime is absent).
        """
        from agentcell.runtime.docker.exec_exits import ExecExits

        self._lock = asyncio.Lock()
        self._exits = ExecExits()
        self._pools = {key: _Pool(template=template) for key, template in self._templates.items()}
        await self._run(self._read_tenants, True)
        if self._directory is None:
            log.warning(
                "no control plane configured: sandbox cells and pools count against no tenant "
                "quota, and tenants' isolation levels and keys do not apply"
            )
        await self._run(self._check_templates)
        await self._reconcile()
        for pool in self._pools.values():
            self._spawn(self._refill(pool), self._tasks)
        self._spawn(self._reaper(), self._tasks)

    async def close(self) -> None:
        """Stop the refill and the reaper; live sandboxes and warm cells keep running (a new
        manager adopts them). Running commands are killed: their streams end with the
        service, and no later one could reach them."""
        self._closing = True
        tasks = list(self._tasks)
        for sandbox in self._sandboxes.values():
            tasks += sandbox.tasks
            for command in sandbox.commands.values():
                if command.log.end is None:
                    # Its stream ends with the service, and nobody could find it again.
                    with contextlib.suppress(Error):
                        await self._run(_kill, command)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._executor.shutdown(wait=False, cancel_futures=True)
        if self._exits is not None:
            self._exits.close()

    # -- templates ------------------------------------------------------------------------

    def templates(self, tenant: str | None) -> list[TemplateInfo]:
        """The caller's tenant's templates (every tenant's for the admin)."""
        found = []
        for key, template in sorted(self._templates.items()):
            if tenant is not None and key[0] != tenant:
                continue
            spec = template.document.spec
            pool = self._pools.get(key)
            found.append(
                TemplateInfo(
                    name=template.name,
                    tenant=template.tenant,
                    image=spec.cell.image,
                    runtime=spec.cell.security.runtime,
                    network=spec.cell.network,
                    pool_min=spec.pool.min,
                    pool_max=spec.pool.max,
                    ttl_default_s=spec.ttl.default_s,
                    ttl_max_s=spec.ttl.max_s,
                    ready=len(pool.ready) if pool is not None else 0,
                )
            )
        return found

    def _template(self, tenant: str, name: str) -> TemplateSpecDocument:
        template = self._templates.get((tenant, name))
        if template is None:
            raise TemplateNotFound(
                f"tenant {tenant} has no sandbox template {name!r}",
                fix="list the templates with GET /v1/templates (agentcell sandbox templates)",
            )
        return template

    # -- sandboxes ------------------------------------------------------------------------

    async def create(
        self, tenant: str | None, template: str, *, timeout_s: float | None, as_tenant: str | None
    ) -> SandboxInfo:
        """A never-used sandbox: a warm cell from the pool, else a cold start.

        Raises:
            InvalidInput: a tenant token named another tenant, or the admin named none and
                several tenants have the template.
            TemplateNotFound, TimeoutRefused, PoolExhausted, QuotaExceeded: as the contract.
            AdmissionError, TrustError, HostError, BackendError: a cold start was refused.
        """
        owner = self._owner(tenant, template, as_tenant)
        chosen = self._template(owner, template)
        ttl_s = _ttl(chosen, timeout_s)
        pool = self._pools[chosen.document.key]
        started = time.perf_counter()
        async with self._guard():
            limit = chosen.document.spec.pool.max
            out = self._handed_out(pool)
            if out >= limit:
                raise PoolExhausted(
                    f"template {owner}/{template} has handed out all {limit} of its sandboxes "
                    f"(pool.max {limit})",
                    fix="end a sandbox (DELETE /v1/sandboxes/ID), or raise spec.pool.max",
                )
            sandbox_id = pool.ready.popleft() if pool.ready else None
            pool.claiming += 1
        try:
            warm = sandbox_id is not None
            if sandbox_id is None:
                sandbox_id = new_sandbox_id()
                await self._run(self._verified_cell, chosen, sandbox_id, "cold")
            now = time.time()
            record = SandboxRecord(
                id=sandbox_id,
                tenant=owner,
                template=chosen.name,
                state="running",
                cell=container_name(owner, sandbox_id),
                warm=warm,
                created_at=now,
                expires_at=now + ttl_s,
                acquire_ms=round((time.perf_counter() - started) * 1000, 3),
            )
            try:
                await self._run(self._records.save, record)
            except Error:
                await self._run(self._destroy, owner, sandbox_id)
                raise
            self._sandboxes[sandbox_id] = _Sandbox(record=record, template=chosen)
        finally:
            pool.claiming -= 1
            pool.wake.set()
        log.info(
            "sandbox %s of %s/%s handed out (%s, %.1f ms)",
            sandbox_id, owner, template, "warm" if warm else "cold", record.acquire_ms,
        )  # fmt: skip
        return record.info()

    def sandbox(self, tenant: str | None, sandbox_id: str) -> SandboxInfo:
        """One sandbox of the caller's tenant.

        Raises:
            SandboxNotFound: unknown, or another tenant's.
        """
        return self._find(tenant, sandbox_id).record.info()

    def sandboxes(self, tenant: str | None) -> list[SandboxInfo]:
        """The caller's tenant's sandboxes (every tenant's for the admin), oldest first."""
        return [
            sandbox.record.info()
            for sandbox in sorted(self._sandboxes.values(), key=lambda s: s.record.created_at)
            if tenant is None or sandbox.record.tenant == tenant
        ]

    async def kill(self, tenant: str | None, sandbox_id: str) -> None:
        """Destroy the sandbox's cell; its commands end with ``sandbox_killed``.

        Raises:
            SandboxNotFound: unknown, or another tenant's.
        """
        sandbox = self._find(tenant, sandbox_id)
        await self._end(sandbox, "killed", "sandbox_killed")

    async def set_timeout(
        self, tenant: str | None, sandbox_id: str, timeout_s: float
    ) -> SandboxInfo:
        """Expire the sandbox ``timeout_s`` from now.

        Raises:
            SandboxNotFound, SandboxConflict, TimeoutRefused: as the contract.
        """
        sandbox = self._running(tenant, sandbox_id)
        ttl_s = _ttl(sandbox.template, timeout_s)
        record = _replace_expiry(sandbox.record, time.time() + ttl_s)
        await self._run(self._records.save, record)
        sandbox.record = record
        return record.info()

    # -- commands -------------------------------------------------------------------------

    async def run(
        self, tenant: str | None, sandbox_id: str, request: CommandRequest
    ) -> CommandInfo:
        """Start a command as the cell's user, in a process group of its own; its frames are
        read with :meth:`frames`.

        Raises:
            SandboxNotFound, SandboxConflict: as the contract; also a runsc cell (gVisor's exec
                is not confined by the cell's seccomp profile here, gVisor issue 12693).
            InvalidInput: neither or both of argv and shell, an empty argv, a bad timeout or
                output limit, or a shell command in an image without /bin/sh.
        """
        sandbox = self._running(tenant, sandbox_id)
        argv = _argv(request)
        if sandbox.template.document.spec.cell.security.runtime == "runsc":
            raise SandboxConflict(
                f"sandbox {sandbox_id} runs under gVisor (runsc), where a command started in the "
                "cell would not be confined by its seccomp profile (gVisor issue 12693), so "
                "agentcell runs none",
                fix="use a template with runtime runc or crun for commands; a strict-isolation "
                "tenant's sandboxes serve files only",
            )
        # A shell also holds the command until it is in a cgroup of its own (its kill then
        # reaches everything it starts); an image without one runs its commands unheld.
        has_shell = await self._has_shell(sandbox)
        if request.shell is not None and not has_shell:
            raise InvalidInput(
                f"the image of sandbox {sandbox_id} has no /bin/sh, so a shell command cannot run",
                fix="send argv instead of shell",
            )
        command = Command(
            id=new_command_id(),
            sandbox=sandbox_id,
            argv=tuple(argv),
            started_at=time.time(),
            log=CommandLog(""),
        )
        command.log.command_id = command.id
        process = await self._run(self._start_process, sandbox, argv, request, has_shell)
        sandbox.commands[command.id] = command
        if not sandbox.running:  # it ended while the process started
            command.finish(_sandbox_end(_reason_of(sandbox.record.state)))
            command.kill_process()
            return command.info()
        self._spawn(
            drive(
                command,
                process,
                timeout_s=request.timeout_s,
                limit=request.max_output_bytes,
            ),
            sandbox.tasks,
        )
        await asyncio.sleep(0)  # let the start frame be written before the caller reads
        return command.info()

    def command(self, tenant: str | None, sandbox_id: str, command_id: str) -> CommandInfo:
        """One command of the sandbox.

        Raises:
            SandboxNotFound, CommandNotFound: as the contract.
        """
        return self._command(tenant, sandbox_id, command_id).info()

    def commands(self, tenant: str | None, sandbox_id: str) -> list[CommandInfo]:
        """The sandbox's commands, oldest first (none from before a restart of the service)."""
        sandbox = self._find(tenant, sandbox_id)
        return [command.info() for command in sandbox.commands.values()]

    async def wait(
        self, tenant: str | None, sandbox_id: str, command_id: str, timeout_s: float
    ) -> CommandInfo:
        """The command once it ended, or as it is after ``timeout_s`` (at most 300)."""
        command = self._command(tenant, sandbox_id, command_id)
        await command.log.wait_end(min(max(timeout_s, 0.0), 300.0))
        return command.info()

    def frames(
        self, tenant: str | None, sandbox_id: str, command_id: str, *, after: int
    ) -> AsyncIterator[Frame]:
        """Frames with ``seq > after``, live until the end frame (always the last).

        Raises:
            SandboxNotFound, CommandNotFound: at the call, before any frame.
        """
        return self._command(tenant, sandbox_id, command_id).log.frames(after=after)

    async def kill_command(
        self, tenant: str | None, sandbox_id: str, command_id: str
    ) -> CommandInfo:
        """Kill the command's process tree; it ends with ``killed``."""
        command = self._command(tenant, sandbox_id, command_id)
        if command.log.end is None:
            command.kill_requested = True
            await self._run(_kill, command)
            await command.log.wait_end(15.0)
        return command.info()

    # -- files ----------------------------------------------------------------------------

    async def write_file(
        self, tenant: str | None, sandbox_id: str, path: str, chunks: AsyncIterator[bytes]
    ) -> int:
        """Stream ``chunks`` into ``path`` (inside a tmpfs of the cell); the size written.

        Raises:
            SandboxNotFound, SandboxConflict, FileRefused: as the contract.
        """
        sandbox = self._running(tenant, sandbox_id)
        files = self._files(sandbox)
        handoff: queue.Queue[bytes | None] = queue.Queue(maxsize=FILE_QUEUE_CHUNKS)
        loop = asyncio.get_running_loop()

        def pieces() -> Iterator[bytes]:
            while True:
                chunk = handoff.get()
                if chunk is None:
                    return
                yield chunk

        def write() -> int:
            with _file_errors(path):
                return int(files.write(path, pieces()))

        writing = loop.run_in_executor(self._executor, write)
        try:
            async for chunk in chunks:
                if writing.done():
                    break  # refused midway (too large, bad path): its error is raised below
                while not writing.done():
                    try:
                        handoff.put_nowait(chunk)
                        break
                    except queue.Full:
                        await asyncio.sleep(0.002)
        finally:
            while not writing.done():
                try:
                    handoff.put_nowait(None)
                    break
                except queue.Full:
                    await asyncio.sleep(0.002)
        return await writing

    def read_file(self, tenant: str | None, sandbox_id: str, path: str) -> AsyncIterator[bytes]:
        """The file's bytes, streamed.

        Raises:
            SandboxNotFound, SandboxConflict: at the call.
            FileRefused: a bad path or a missing file, at the first chunk (asking the cell
                takes a round trip).
        """
        return self._read_file(self._running(tenant, sandbox_id), path)

    async def _read_file(self, sandbox: _Sandbox, path: str) -> AsyncIterator[bytes]:
        files = self._files(sandbox)
        loop = asyncio.get_running_loop()
        handoff: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue(FILE_QUEUE_CHUNKS)
        stop = threading.Event()

        def read() -> None:
            try:
                with _file_errors(path):
                    for chunk in files.read(path):
                        if stop.is_set():
                            return
                        asyncio.run_coroutine_threadsafe(handoff.put(chunk), loop).result()
                asyncio.run_coroutine_threadsafe(handoff.put(None), loop).result()
            except Error as exc:
                with contextlib.suppress(RuntimeError):
                    asyncio.run_coroutine_threadsafe(handoff.put(exc), loop).result()

        reading = loop.run_in_executor(self._executor, read)
        try:
            while True:
                item = await handoff.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            while not reading.done():
                with contextlib.suppress(asyncio.QueueEmpty):
                    handoff.get_nowait()
                await asyncio.sleep(0.001)

    async def list_files(self, tenant: str | None, sandbox_id: str, path: str) -> list[FileEntry]:
        """The entries of a directory in a tmpfs of the cell."""
        sandbox = self._running(tenant, sandbox_id)
        files = self._files(sandbox)

        def listing() -> list[FileEntry]:
            with _file_errors(path):
                return [
                    FileEntry(
                        name=entry.name,
                        path=entry.path,
                        kind=entry.kind,
                        size=entry.size,
                        mode=entry.mode,
                        mtime=entry.mtime,
                    )
                    for entry in files.list(path)
                ]

        return await self._run(listing)

    async def remove_file(self, tenant: str | None, sandbox_id: str, path: str) -> None:
        """Remove a file or an empty directory in a tmpfs of the cell."""
        sandbox = self._running(tenant, sandbox_id)
        files = self._files(sandbox)

        def remove() -> None:
            with _file_errors(path):
                files.remove(path)

        await self._run(remove)

    # -- lookups --------------------------------------------------------------------------

    def _owner(self, tenant: str | None, template: str, as_tenant: str | None) -> str:
        if tenant is not None:
            if as_tenant is not None and as_tenant != tenant:
                raise InvalidInput(
                    "a tenant token cannot create sandboxes for another tenant",
                    fix="leave out 'tenant', or use the admin token",
                )
            return tenant
        if as_tenant is not None:
            return as_tenant
        owners = sorted(key[0] for key in self._templates if key[1] == template)
        if len(owners) == 1:
            return owners[0]
        if not owners:
            raise TemplateNotFound(
                f"no tenant has a sandbox template {template!r}",
                fix="list the templates with GET /v1/templates",
            )
        raise InvalidInput(
            f"tenants {', '.join(owners)} each have a template {template!r}",
            fix="name the tenant ('tenant' in the request)",
        )

    def _find(self, tenant: str | None, sandbox_id: str) -> _Sandbox:
        sandbox = self._sandboxes.get(sandbox_id)
        if sandbox is None or (tenant is not None and sandbox.record.tenant != tenant):
            raise SandboxNotFound(
                f"no sandbox {sandbox_id}", fix="list the sandboxes with GET /v1/sandboxes"
            )
        return sandbox

    def _running(self, tenant: str | None, sandbox_id: str) -> _Sandbox:
        sandbox = self._find(tenant, sandbox_id)
        if not sandbox.running:
            raise SandboxConflict(
                f"sandbox {sandbox_id} is {sandbox.record.state}, not running",
                fix="create a new sandbox",
            )
        return sandbox

    def _command(self, tenant: str | None, sandbox_id: str, command_id: str) -> Command:
        sandbox = self._find(tenant, sandbox_id)
        command = sandbox.commands.get(command_id)
        if command is None:
            gone = (
                " (commands from before the service restarted are gone)" if sandbox.adopted else ""
            )
            raise CommandNotFound(
                f"sandbox {sandbox_id} has no command {command_id}{gone}",
                fix="list its commands with GET /v1/sandboxes/ID/commands",
            )
        return command

    def _handed_out(self, pool: _Pool) -> int:
        running = sum(
            1
            for sandbox in self._sandboxes.values()
            if sandbox.running and sandbox.template.document.key == pool.key
        )
        return running + pool.claiming

    # -- ending sandboxes ----------------------------------------------------------------

    async def _end(self, sandbox: _Sandbox, state: SandboxState, reason: EndReason) -> None:
        """End a running sandbox: its commands' streams first (with ``reason``), then its
        record, then its cell (destroyed, never returned to a pool)."""
        if not sandbox.running:
            return
        record = sandbox.record.ended(state, time.time())
        sandbox.record = record
        for command in sandbox.commands.values():
            command.sandbox_ending = reason
        with contextlib.suppress(Error):
            await self._run(self._records.save, record)
        try:
            await self._run(self._destroy, record.tenant, record.id)
        except Error as exc:
            log.error(
                "sandbox %s ended (%s) but its cell was not removed: %s", record.id, state, exc
            )
        for command in sandbox.commands.values():
            command.finish(_sandbox_end(reason))
            command.kill_process()  # an exec that outlived its cell, if any
        log.info("sandbox %s %s", record.id, state)
        pool = self._pools.get(sandbox.template.document.key)
        if pool is not None:
            pool.wake.set()

    async def _reaper(self) -> None:
        """End expired sandboxes; every few rounds, mark those whose cell died; forget
        sandboxes that ended long ago."""
        rounds = 0
        while not self._closing:
            await asyncio.sleep(self._reap_interval_s)
            rounds += 1
            now = time.time()
            for sandbox in list(self._sandboxes.values()):
                if sandbox.running and sandbox.record.expires_at <= now:
                    await self._end(sandbox, "expired", "sandbox_expired")
                elif not sandbox.running and (sandbox.record.ended_at or now) + KEEP_ENDED_S < now:
                    del self._sandboxes[sandbox.record.id]
                    with contextlib.suppress(Error):
                        await self._run(self._records.delete, sandbox.record.id)
            if rounds % 5 == 0:
                with contextlib.suppress(Error):
                    await self._mark_dead()

    async def _mark_dead(self) -> None:
        states = await self._run(self._cell_states)
        for sandbox in list(self._sandboxes.values()):
            if sandbox.running and states.get(sandbox.record.cell) != "running":
                await self._end(sandbox, "dead", "sandbox_died")
        for pool in self._pools.values():
            for sandbox_id in list(pool.ready):
                if states.get(container_name(pool.template.tenant, sandbox_id)) != "running":
                    with contextlib.suppress(ValueError):
                        pool.ready.remove(sandbox_id)
                    with contextlib.suppress(Error):
                        await self._run(self._destroy, pool.template.tenant, sandbox_id)
                    pool.wake.set()

    # -- pools ----------------------------------------------------------------------------

    async def _refill(self, pool: _Pool) -> None:
        """Keep ``pool.min`` warm cells ready, within ``pool.max`` and the tenant's quota."""
        spec = pool.template.document.spec.pool
        backoff = 1.0
        while not self._closing:
            wanted = min(spec.min, spec.max - self._handed_out(pool))
            if len(pool.ready) + pool.starting >= wanted:
                pool.wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(pool.wake.wait(), 10.0)
                continue
            pool.starting += 1
            try:
                sandbox_id = await self._run(self._warm_cell, pool.template)
            except QuotaExceeded as exc:
                log.warning("pool %s/%s waits for quota: %s", *pool.key, exc.what)
                pool.wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(pool.wake.wait(), 30.0)
                continue
            except Error as exc:
                log.error("pool %s/%s could not start a warm cell: %s", *pool.key, exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 60.0)
                continue
            finally:
                pool.starting -= 1
            backoff = 1.0
            pool.ready.append(sandbox_id)
            log.info("pool %s/%s: warm cell %s ready (%d)", *pool.key, sandbox_id, len(pool.ready))

    def _warm_cell(self, template: TemplateSpecDocument) -> str:
        """Start a warm cell and verify it (blocking; see :meth:`_verified_cell`)."""
        sandbox_id = new_sandbox_id()
        self._verified_cell(template, sandbox_id, "warm")
        return sandbox_id

    def _verified_cell(self, template: TemplateSpecDocument, sandbox_id: str, kind: str) -> None:
        """Start a ``kind`` ("warm" or "cold") cell and verify it; one that fails verify is
        destroyed, never handed out (blocking).

        Raises:
            CellUnverified: it failed verify.
        """
        self._launch(template, sandbox_id, kind)
        problems = self._verify(template.tenant, sandbox_id)
        if problems:
            self._destroy(template.tenant, sandbox_id)
            raise CellUnverified(
                f"{kind} cell {sandbox_id} of {template.tenant}/{template.name} failed verify "
                f"and was destroyed: {'; '.join(problems)}",
                fix=f"run `agentcell verify` on a cell of this template ({template.file})",
            )

    # -- reconciliation ------------------------------------------------------------------

    async def _reconcile(self) -> None:
        """Adopt live sandboxes, mark records without cells dead, remove sandbox cells no
        record holds, re-verify waiting warm cells (or destroy them)."""
        records = {record.id: record for record in await self._run(self._records.load)}
        # The tenants this service serves: another service's sandboxes (another state
        # directory, e.g. a test's) are not this one's orphans.
        served = {key[0] for key in self._templates} | {r.tenant for r in records.values()}
        cells = await self._run(self._sandbox_cells, served)
        now = time.time()
        for record in records.values():
            template = self._templates.get((record.tenant, record.template))
            state = cells.get(record.id, ("", {}))[0]
            if record.state != "running":
                if template is not None and now - (record.ended_at or now) < KEEP_ENDED_S:
                    self._sandboxes[record.id] = _Sandbox(record=record, template=template)
                else:
                    await self._run(self._records.delete, record.id)
                continue
            if template is None or state != "running":
                ended = record.ended("dead", now)
                await self._run(self._records.save, ended)
                if template is not None:
                    self._sandboxes[record.id] = _Sandbox(record=ended, template=template)
                if record.id in cells:
                    await self._run(self._destroy, record.tenant, record.id)
                log.warning(
                    "sandbox %s is dead: %s", record.id,
                    "its template is gone" if template is None else "its cell is not running",
                )  # fmt: skip
                continue
            self._sandboxes[record.id] = _Sandbox(record=record, template=template, adopted=True)
            log.info(
                "adopted sandbox %s (%s/%s); commands from before the restart are gone",
                record.id, record.tenant, record.template,
            )  # fmt: skip
        for sandbox_id, (state, labels) in cells.items():
            if sandbox_id in records:
                continue
            tenant = labels.get(LABEL_TENANT, "")
            pool = self._pools.get((tenant, labels.get(LABEL_SANDBOX_TEMPLATE, "")))
            if (
                pool is None
                or labels.get(LABEL_SANDBOX_POOL) != "warm"
                or state != "running"
                or labels.get(LABEL_SPEC_HASH)
                != spec_hash(pool.template.agent(sandbox_id).document)
            ):
                log.info("removing sandbox cell %s: no sandbox holds it", sandbox_id)
                await self._run(self._destroy, tenant, sandbox_id)
                continue
            problems = await self._run(self._verify, tenant, sandbox_id)
            if problems:
                log.warning("warm cell %s failed verify, destroyed: %s", sandbox_id, problems)
                await self._run(self._destroy, tenant, sandbox_id)
            else:
                pool.ready.append(sandbox_id)
                log.info("warm cell %s re-verified, back in pool %s/%s", sandbox_id, *pool.key)

    # -- the engine (blocking: on the manager's threads) --------------------------------

    def _read_tenants(self, force: bool = False) -> dict[str, TenantDocument]:
        if self._directory is None:
            return {}
        if force or time.monotonic() - self._tenants_read_at > TENANTS_FRESH_S:
            try:
                self._tenants = {
                    record.name: record.document for record in self._directory.tenants()
                }
                self._tenants_read_at = time.monotonic()
            except Error as exc:
                if force:
                    raise
                log.warning("the control plane did not answer; using its tenants as read: %s", exc)
        return self._tenants

    def _admitted(self, template: TemplateSpecDocument, sandbox_id: str) -> AdmittedSpec:
        tenant = self._read_tenants().get(template.tenant)
        isolation = tenant.spec.isolation if tenant is not None else "standard"
        policy = preset(POLICY, tenant=TenantPolicy.for_isolation(isolation))
        return admit(template.agent(sandbox_id), policy)

    def _check_templates(self) -> None:
        """Admit every template's cell and check the host can run it; check each tenant's
        pools' minimums against its quota."""
        refusals: list[str] = []
        by_tenant: dict[str, list[AdmittedSpec]] = {}
        for template in self._templates.values():
            try:
                admitted = self._admitted(template, new_sandbox_id())
                self._backend.check_spec(admitted)
            except AdmissionError as exc:
                refusals.append(f"template {template.tenant}/{template.name}: {exc.what}")
                continue
            by_tenant.setdefault(template.tenant, []).extend(
                [admitted] * template.document.spec.pool.min
            )
            if template.document.spec.cell.security.runtime == "runsc":
                log.warning(
                    "template %s/%s runs under runsc: its sandboxes take files but no commands "
                    "(gVisor issue 12693)", template.tenant, template.name,
                )  # fmt: skip
        if refusals:
            raise AdmissionError(
                "\n".join(refusals) + "\nthe service does not start with a refused template",
                fix="change the template as each finding says",
            )
        over = pool_overruns(by_tenant, self._read_tenants())
        if over:
            raise QuotaExceeded(
                "the pools' minimums exceed their tenant's quota: "
                + "; ".join(over)
                + "; the service does not start",
                fix="lower spec.pool.min or the cells' resources, or raise the tenant's quota",
            )

    def _tenant_lock(self, tenant: str) -> threading.Lock:
        with self._locks_guard:
            return self._tenant_locks.setdefault(tenant, threading.Lock())

    def _launch(self, template: TemplateSpecDocument, sandbox_id: str, birth: str) -> None:
        """Launch one sandbox cell through the one launch path, within the tenant's quota."""
        admitted = self._admitted(template, sandbox_id)
        tenant = template.tenant
        document = self._read_tenants().get(tenant)
        trust = with_tenant(self._trust, document) if document is not None else self._trust
        labels = {
            LABEL_SANDBOX: "true",
            LABEL_SANDBOX_TEMPLATE: template.name,
            LABEL_SANDBOX_POOL: birth,
        }
        # One launch of a tenant at a time here, so two cannot both fit in the last place.
        with self._tenant_lock(tenant):
            if document is not None:
                in_use = QuotaUse()
                for cell in self._backend.cells(tenant=tenant):
                    in_use += QuotaUse(cpus=cell.cpus, memory=cell.memory, pids=cell.pids, cells=1)
                over = overruns(tenant, document.spec.quota, in_use, [admitted])
                if over:
                    raise QuotaExceeded(
                        "; ".join(over),
                        fix="end sandboxes or cells of the tenant, lower the template's pool.min, "
                        "or raise its quota",
                    )
            launch_admitted(
                [admitted],
                backend=self._backend,
                warn=lambda line: log.warning("%s: %s", sandbox_id, line),
                trust=trust,
                tenant_limits={tenant: tenant_limits(document)} if document is not None else None,
                labels=labels,
            )

    def _verify(self, tenant: str, sandbox_id: str) -> list[str]:
        """``agentcell verify`` of the cell: its mismatches (none when it passes)."""
        from agentcell.runtime.docker.proof import DockerProof

        proof = DockerProof(self._backend)
        (subject,) = proof.subjects([container_name(tenant, sandbox_id)])
        report = proof.report(subject)
        return [
            f"{check.id}: expected {check.expected}, saw {check.observed}"
            for check in report.mismatches
        ]

    def _destroy(self, tenant: str, sandbox_id: str) -> None:
        """Remove a sandbox's cell. The engine refuses a removal while another is under way
        (a kill racing the reaper): one more try after it finishes."""
        try:
            self._backend.down(tenant, sandbox_id, timeout_s=0)
        except BackendError:
            time.sleep(0.5)
            self._backend.down(tenant, sandbox_id, timeout_s=0)

    def _cell_states(self) -> dict[str, str]:
        return {cell.container: cell.state for cell in self._backend.cells()}

    def _sandbox_cells(self, tenants: set[str]) -> dict[str, tuple[str, dict[str, str]]]:
        """sandbox id -> (state, the cell's agentcell labels), for every sandbox cell of
        ``tenants``."""
        found: dict[str, tuple[str, dict[str, str]]] = {}
        for cell in self._backend.cells():
            if cell.tenant not in tenants or not is_sandbox_id(cell.agent):
                continue
            labels = self._backend.trusted(self._backend.container(cell.container)) or {}
            if labels.get(LABEL_SANDBOX) != "true":
                continue
            found[cell.agent] = (cell.state, labels)
        return found

    def _start_process(
        self, sandbox: _Sandbox, argv: Sequence[str], request: CommandRequest, held: bool
    ) -> RunningCommand:
        from agentcell.runtime.docker.commands import start_command

        process = start_command(
            self._backend.client,
            sandbox.record.cell,
            list(argv),
            cwd=request.cwd,
            env=dict(request.env),
            stdin=request.stdin,
            hold_with="/bin/sh" if held else None,
            known=sandbox.facts,
            exits=self._exits,
        )
        sandbox.facts = process.facts
        return process

    async def _has_shell(self, sandbox: _Sandbox) -> bool:
        image = sandbox.template.document.spec.cell.image
        known = self._shells.get(image)
        if known is not None:
            return known
        argv = ["/bin/sh", "-c", "exit 0"]
        probe = CommandRequest(argv=argv, shell=None, timeout_s=10.0)
        try:
            process = await self._run(self._start_process, sandbox, argv, probe, False)
            try:
                code: int | None = await self._run(process.wait, 10.0)
            finally:
                process.close()
        except Error:
            code = None
        found = code == 0
        self._shells[image] = found
        return found

    def _files(self, sandbox: _Sandbox) -> CellFiles:
        from agentcell.runtime.docker.files import CellFiles

        tmpfs = [mount.path for mount in sandbox.template.document.spec.cell.resources.tmpfs]
        return CellFiles(self._backend.client, sandbox.record.cell, tmpfs)

    # -- plumbing ----------------------------------------------------------------------------

    async def _run(self, function: Callable[..., _T], *args: Any) -> _T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    @contextlib.asynccontextmanager
    async def _guard(self) -> AsyncIterator[None]:
        if self._lock is None:
            raise SandboxConflict("the sandbox engine has not started", fix="call start() first")
        async with self._lock:
            yield

    @staticmethod
    def _spawn(coroutine: Any, into: set[asyncio.Task[None]]) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coroutine)
        into.add(task)
        task.add_done_callback(into.discard)


# -- pure helpers ---------------------------------------------------------------------------


def _ttl(template: TemplateSpecDocument, asked_s: float | None) -> float:
    """The TTL a sandbox gets: the template's default, or ``asked_s`` within its maximum.

    Raises:
        TimeoutRefused: ``asked_s`` is not positive, or over the maximum (both numbers).
    """
    ttl = template.document.spec.ttl
    if asked_s is None:
        return ttl.default_s
    if not asked_s > 0:
        raise TimeoutRefused(
            f"a timeout of {asked_s:g} s: it must be positive", fix="ask for a positive timeout"
        )
    if asked_s > ttl.max_s:
        raise TimeoutRefused(
            f"a timeout of {asked_s:g} s is over template {template.tenant}/{template.name}'s "
            f"maximum of {ttl.max_s:g} s",
            where=template.where("spec", "ttl", "max"),
            fix=f"ask for at most {ttl.max_s:g} s, or raise spec.ttl.max",
        )
    return float(asked_s)


def _argv(request: CommandRequest) -> list[str]:
    """The argv to run for ``request``.

    Raises:
        InvalidInput: neither or both of argv and shell, an empty argv, or a timeout or
            output limit out of bounds.
    """
    if (request.argv is None) == (request.shell is None):
        raise InvalidInput(
            "a command is exactly one of argv and shell", fix="send argv or shell, not both"
        )
    if not 0 < request.timeout_s <= MAX_COMMAND_TIMEOUT_S:
        raise InvalidInput(
            f"timeout_s {request.timeout_s:g} is out of range",
            fix=f"ask for 0 < timeout_s <= {MAX_COMMAND_TIMEOUT_S:g}",
        )
    if not 0 < request.max_output_bytes <= MAX_OUTPUT_BYTES:
        raise InvalidInput(
            f"max_output_bytes {request.max_output_bytes} is out of range",
            fix=f"ask for 0 < max_output_bytes <= {MAX_OUTPUT_BYTES}",
        )
    if request.shell is not None:
        return ["/bin/sh", "-c", request.shell]
    argv = list(request.argv or ())
    if not argv or not argv[0]:
        raise InvalidInput("argv is empty", fix="name the program to run as argv[0]")
    return argv


def pool_overruns(
    minimums: Mapping[str, Sequence[AdmittedSpec]], tenants: Mapping[str, TenantDocument]
) -> list[str]:
    """For each tenant, the quota limits its pools' minimum cells together would exceed, with
    the numbers; a tenant without a document has no quota."""
    over: list[str] = []
    for tenant, batch in sorted(minimums.items()):
        document = tenants.get(tenant)
        if document is not None:
            over += overruns(tenant, document.spec.quota, QuotaUse(), batch)
    return over


def _sandbox_end(reason: EndReason) -> CommandEnd:
    return CommandEnd(exit_code=None, timed_out=False, killed=False, reason=reason)


def _reason_of(state: SandboxState) -> EndReason:
    return {"expired": "sandbox_expired", "killed": "sandbox_killed"}.get(state, "sandbox_died")  # type: ignore[return-value]


def _replace_expiry(record: SandboxRecord, expires_at: float) -> SandboxRecord:
    from dataclasses import replace

    return replace(record, expires_at=expires_at)


def _kill(command: Command) -> None:
    if command.process is not None:
        command.process.kill()


@contextlib.contextmanager
def _file_errors(path: str) -> Iterator[None]:
    """The runtime's file refusals as the contract's :class:`FileRefused`."""
    from agentcell.runtime.docker.files import CellFileError

    try:
        yield
    except CellFileError as exc:
        raise FileRefused(exc.what, reason=exc.reason, fix=exc.fix) from exc


if TYPE_CHECKING:

    def _is_an_engine(manager: SandboxManager) -> SandboxEngine:
        """mypy holds the manager to the contract the HTTP layer codes against."""
        return manager
