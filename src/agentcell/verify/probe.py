"""``agentcell probe``: run the escape and abuse battery inside a cell and judge each attempt.

The probe program (``assets/probe/probe.py``, standard library only) is sent to the cell's own
``python3`` over an exec's stdin; nothing is written into the cell. It reports one JSON line
per probe. Two resource probes need the host's help and are driven from here:

* the memory bomb runs in an exec of its own, so the OOM killer takes that process and not the
  cell's PID 1; the host reads the cell's OOM-kill counter before and after;
* the canary is a container this run starts on a network of its own (and removes afterwards);
  the cell must not reach it, while the host can, which shows the canary was listening.

What talks to the engine is behind :class:`ProbeHost` (the Docker implementation lives in the
runtime layer), so this module decides and reports and never imports an SDK.

Trust: the probe runs with the image's ``python3``. A hostile image could fake the answers, so
the kernel-side facts come from ``agentcell verify``, which reads them from the host.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol

import pydantic

from agentcell.cell.paths import asset
from agentcell.errors import BackendError, InvalidInput
from agentcell.spec.model import AgentDocument
from agentcell.spec.units import format_bytes
from agentcell.verify.facts import HostPaths, read_cell_cgroup

__all__ = [
    "BATTERY",
    "HOST_DRIVEN",
    "Canary",
    "CellState",
    "ExecResult",
    "Neighbour",
    "ProbeHost",
    "ProbeReport",
    "ProbeResult",
    "ProbeStatus",
    "cell_death",
    "probe_program",
    "run_probes",
]

ProbeStatus = Literal["blocked", "contained", "allowed", "NOT BLOCKED", "skipped"]

# The probes of the program, in the order it runs them (a unit test keeps this list and the
# program's registrations equal).
BATTERY = (
    "caps-raise", "setuid-root", "no-new-privs", "mount", "unshare-userns", "setns", "ptrace",
    "bpf", "keyctl", "perf_event_open", "io_uring", "userfaultfd", "open_by_handle_at",
    "kernel-modules", "chroot", "sethostname", "mknod", "devices", "write-rootfs",
    "write-host-mounts", "proc-sys", "sysrq-trigger", "kcore", "cgroup-release-agent",
    "docker-socket", "raw-socket", "socket-families", "fork-bomb", "tmpfs-fill",
    "default-route", "canary", "neighbour-root", "neighbour-cwd", "neighbour-environ",
    "neighbour-mem", "neighbour-fd", "neighbour-signal", "neighbour-identity",
)  # fmt: skip
# The probes that need a neighbour: a cell of another tenant this run starts beside the cell.
NEIGHBOUR_PROBES = tuple(probe_id for probe_id in BATTERY if probe_id.startswith("neighbour-"))
HOST_DRIVEN = ("memory-bomb",)
ALL_PROBES = (*BATTERY, *HOST_DRIVEN)
# Under gVisor's ptrace platform the host pids and memory limits also count the sentry, so
# reaching either ends the whole sandbox; these run on runsc only when named with --only.
DESTRUCTIVE_ON_RUNSC = ("fork-bomb", "memory-bomb")
MEMORY_BOMB_HEADROOM = 256 * 1024**2
MEMORY_BOMB_CEILING = 4 * 1024**3
BATTERY_TIMEOUT_S = 180.0
MEMORY_BOMB_TIMEOUT_S = 60.0
RESTART_WAIT_S = 20.0


@dataclass(frozen=True, kw_only=True)
class ProbeResult:
    """One attempt and what stopped it (or did not)."""

    id: str
    category: str
    title: str
    status: ProbeStatus
    mechanism: str
    detail: str = ""
    elapsed_ms: float = 0.0


@dataclass(frozen=True, kw_only=True)
class ProbeReport:
    """Every probe run against one cell."""

    cell: str
    container: str
    runtime: str
    results: tuple[ProbeResult, ...]
    elapsed_s: float
    notes: tuple[str, ...] = ()
    state_before: CellState | None = None
    """The cell as the engine showed it before the first probe."""
    state_after: CellState | None = None
    """The cell as the engine showed it after the last probe."""
    cell_died: str | None = None
    """How the cell itself stopped, restarted or was OOM-killed during the run, if it was."""

    @property
    def failures(self) -> tuple[ProbeResult, ...]:
        """The attempts nothing stopped."""
        return tuple(result for result in self.results if result.status == "NOT BLOCKED")

    @property
    def ok(self) -> bool:
        """Every attempt was blocked, contained, allowed by the spec, or skipped with a reason,
        and the cell survived them all: a probe that ends the cell is a denial of service the
        isolation let through, whatever limit ended it."""
        return not self.failures and self.cell_died is None

    def by_id(self) -> dict[str, ProbeResult]:
        """Results keyed by probe id."""
        return {result.id: result for result in self.results}

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready mapping (``agentcell probe --json``)."""
        data = asdict(self)
        data["ok"] = self.ok
        return data


