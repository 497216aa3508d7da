"""Commands in a running cell: start one over ``docker exec``, stream its output, wait, kill.

The sandbox daemon calls this library; it owns the engine's side of a command and nothing of
the HTTP layer's (frames, sequence numbers, output limits and timeouts are the daemon's).

* **Output** comes from the exec's attach stream, demultiplexed by the docker SDK's own frame
  reader (:func:`docker.utils.socket.frames_iter`), chunk by chunk as the engine sends it.
* **Confinement**: each command runs in a cgroup of its own beneath the cell's
  (:mod:`agentcell.runtime.command_cgroup`), which every process it starts inherits and none
  can leave. The command starts held: the engine runs ``<shell> -c 'kill -STOP $$ && shift &&
  exec "$@"' agentcell TOKEN ARGV...``, so its first process stops itself before it runs
  anything of the command's; the host finds it by its one-off TOKEN among the processes the
  runtime exec'd, looking only at those that joined the cell's cgroup since the start (the
  engine's own record of the pid comes a moment later), moves it into the
  command's cgroup, then continues it, and the ``exec`` leaves the command with that same
  process, its argv, environment, cwd and input. An image without a shell
  (``hold_with=None``), runsc, or a host without the v1 freezer runs the command unheld and
  unconfined (:attr:`RunningCommand.confined` says which).
* **Exit code**: the engine's, from its ``exec_die`` event when the caller gives an
  :class:`~agentcell.runtime.docker.exec_exits.ExecExits`, else (or when none is heard) from
  ``exec inspect``; never anything the cell says.
* **Kill** happens from the host, never by a process in the cell: the command's cgroup is
  frozen, every member signalled, and thawed, until it is empty. Then, as for an unconfined
  command, the processes of the cell's PID namespace whose session or process group is the
  command's (runc starts every exec'd process as the leader of a session of its own), plus
  anything that descends from one of them, are stopped, looked for again and killed, round
  after round until none remain. Before any signal, the target is opened as a pidfd and
  checked again to be in this cell's PID namespace and cgroup, so a recycled pid outside the
  cell is never signalled.
* **gVisor**: runsc (20221219, here) does not give exec'd processes the container's seccomp
  profile (gVisor issue 12693), so :func:`start_command` refuses a runsc cell unless the caller
  says ``allow_unfiltered=True``.

What an unconfined command's kill does not catch: a process that calls ``setsid`` and whose
every ancestor up to the command then exits (the classic daemon) is reparented to the cell's
init with a session of its own; nothing but a cgroup ties it to the command any more. A
confined one is caught unless another process of the cell's own user continued the held shell
before the host moved it (the cell can only loosen its own kills that way).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

import docker
from docker.utils.socket import STDERR, STDOUT, frames_iter

from agentcell.errors import BackendError, Error, HostError, InvalidInput
from agentcell.runtime.cgroups import CGROUP_FS
from agentcell.runtime.command_cgroup import CommandCgroup, freezer_path
from agentcell.runtime.docker.client import translated
from agentcell.runtime.docker.exec_exits import ExecExits

__all__ = ["CellFacts", "RunningCommand", "Stream", "cell_facts", "start_command"]

Stream = Literal["stdout", "stderr"]
_STREAMS: dict[int, Stream] = {STDOUT: "stdout", STDERR: "stderr"}
# A command that keeps forking is stopped and killed round after round; this many rounds
# without reaching none is an error rather than a loop without end.
KILL_ROUNDS = 50
_WAIT_POLL_S = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1)
_HOST_PROC = Path("/proc")
START_TIMEOUT_S = 30.0
_PID_POLL_S = 0.002
# What holds a command until the host has moved it into its cgroup ($0 names it in the shell's
# own errors, such as a program that is not there). Its first argument is a token of this
# start, by which the host finds the held process among the exec'd ones (the shell drops it
# before the exec).
HOLD_SCRIPT = 'kill -STOP $$ && shift && exec "$@"'
_HOLD_NAME = "agentcell"
# How long the held process is looked for in the host's /proc before the engine is asked for
# its pid instead (slower: it records the pid a moment later).
HOLD_FIND_S = 2.0
_RUNTIMES = ("runc", "crun")
_FIND_POLL_S = 0.0005
# A held shell stops itself within milliseconds; one that does not (an image's odd /bin/sh)
# is moved running, and its command is not counted as confined.
HOLD_TIMEOUT_S = 5.0
# How long a wait listens for the engine's announcement of the end before it asks the engine
# (an exec that dies with its cell may never be announced).
EXIT_EVENT_WAIT_S = 0.5


@dataclass(frozen=True, kw_only=True)
class CellFacts:
    """What the engine says about the cell at the command's start; a caller that runs many
    commands in one cell keeps them (:attr:`RunningCommand.facts`) for the next one."""

    container_id: str
    runtime: str
    init_pid: int
    shim_pid: int
    """The init's parent on the host: the engine's shim, which adopts exec'd processes."""
    pid_namespace: int
    """Inode of the cell's PID namespace, read from its init in the host's /proc."""
    cell_procs: Path | None = None
    """The ``cgroup.procs`` of the cell's v1 freezer cgroup, where an exec'd process appears
    (runc and crun put it in the container's cgroups before it runs); None on a host without
    it."""

    def current(self) -> bool:
        """Whether the cell still runs the init these facts were read from (a restarted
        cell's init has another PID namespace)."""
        return _pid_namespace(self.init_pid) == self.pid_namespace