@dataclass(frozen=True, kw_only=True)
class ExecResult:
    """How one exec in the cell ended."""

    exit_code: int | None
    stdout: bytes
    stderr: bytes
    timed_out: bool = False
    error: str | None = None
    """Why the exec ended abnormally (the stream broke, the cell died), if it did."""


@dataclass(frozen=True, kw_only=True)
class CellState:
    """The engine's view of the cell between probes."""

    running: bool
    pid: int
    restart_count: int
    oom_killed: bool
    started_at: str = ""
    """When the engine last started the cell's main process (``State.StartedAt``)."""


def cell_death(before: CellState, after: CellState) -> str | None:
    """How the cell as a whole ended between two readings, or None if it lived through.

    An exec that the OOM killer takes (the memory bomb) leaves the main process alone; only
    its death, or the engine restarting or stopping the cell, counts.
    """
    changes = []
    if not after.running:
        changes.append("not running")
    if after.pid != before.pid:
        changes.append(f"main pid {before.pid} -> {after.pid}")
    if after.restart_count != before.restart_count:
        changes.append(f"restart count {before.restart_count} -> {after.restart_count}")
    if before.started_at and after.started_at and after.started_at != before.started_at:
        changes.append(f"started at {before.started_at} -> {after.started_at}")
    if not changes:
        # The engine may flag OOMKilled for an exec the OOM killer took while the cell lived.
        return None
    if after.oom_killed:
        changes.append("the engine records it as OOM-killed")
    return "the cell died during the probe: " + "; ".join(changes)


@dataclass(frozen=True, kw_only=True)
class Canary:
    """A listener on another network that the cell must not reach."""

    host: str
    port: int
    network: str
    reachable_from_host: bool


@dataclass(frozen=True, kw_only=True)
class Neighbour:
    """A cell of another tenant, started beside the probed one, holding secrets it must not
    read: a file in its tmpfs, its environment, its memory, its stdin, and an identity
    directory laid out as agentcell lays out a cell's (token 0400, owned by its uid)."""

    pid: int
    """Its main process on the host."""
    uid: int
    secret: str
    identity_host_dir: str
    """Where its identity directory is on the host."""
    container: str


class ProbeHost(Protocol):
    """What the probe run needs from the engine that runs the cell."""

    @property
    def runtime(self) -> str:
        """The OCI runtime of the cell (``runc``, ``crun``, ``runsc``)."""
        ...

    def run_program(self, source: bytes, argv: Sequence[str], *, timeout_s: float) -> ExecResult:
        """Run ``python3`` in the cell with ``source`` on stdin and ``argv`` as arguments."""
        ...

    def state(self) -> CellState:
        """The cell's current state."""
        ...

    def canary(self) -> AbstractContextManager[Canary | None]:
        """Start a canary on a separate network for the duration of the block; None if it
        cannot be started here."""
        ...

    def neighbour(self, uid: int | None) -> AbstractContextManager[Neighbour | None]:
        """Start a neighbour cell of another tenant for the duration of the block, as ``uid``
        (default: a uid allocated like any cell's); None if it cannot be started here."""
        ...


class _Line(pydantic.BaseModel):
    """One result line of the probe program. It comes from inside the cell: validate it."""

    model_config = pydantic.ConfigDict(extra="ignore", frozen=True)

    id: str = pydantic.Field(max_length=64)
    category: str = pydantic.Field(max_length=32)
    title: str = pydantic.Field(max_length=200)
    status: ProbeStatus
    mechanism: str = pydantic.Field(max_length=500)
    detail: str = pydantic.Field(default="", max_length=2000)
    ms: float = 0.0


def probe_program() -> bytes:
    """The source of the probe program shipped with agentcell."""
    return asset("probe", "probe.py").read_bytes()


def _selection(only: Sequence[str] | None) -> tuple[str, ...]:
    if not only:
        return ALL_PROBES
    unknown = sorted(set(only) - set(ALL_PROBES))
    if unknown:
        raise InvalidInput(
            f"unknown probe {', '.join(unknown)}",
            fix=f"choose from: {', '.join(ALL_PROBES)}",
        )
    return tuple(probe_id for probe_id in ALL_PROBES if probe_id in only)


@dataclass
class _Config:
    runtime: str
    allowed_caps: list[str]
    host_mounts: list[dict[str, Any]]
    tmpfs: list[dict[str, Any]]
    pids_limit: int
    memory_limit: int
    host_network: bool
    host_pid: bool
    docker_socket: bool
    read_only_rootfs: bool
    canary: dict[str, Any] | None = None
    neighbour: dict[str, Any] | None = None
    only: list[str] = field(default_factory=list)
    memory_target: int = 0
    deadline_s: float = 20.0

    def text(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))


def _config(document: AgentDocument, runtime: str) -> _Config:
    spec = document.spec
    return _Config(
        runtime=runtime,
        allowed_caps=list(spec.security.capabilities),
        host_mounts=[
            {"source": mount.source, "target": mount.target, "read_only": mount.read_only}
            for mount in spec.host.mounts
        ],
        tmpfs=[{"path": mount.path, "size": mount.size} for mount in spec.resources.tmpfs],
        pids_limit=spec.resources.pids,
        memory_limit=spec.resources.memory,
        host_network=spec.host.network,
        host_pid=spec.host.pid,
        docker_socket=spec.host.docker_socket,
        read_only_rootfs=spec.security.read_only_rootfs,
    )


def run_probes(
    host: ProbeHost,
    document: AgentDocument,
    *,
    cell: str,
    container: str,
    only: Sequence[str] | None = None,
    paths: HostPaths | None = None,
    settle_s: float = 5.0,
    neighbour_uid: int | None = None,
) -> ProbeReport:
    """Run the battery (or the probes named in ``only``) against a running cell.

    ``neighbour_uid`` runs the neighbour cell as that uid instead of one of its own: give it
    the probed cell's uid to see what a neighbour sharing it would suffer.

    Raises:
        Error: ``only`` names a probe that does not exist.
        BackendError: the engine refuses an exec or the canary.
    """
    started = time.monotonic()
    selected = _selection(only)
    initial = host.state()
    explicit = set(only or ())
    notes: list[str] = []
    results: list[ProbeResult] = []
    skipped_here: dict[str, str] = {}
    if host.runtime == "runsc":
        for probe_id in DESTRUCTIVE_ON_RUNSC:
            if probe_id in selected and probe_id not in explicit:
                skipped_here[probe_id] = (
                    "under runsc (ptrace platform) the host limit also counts gVisor's sentry, "
                    "so reaching it ends the whole sandbox; run it with --only "
                    f"{probe_id} on a cell you can lose"
                )
    battery = [p for p in selected if p in BATTERY and p not in skipped_here]
    config = _config(document, host.runtime)
    config.only = battery
    program = probe_program()

    if battery:
        with contextlib.ExitStack() as stack:
            canary = stack.enter_context(_maybe_canary(host, "canary" in battery))
            wanted = bool(set(NEIGHBOUR_PROBES) & set(battery))
            neighbour = stack.enter_context(host.neighbour(neighbour_uid)) if wanted else None
            if neighbour is not None:
                config.neighbour = {
                    "pid": neighbour.pid,
                    "secret": neighbour.secret,
                    "identity_host_dir": neighbour.identity_host_dir,
                }
                notes.append(
                    f"neighbour {neighbour.container} (uid {neighbour.uid}, host pid "
                    f"{neighbour.pid}) of another tenant ran beside the cell"
                )
            if canary is not None:
                config.canary = {"host": canary.host, "port": canary.port}
                notes.append(
                    f"canary {canary.host}:{canary.port} on network {canary.network}: "
                    f"{'reachable' if canary.reachable_from_host else 'NOT reachable'} "
                    "from the host"
                )
            before = host.state()
            outcome = host.run_program(
                program, ["battery", config.text()], timeout_s=BATTERY_TIMEOUT_S
            )
        finished = any(record.get("done") is True for record in _lines(outcome.stdout))
        # A battery that did not finish may have taken the cell with it: give the engine a
        # moment to notice before judging.
        after = host.state() if finished else _settled_state(host, before, settle_s)
        lost = cell_death(before, after) is not None
        results += _battery_results(outcome, battery, notes, cell_died=lost)
    for probe_id, reason in skipped_here.items():
        results.append(_skipped(probe_id, reason))
    if "memory-bomb" in selected and "memory-bomb" not in skipped_here:
        results.append(_memory_bomb(host, document, program, paths or HostPaths(), settle_s))
    order = {probe_id: index for index, probe_id in enumerate(ALL_PROBES)}
    results.sort(key=lambda result: order.get(result.id, len(order)))
    # The engine's counters only grow, so one comparison of the first and last reading catches
    # a death at any point of the run, even one the engine has already restarted.
    final = host.state()
    died = cell_death(initial, final)
    if died is not None:
        notes.append(died)
    return ProbeReport(
        cell=cell,
        container=container,
        runtime=host.runtime,
        results=tuple(results),
        elapsed_s=time.monotonic() - started,
        notes=tuple(notes),
        state_before=initial,
        state_after=final,
        cell_died=died,
    )