@dataclass(frozen=True, kw_only=True)
class HostProcess:
    """A process as the host's ``/proc/<pid>/stat`` shows it (host pids throughout)."""

    pid: int
    ppid: int
    pgrp: int
    session: int
    start_ticks: int
    zombie: bool
    stopped: bool = False
    """Stopped by a signal (or traced): a held command waiting to be continued."""


def start_command(
    client: docker.DockerClient,
    container: str,
    argv: Sequence[str],
    *,
    cwd: str | None,
    env: Mapping[str, str],
    stdin: bytes | None,
    user: str | None = None,
    allow_unfiltered: bool = False,
    hold_with: str | None = "/bin/sh",
    known: CellFacts | None = None,
    exits: ExecExits | None = None,
) -> RunningCommand:
    """Start ``argv`` in the running ``container`` and return a handle on it.

    The command runs as the container's user (the cell's uid) unless ``user`` is given, in
    ``cwd`` (else the image's working directory) with ``env`` added to the image's
    environment. ``stdin`` is written to the command and then its input is closed; with
    ``None`` the command gets no input at all. ``hold_with`` is the image's POSIX shell that
    holds the command until it is in its cgroup (see the module's notes); ``None`` for an
    image without one, whose command then runs unconfined. ``known`` are the cell's facts
    from an earlier command (read again from the engine when the cell's init changed).
    ``exits`` hears the engine announce the command's end, so :meth:`RunningCommand.wait`
    need not ask it (it still does when nothing is heard).

    Raises:
        InvalidInput: ``argv`` is empty.
        HostError: the cell runs under runsc, whose exec'd processes escape the cell's seccomp
            profile, and ``allow_unfiltered`` was not given.
        CellNotFound: no such container.
        BackendError: the container is not running, or the engine refused the exec.
    """
    if not argv:
        raise InvalidInput("a command needs at least a program to run", fix="give argv[0]")
    facts = known if known is not None and known.current() else cell_facts(client, container)
    if facts.runtime == "runsc" and not allow_unfiltered:
        raise HostError(
            f"{container} runs under gVisor (runsc), whose exec'd processes are not filtered by "
            "the cell's seccomp profile on this runsc (gVisor issue 12693)",
            fix="run commands in a runc or crun cell, or pass allow_unfiltered=True for a "
            "tenant that accepts exec'd processes without the seccomp profile",
        )
    held = hold_with is not None and facts.runtime != "runsc"
    token = f"agentcell-hold-{secrets.token_hex(8)}"
    sent = [hold_with or "", "-c", HOLD_SCRIPT, _HOLD_NAME, token, *argv] if held else list(argv)
    api = client.api
    with translated("exec in", subject=container):
        exec_id = str(
            api.exec_create(
                facts.container_id,
                sent,
                stdin=stdin is not None,
                stdout=True,
                stderr=True,
                environment=dict(env),
                workdir=cwd,
                user=user or "",
            )["Id"]
        )
        if exits is not None:
            exits.expect(exec_id)
        before = _cgroup_pids(facts.cell_procs) if held else None
        wrapper = api.exec_start(exec_id, socket=True)
    command = RunningCommand(
        client=client,
        container=container,
        exec_id=exec_id,
        facts=facts,
        wrapper=wrapper,
        stdin=stdin,
        exits=exits,
    )
    if held:
        try:
            command.confine(token, before)
        except BaseException:
            with contextlib.suppress(Error, OSError):
                command.kill()
            command.close()
            raise
    return command