class _NoCanary(AbstractContextManager[None]):
    """Stands in for a canary when the canary probe is not selected."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _maybe_canary(host: ProbeHost, wanted: bool) -> AbstractContextManager[Canary | None]:
    return host.canary() if wanted else _NoCanary()


# Category and title of the probes this module may report without the program's help.
_TITLES = {
    "fork-bomb": ("resources", "fork until something stops it"),
    "tmpfs-fill": ("resources", "fill each tmpfs past its size"),
    "memory-bomb": ("resources", "allocate memory past the limit"),
}


def _skipped(probe_id: str, reason: str) -> ProbeResult:
    category, title = _TITLES.get(probe_id, ("?", probe_id))
    return ProbeResult(
        id=probe_id, category=category, title=title, status="skipped", mechanism=reason
    )


def _lines(stdout: bytes) -> Iterator[dict[str, Any]]:
    for raw in stdout.splitlines():
        try:
            record = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        if isinstance(record, dict):
            yield record


# Probes whose limit may take the whole cell down with it (gVisor's sentry shares the limit).
_LIMIT_PROBES = {
    "fork-bomb": "pids limit: reaching it ended the whole cell (gVisor's sentry shares it)",
    "tmpfs-fill": "memory limit: filling tmpfs ended the whole cell",
}


def _battery_results(
    outcome: ExecResult, expected: Sequence[str], notes: list[str], *, cell_died: bool = False
) -> list[ProbeResult]:
    results: dict[str, ProbeResult] = {}
    for record in _lines(outcome.stdout):
        if "id" not in record:
            continue
        try:
            line = _Line.model_validate(record)
        except pydantic.ValidationError:
            notes.append(f"ignored a malformed result line: {str(record)[:120]}")
            continue
        if line.id in expected:
            results[line.id] = ProbeResult(
                id=line.id,
                category=line.category,
                title=line.title,
                status=line.status,
                mechanism=line.mechanism,
                detail=line.detail,
                elapsed_ms=line.ms,
            )
    missing = [probe_id for probe_id in expected if probe_id not in results]
    if missing:
        why = outcome.error or (
            "timed out" if outcome.timed_out else f"the probe program exited {outcome.exit_code}"
        )
        tail = outcome.stderr.decode(errors="replace").strip().splitlines()[-3:]
        if tail:
            why += ": " + " | ".join(tail)
        notes.append(f"{len(missing)} probes produced no result ({why})")
        for index, probe_id in enumerate(missing):
            category, title = _TITLES.get(probe_id, ("?", probe_id))
            status: ProbeStatus = "skipped"
            mechanism = f"no result: {why}"[:500]
            if cell_died and index == 0:
                # The probe that was running when the cell died.
                if probe_id in _LIMIT_PROBES:
                    status, mechanism = "blocked", _LIMIT_PROBES[probe_id]
                else:
                    mechanism = f"the cell died during this probe: {why}"[:500]
            results[probe_id] = ProbeResult(
                id=probe_id, category=category, title=title, status=status, mechanism=mechanism
            )
    return [results[probe_id] for probe_id in expected]


def _oom_kills(paths: HostPaths, state: CellState) -> int | None:
    """OOM kills counted by the cell's memory cgroup, read on the host."""
    if not state.running or state.pid <= 0:
        return None
    limits, _ = read_cell_cgroup(paths, state.pid)
    return None if limits.value is None else limits.value.oom_kills


def _memory_bomb(
    host: ProbeHost, document: AgentDocument, program: bytes, paths: HostPaths, settle_s: float
) -> ProbeResult:
    category, title = _TITLES["memory-bomb"]
    limit = document.spec.resources.memory
    target = min(limit + MEMORY_BOMB_HEADROOM, MEMORY_BOMB_CEILING)
    config = _config(document, host.runtime)
    config.memory_target = target
    # An earlier probe may have restarted the cell (gVisor); wait until it runs again.
    before = _running_state(host, RESTART_WAIT_S)
    if not before.running:
        return _skipped("memory-bomb", "the cell is not running (restarting after a probe?)")
    kills_before = _oom_kills(paths, before)
    started = time.monotonic()
    try:
        outcome = host.run_program(
            program, ["memory-bomb", config.text()], timeout_s=MEMORY_BOMB_TIMEOUT_S
        )
    except BackendError as exc:
        return _skipped("memory-bomb", f"the engine refused the exec: {exc.what}")
    elapsed_ms = (time.monotonic() - started) * 1000
    # Killed by the OOM killer (137) is the expected end; anything else may mean the cell died.
    expected_end = outcome.exit_code in (0, 3, 137)
    after = host.state() if expected_end else _settled_state(host, before, settle_s)
    kills_after = _oom_kills(paths, after) if after.pid == before.pid else None
    allocated = 0
    for record in _lines(outcome.stdout):
        if isinstance(record.get("allocated"), int):
            allocated = max(allocated, int(record["allocated"]))
    counted = ""
    if kills_before is not None and kills_after is not None:
        counted = f"; cgroup oom_kill {kills_before} -> {kills_after}"
    reached = (
        f"allocated {format_bytes(allocated)} of {format_bytes(target)} "
        f"(limit {format_bytes(limit)})"
    )

    def result(status: ProbeStatus, mechanism: str, detail: str) -> ProbeResult:
        return ProbeResult(
            id="memory-bomb",
            category=category,
            title=title,
            status=status,
            mechanism=mechanism,
            detail=detail + counted,
            elapsed_ms=elapsed_ms,
        )

    cell_lost = not after.running or after.pid != before.pid
    if cell_lost:
        state = (
            "restarted"
            if after.restart_count > before.restart_count
            else ("running again" if after.running else "stopped")
        )
        return result(
            "blocked",
            "memory limit: the host OOM killer ended the whole cell",
            f"{reached}; the cell's main process died (cell {state}, engine OOMKilled="
            f"{str(after.oom_killed).lower()})",
        )
    oom_counted = (
        kills_before is not None and kills_after is not None and kills_after > kills_before
    )
    if outcome.exit_code == 137 or oom_counted:
        return result(
            "blocked",
            "memory limit (OOM kill of the bomb; the cell survived)",
            f"{reached}; exec exit {outcome.exit_code}",
        )
    if outcome.exit_code == 3:
        return result("blocked", "allocation refused (ENOMEM)", reached)
    if outcome.exit_code == 0:
        return result("NOT BLOCKED", "no memory limit stopped it", reached)
    why = outcome.error or ("timed out" if outcome.timed_out else f"exit {outcome.exit_code}")
    return result("skipped", f"inconclusive: {why}", reached)


def _running_state(host: ProbeHost, wait_s: float) -> CellState:
    """The cell's state once it runs, or as it is after ``wait_s``."""
    deadline = time.monotonic() + wait_s
    state = host.state()
    while not state.running and time.monotonic() < deadline:
        time.sleep(0.5)
        state = host.state()
    return state


def _settled_state(host: ProbeHost, before: CellState, wait_s: float) -> CellState:
    """The cell's state after a bomb, given a moment for the engine to notice a death."""
    deadline = time.monotonic() + wait_s
    state = host.state()
    while time.monotonic() < deadline and state.running and state.pid == before.pid:
        time.sleep(0.2)
        state = host.state()
    return state