class RunningCommand:
    """A command started by :func:`start_command`: its output, its exit code, and a kill."""

    def __init__(
        self,
        *,
        client: docker.DockerClient,
        container: str,
        exec_id: str,
        facts: CellFacts,
        wrapper: Any,
        stdin: bytes | None,
        exits: ExecExits | None = None,
    ) -> None:
        self._client = client
        self._exits = exits
        self.container = container
        self.exec_id = exec_id
        self._pid: int | None = None
        self.facts = facts
        self._wrapper = wrapper
        # The SDK wraps the hijacked connection; the socket underneath reads and half-closes.
        self._socket = cast("socket.socket", getattr(wrapper, "_sock", wrapper))
        self._exit_code: int | None = None
        self._cgroup: CommandCgroup | None = None
        self.confined = False
        """Whether every process the command starts is in its cgroup (see the module)."""
        self._stdin_error: OSError | None = None
        self._writer: threading.Thread | None = None
        if stdin is not None:
            # A thread, so a command that writes before it reads cannot deadlock against us.
            self._writer = threading.Thread(
                target=self._send_stdin, args=(stdin,), name=f"stdin-{exec_id[:12]}", daemon=True
            )
            self._writer.start()

    @property
    def pid(self) -> int:
        """The command's host pid (its session and process group carry the same number), 0
        if it ended before the engine recorded one. The engine records it a moment after the
        start (tens of milliseconds): the first read waits for it.

        Raises:
            BackendError: the command did not start in time, or the engine does not answer.
        """
        if self._pid is None:
            self._pid = _started_pid(self._client, self.container, self.exec_id)
        return self._pid

    def confine(self, token: str, before: frozenset[int] | None = None) -> None:
        """Move the held command (started with ``token``) into a cgroup of its own, then let
        it run. ``before`` are the pids in the cell's cgroup before the start, when known.

        Raises:
            BackendError: the command did not start in time, or cgroupfs refused the move.
        """
        found = _find_held(self.facts, token, HOLD_FIND_S, before)
        if found is not None:
            self._pid = found
        pid = self.pid
        if pid <= 0:
            return  # it ended already (killed while held)
        stopped = _wait_stopped(pid, HOLD_TIMEOUT_S)
        process = _read_process(pid)
        if process is None:
            return
        try:
            name = f"agentcell-cmd-{self.exec_id[:16]}"
            cgroup = CommandCgroup.create(self.facts.init_pid, name)
            if cgroup is not None:
                self._cgroup = cgroup
                self._with_pidfd(process, lambda _: cgroup.adopt(pid))
        except OSError as exc:
            raise BackendError(
                f"cannot move a command in {self.container} into a cgroup of its own: {exc}",
                fix="check that the v1 freezer hierarchy under /sys/fs/cgroup is writable",
            ) from exc
        self.confined = self._cgroup is not None and stopped
        self._signal(process, signal.SIGCONT)

    def __enter__(self) -> RunningCommand:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _send_stdin(self, data: bytes) -> None:
        try:
            if data:
                self._socket.sendall(data)
            self._socket.shutdown(socket.SHUT_WR)
        except OSError as exc:  # the command ended (or closed its input) before reading it all
            self._stdin_error = exc

    def output(self) -> Iterator[tuple[Stream, bytes]]:
        """The command's output as it is produced, ``("stdout"|"stderr", chunk)``, until both
        streams end. Blocks; iterate it once."""
        try:
            for stream, data in frames_iter(self._socket, False):  # type: ignore[no-untyped-call]
                kind = _STREAMS.get(stream)
                if kind is not None and data:
                    yield kind, bytes(data)
        except OSError as exc:
            raise BackendError(
                f"the output stream of a command in {self.container} broke: {exc}"
            ) from exc
        finally:
            self.close()

    def close(self) -> None:
        """Drop the output stream (the command runs on), and the command's cgroup if nothing
        is left in it. Whoever does not read :meth:`output` to its end closes the handle (or
        uses it as a context manager)."""
        with contextlib.suppress(OSError):
            self._wrapper.close()
        with contextlib.suppress(OSError):
            self._socket.close()
        if self._cgroup is not None:
            with contextlib.suppress(OSError):
                self._cgroup.remove()

    def wait(self, timeout_s: float | None = None) -> int | None:
        """The exit code once the command has ended; None if it still runs after ``timeout_s``
        seconds (``None`` waits without end).

        Raises:
            BackendError: the engine does not answer.
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        if self._exit_code is None and self._exits is not None:
            # The engine announces the end as it handles it; asking it would wait for that too.
            first = EXIT_EVENT_WAIT_S if timeout_s is None else min(EXIT_EVENT_WAIT_S, timeout_s)
            self._exit_code = self._exits.wait(self.exec_id, first)
        attempt = 0
        while True:
            code = self.poll()
            if code is not None:
                return code
            if deadline is not None and time.monotonic() >= deadline:
                return None
            pause = _WAIT_POLL_S[min(attempt, len(_WAIT_POLL_S) - 1)]
            if deadline is not None:
                pause = max(0.0, min(pause, deadline - time.monotonic()))
            time.sleep(pause)
            attempt += 1

    def poll(self) -> int | None:
        """The exit code if the command has ended, else None, without waiting."""
        if self._exit_code is None and self._exits is not None:
            self._exit_code = self._exits.announced(self.exec_id)
        if self._exit_code is None:
            with translated("inspect exec in", subject=self.container):
                info = self._client.api.exec_inspect(self.exec_id)
            if not info.get("Running") and info.get("ExitCode") is not None:
                self._exit_code = int(info["ExitCode"])
        return self._exit_code

    def kill(self) -> int:
        """SIGKILL every process of the command, from the host; returns how many were killed.

        Raises:
            HostError: the cell runs under runsc, whose processes the host does not see.
            BackendError: processes of the command were still there after every round.
        """
        if self.facts.runtime == "runsc":
            raise HostError(
                f"cannot kill a command in {self.container} from the host: gVisor's processes "
                "are not the host's",
                fix="kill the cell (its commands end with it)",
            )
        if self.pid <= 0:
            return 0
        killed: set[tuple[int, int]] = set()
        if self._cgroup is not None:
            try:
                self._cgroup.kill(lambda pid: self._kill_member(pid, killed))
                self._cgroup.remove()
            except OSError as exc:
                raise BackendError(
                    f"cannot kill the processes of a command in {self.container}: {exc}",
                    fix="kill the cell",
                ) from exc
        for _ in range(KILL_ROUNDS):
            members = self._members()
            if not members:
                return len(killed)
            # Stop first, so nothing forks or moves while we look for the rest.
            for process in members:
                self._signal(process, signal.SIGSTOP)
            members = self._members()
            for process in members:
                if self._signal(process, signal.SIGKILL):
                    killed.add((process.pid, process.start_ticks))
            time.sleep(0.01)
        left = self._members()
        if not left:
            return len(killed)
        raise BackendError(
            f"processes of a command in {self.container} survived {KILL_ROUNDS} rounds of "
            f"SIGKILL: {sorted(p.pid for p in left)}",
            fix="kill the cell",
        )

    def _members(self) -> list[HostProcess]:
        """The command's live processes in the cell (see :func:`command_processes`)."""
        in_cell = [
            process
            for process in _host_processes()
            if _pid_namespace(process.pid) == self.facts.pid_namespace
        ]
        chosen = command_processes(in_cell, self.pid)
        return [p for p in chosen if not _is_namespace_init(p.pid)]

    def _kill_member(self, pid: int, killed: set[tuple[int, int]]) -> bool:
        process = _read_process(pid)
        if process is None or not self._signal(process, signal.SIGKILL):
            return False
        killed.add((process.pid, process.start_ticks))
        return True

    def _signal(self, process: HostProcess, signum: signal.Signals) -> bool:
        """Signal ``process`` only if the pid still names it, in this cell."""
        try:
            return self._with_pidfd(process, lambda pidfd: signal.pidfd_send_signal(pidfd, signum))
        except ProcessLookupError:
            return False

    def _with_pidfd(self, process: HostProcess, act: Callable[[int], object]) -> bool:
        """``act(pidfd)`` only if the pid still names ``process``, in this cell; whether it
        did."""
        try:
            handle = os.pidfd_open(process.pid)
        except OSError:
            return False  # gone
        try:
            # The pidfd pins the process: if the pid still names the one we chose, in this
            # cell's namespace and cgroup, acting on the pid cannot reach any other process.
            now = _read_process(process.pid)
            if (
                now is None
                or now.start_ticks != process.start_ticks
                or _pid_namespace(process.pid) != self.facts.pid_namespace
                or not _in_container_cgroup(process.pid, self.facts.container_id)
            ):
                return False
            act(handle)
            return True
        finally:
            os.close(handle)


def command_processes(processes: Sequence[HostProcess], leader: int) -> list[HostProcess]:
    """Of ``processes`` (those of one PID namespace), the live ones of the command whose
    exec'd process is ``leader``: its session, its process group, and whatever descends from
    one of them. Zombies are left out (they are dead already)."""
    chosen = {p.pid for p in processes if leader in (p.pid, p.session, p.pgrp)}
    children: dict[int, list[int]] = {}
    for process in processes:
        children.setdefault(process.ppid, []).append(process.pid)
    pending = list(chosen)
    while pending:
        for child in children.get(pending.pop(), []):
            if child not in chosen:
                chosen.add(child)
                pending.append(child)
    return [p for p in processes if p.pid in chosen and not p.zombie]


def _started_pid(client: docker.DockerClient, container: str, exec_id: str) -> int:
    """The exec's host pid: the engine records it a moment after the start call returns."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        with translated("inspect exec in", subject=container):
            info = client.api.exec_inspect(exec_id)
        pid = int(info.get("Pid") or 0)
        if pid > 0 or (not info.get("Running") and info.get("ExitCode") is not None):
            return pid
        if time.monotonic() >= deadline:
            raise BackendError(f"a command in {container} did not start in {START_TIMEOUT_S} s")
        # Short and steady: the start takes tens of milliseconds, and callers wait on it.
        time.sleep(_PID_POLL_S)


def _find_held(
    facts: CellFacts, token: str, timeout_s: float, before: frozenset[int] | None = None
) -> int | None:
    """The host pid of the held process started with ``token``: a child of the cell's
    container shim (where the runtime leaves an exec'd process), or of the runtime (runc,
    crun) while it is still there. The cell's orphans go to its init, never to the shim, so
    only an exec'd command can sit there; one that named itself after the runtime and copied
    the token from the held shell's argv could only hold up its own cell's next command.
    None when it is not seen within ``timeout_s`` (or this kernel does not list children).

    With the pids of the cell's cgroup from ``before`` the start, it looks only at those that
    joined it since (one file to read per look, rather than every thread's children of the
    shim and the runtime), with the same test of parentage."""
    if facts.cell_procs is not None and before is not None:
        return _find_held_joined(facts, token, timeout_s, before)
    deadline = time.monotonic() + timeout_s
    while True:
        shim_children = _children(facts.shim_pid)
        if shim_children is None:
            return None
        for child in shim_children:
            if child == facts.init_pid:
                continue
            candidates = [child]
            if _comm(child) in _RUNTIMES:
                candidates += _children(child) or ()
            for pid in candidates:
                if _is_held(pid, token):
                    return pid
        if time.monotonic() >= deadline:
            return None
        time.sleep(_FIND_POLL_S)


def _find_held_joined(
    facts: CellFacts, token: str, timeout_s: float, before: frozenset[int]
) -> int | None:
    """:func:`_find_held` among the processes that joined the cell's cgroup since ``before``."""
    assert facts.cell_procs is not None
    deadline = time.monotonic() + timeout_s
    while True:
        pids = _cgroup_pids(facts.cell_procs)
        if pids is None:
            return None
        for pid in pids - before:
            if pid != facts.init_pid and _is_held(pid, token) and _exec_child(pid, facts):
                return pid
        if time.monotonic() >= deadline:
            return None
        time.sleep(_FIND_POLL_S)


def _exec_child(pid: int, facts: CellFacts) -> bool:
    """Whether ``pid`` is a child of the cell's shim, or of a runtime that is one."""
    process = _read_process(pid)
    if process is None or facts.shim_pid <= 0:
        return False
    if process.ppid == facts.shim_pid:
        return True
    parent = _read_process(process.ppid)
    return parent is not None and parent.ppid == facts.shim_pid and _comm(process.ppid) in _RUNTIMES


def _cgroup_pids(procs: Path | None) -> frozenset[int] | None:
    """The pids a ``cgroup.procs`` file lists; None without one, or when it cannot be read."""
    if procs is None:
        return None
    try:
        return frozenset(int(word) for word in procs.read_text().split())
    except (OSError, ValueError):
        return None


def _is_held(pid: int, token: str) -> bool:
    try:
        argv = (_HOST_PROC / str(pid) / "cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return argv[2:5] == [HOLD_SCRIPT.encode(), _HOLD_NAME.encode(), token.encode()]


def _comm(pid: int) -> str:
    try:
        return (_HOST_PROC / str(pid) / "comm").read_text().strip()
    except OSError:
        return ""


def _children(pid: int) -> list[int] | None:
    """The children of every thread of ``pid``; None when the kernel does not say."""
    found: list[int] = []
    try:
        threads = os.listdir(_HOST_PROC / str(pid) / "task")
    except OSError:
        return None  # gone, or no such pid (0: the shim was not known)
    for thread in threads:
        try:
            text = (_HOST_PROC / str(pid) / "task" / thread / "children").read_text()
        except FileNotFoundError:
            return None  # no CONFIG_PROC_CHILDREN, or the thread ended
        except OSError:
            continue
        found += (int(word) for word in text.split())
    return found


def _wait_stopped(pid: int, timeout_s: float) -> bool:
    """Whether the process ``pid`` stopped itself within ``timeout_s`` (False also when it is
    gone)."""
    deadline = time.monotonic() + timeout_s
    while True:
        process = _read_process(pid)
        if process is None or process.zombie:
            return False
        if process.stopped:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(_PID_POLL_S / 2)


def cell_facts(client: docker.DockerClient, container: str) -> CellFacts:
    """The engine's facts about the running ``container``.

    Raises:
        CellNotFound: no such container.
        BackendError: it is not running.
    """
    with translated("inspect", subject=container):
        attrs = client.api.inspect_container(container)
    state = attrs.get("State") or {}
    init_pid = int(state.get("Pid") or 0)
    if not state.get("Running") or state.get("Restarting") or init_pid <= 0:
        raise BackendError(
            f"{container} is not running", fix="start the cell before running commands in it"
        )
    namespace = _pid_namespace(init_pid)
    init = _read_process(init_pid)
    if namespace is None:
        raise BackendError(f"cannot read the PID namespace of {container}'s init ({init_pid})")
    return CellFacts(
        container_id=str(attrs["Id"]),
        runtime=str((attrs.get("HostConfig") or {}).get("Runtime") or "runc"),
        init_pid=init_pid,
        shim_pid=init.ppid if init is not None else 0,
        pid_namespace=namespace,
        cell_procs=_cell_procs(init_pid),
    )


def _cell_procs(init_pid: int) -> Path | None:
    """The ``cgroup.procs`` of the v1 freezer cgroup the cell's init is in, if there is one."""
    try:
        path = freezer_path((_HOST_PROC / str(init_pid) / "cgroup").read_text())
    except OSError:
        return None
    if not path or path == "/":
        return None
    procs = CGROUP_FS / "freezer" / path.lstrip("/") / "cgroup.procs"
    return procs if procs.is_file() else None


def _host_processes() -> list[HostProcess]:
    found = []
    for entry in os.scandir(_HOST_PROC):
        if entry.name.isdigit():
            process = _read_process(int(entry.name))
            if process is not None:
                found.append(process)
    return found


def _read_process(pid: int) -> HostProcess | None:
    try:
        text = (_HOST_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    return parse_stat(pid, text)


def parse_stat(pid: int, text: str) -> HostProcess | None:
    """``/proc/<pid>/stat``: the fields after the command name, which may hold anything
    (spaces, parentheses), so they are found after its last ``)``."""
    fields = text[text.rfind(")") + 2 :].split()
    if len(fields) < 20:
        return None
    return HostProcess(
        pid=pid,
        ppid=int(fields[1]),
        pgrp=int(fields[2]),
        session=int(fields[3]),
        start_ticks=int(fields[19]),
        zombie=fields[0] in ("Z", "X"),
        stopped=fields[0] in ("T", "t"),
    )


def _pid_namespace(pid: int) -> int | None:
    try:
        return os.stat(_HOST_PROC / str(pid) / "ns" / "pid").st_ino
    except OSError:
        return None


def _is_namespace_init(pid: int) -> bool:
    """Whether ``pid`` is its PID namespace's init (the cell's main process)."""
    try:
        status = (_HOST_PROC / str(pid) / "status").read_text()
    except OSError:
        return False
    for line in status.splitlines():
        if line.startswith("NSpid:"):
            return line.split()[-1] == "1"
    return False


def _in_container_cgroup(pid: int, container_id: str) -> bool:
    try:
        return container_id in (_HOST_PROC / str(pid) / "cgroup").read_text()
    except OSError:
        return False
