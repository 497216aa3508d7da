"""Commands in a running cell, started over exec: streamed output in order, exit codes, stdin,
env and cwd, and a kill from the host that leaves none of the command's processes, even those
that left its session, and touches nothing of a neighbour cell."""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from agentcell.errors import EngineUnavailable, HostError
from agentcell.policy import admit
from agentcell.runtime.docker.backend import DockerBackend
from agentcell.runtime.docker.commands import RunningCommand, start_command
from agentcell.runtime.docker.exec_exits import ExecExits
from agentcell.spec.load import load_paths
from tests.policies import AdmitAll

SPEC = """\
apiVersion: agentcell/v1
kind: Agent
metadata: {{name: {name}, tenant: {tenant}}}
spec:
  image: agentcell/sandbox:0.1.0
  command: [sleep, infinity]
  resources: {{cpus: 0.5, memory: 256m, pids: 128, tmpfs: [{{path: /tmp, size: 16m}}]}}
  network: none
"""


@pytest.fixture(scope="module")
def backend(docker_client: docker.DockerClient) -> DockerBackend:
    return DockerBackend(docker_client)


@pytest.fixture(scope="module")
def tenant(backend: DockerBackend) -> Iterator[str]:
    name = "itcmd" + secrets.token_hex(3)
    try:
        yield name
    finally:
        for cell in backend.cells(tenant=name):
            backend.down(cell.tenant, cell.agent, timeout_s=1)


def make_cell(backend: DockerBackend, tenant: str, name: str, directory: Path) -> str:
    path = directory / f"{name}.yaml"
    path.write_text(SPEC.format(name=name, tenant=tenant))
    (doc,) = load_paths([path])
    backend.up(admit(doc, AdmitAll()))
    return f"agentcell_{tenant}_{name}"


@pytest.fixture(scope="module")
def cell(backend: DockerBackend, tenant: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    return make_cell(backend, tenant, "one", tmp_path_factory.mktemp("cmd"))


def run(
    client: docker.DockerClient, container: str, argv: list[str], **kwargs: object
) -> tuple[int | None, bytes, bytes]:
    command = start_command(
        client,
        container,
        argv,
        cwd=kwargs.get("cwd"),  # type: ignore[arg-type]
        env=kwargs.get("env", {}),  # type: ignore[arg-type]
        stdin=kwargs.get("stdin"),  # type: ignore[arg-type]
    )
    out, err = bytearray(), bytearray()
    for stream, data in command.output():
        (out if stream == "stdout" else err).extend(data)
    return command.wait(10), bytes(out), bytes(err)


def processes_of(command: RunningCommand) -> list[int]:
    """Host pids in the command's session or process group, or whose ancestor is in one."""
    return [pid for pid, _ in command_tree(command.pid)]


def command_tree(root: int) -> list[tuple[int, str]]:
    """(pid, name) of live host processes in the session of ``root``, read from host /proc."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        if fields[0] != "Z" and root in (int(fields[2]), int(fields[3])):
            found.append((int(entry), stat[stat.find("(") + 1 : stat.rfind(")")]))
    return found


def sleepers_in(container_pid: int) -> list[int]:
    """Host pids of `sleep 300` processes in the PID namespace of the cell whose init is
    ``container_pid``."""
    namespace = os.stat(f"/proc/{container_pid}/ns/pid").st_ino
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.stat(f"/proc/{entry}/ns/pid").st_ino != namespace:
                continue
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if cmdline[:2] == [b"sleep", b"300"] and state != "Z":
            found.append(int(entry))
    return found


def init_pid(client: docker.DockerClient, container: str) -> int:
    return int(client.api.inspect_container(container)["State"]["Pid"])


def command_cgroups(client: docker.DockerClient, container: str) -> list[str]:
    """The commands' cgroups beneath the cell's freezer cgroup, as the host sees them."""
    cgroup = Path(f"/proc/{init_pid(client, container)}/cgroup").read_text()
    (cell,) = [line.split(":", 2)[2] for line in cgroup.splitlines() if ":freezer:" in line]
    directory = Path("/sys/fs/cgroup/freezer") / cell.lstrip("/")
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("agentcell-cmd-"))


def test_a_thousand_lines_arrive_complete_and_in_order_per_stream(
    docker_client: docker.DockerClient, cell: str
) -> None:
    script = (
        "import sys, time\n"
        "for i in range(1000):\n"
        "    stream = sys.stdout if i % 3 else sys.stderr\n"
        "    stream.write(f'line {i}\\n'); stream.flush()\n"
        "    if i % 50 == 0: time.sleep(0.01)\n"
    )
    command = start_command(
        docker_client, cell, ["python3", "-c", script], cwd=None, env={}, stdin=None
    )
    assert command.pid > 0
    chunks = list(command.output())
    assert command.wait(10) == 0
    out = b"".join(d for s, d in chunks if s == "stdout").decode().splitlines()
    err = b"".join(d for s, d in chunks if s == "stderr").decode().splitlines()
    assert out == [f"line {i}" for i in range(1000) if i % 3]
    assert err == [f"line {i}" for i in range(1000) if not i % 3]
    # Produced over time, it came in many chunks, not one buffer at the end.
    assert len(chunks) > 10


def test_exit_codes_stdin_env_and_cwd(docker_client: docker.DockerClient, cell: str) -> None:
    assert run(docker_client, cell, ["sh", "-c", "exit 7"])[0] == 7
    assert run(docker_client, cell, ["true"])[0] == 0
    code, out, _ = run(docker_client, cell, ["sh", "-c", "wc -c; cat"], stdin=b"x" * 300_000)
    assert code == 0 and out.startswith(b"300000")
    code, out, _ = run(docker_client, cell, ["cat"], stdin=b"hello\n")
    assert (code, out) == (0, b"hello\n")
    code, out, _ = run(
        docker_client,
        cell,
        ["sh", "-c", 'echo "$GREETING"; pwd; id -u'],
        env={"GREETING": "hi"},
        cwd="/tmp",
    )
    uid = docker_client.api.inspect_container(cell)["Config"]["User"].split(":")[0]
    assert out.decode().splitlines() == ["hi", "/tmp", uid]
    # A program that is not there: the engine's exit code, not an exception.
    code, _, _ = run(docker_client, cell, ["no-such-program"])
    assert code in (126, 127)
    # Each command had a cgroup of its own, removed once it was empty.
    assert command_cgroups(docker_client, cell) == []


def test_a_command_still_running_has_no_exit_code(
    docker_client: docker.DockerClient, cell: str
) -> None:
    with start_command(
        docker_client, cell, ["sleep", "5"], cwd=None, env={}, stdin=None
    ) as command:
        started = time.monotonic()
        assert command.wait(0.3) is None
        assert time.monotonic() - started < 2
        command.kill()
        assert command.wait(10) == 137


def test_kill_leaves_no_process_of_the_command_and_spares_the_neighbour(
    backend: DockerBackend,
    docker_client: docker.DockerClient,
    cell: str,
    tenant: str,
    tmp_path: Path,
) -> None:
    neighbour = make_cell(backend, tenant, "two", tmp_path)
    # A child in a session of its own, and a double fork whose middle process exits (the
    # grandchild is reparented to the cell's init, in the command's session).
    shell = "sleep 300 & setsid sleep 300 & (sleep 300 &) ; wait"
    theirs = start_command(
        docker_client, neighbour, ["sh", "-c", shell], cwd=None, env={}, stdin=None
    )
    ours = start_command(docker_client, cell, ["sh", "-c", shell], cwd=None, env={}, stdin=None)
    ours_init, theirs_init = init_pid(docker_client, cell), init_pid(docker_client, neighbour)
    deadline = time.monotonic() + 10
    while len(sleepers_in(ours_init)) < 3 or len(sleepers_in(theirs_init)) < 3:
        assert time.monotonic() < deadline, "the sleepers did not start"
        time.sleep(0.05)

    with ours, theirs:
        check_kill(docker_client, cell, neighbour, ours, theirs, ours_init, theirs_init)


def check_kill(
    docker_client: docker.DockerClient,
    cell: str,
    neighbour: str,
    ours: RunningCommand,
    theirs: RunningCommand,
    ours_init: int,
    theirs_init: int,
) -> None:
    killed = ours.kill()

    assert killed >= 3
    assert sleepers_in(ours_init) == []
    assert command_tree(ours.pid) == []
    assert ours.wait(10) == 137
    # The neighbour's same command, and both cells' init, are untouched.
    assert len(sleepers_in(theirs_init)) == 3
    assert theirs.wait(0) is None
    assert docker_client.api.inspect_container(cell)["State"]["Running"]
    assert docker_client.api.inspect_container(neighbour)["State"]["Running"]
    assert run(docker_client, cell, ["true"])[0] == 0
    theirs.kill()
    assert sleepers_in(theirs_init) == []


def test_kill_stops_a_command_that_keeps_forking(
    docker_client: docker.DockerClient, cell: str
) -> None:
    # Forks as fast as it can, each child leaving a sleeper behind, reparented to the init.
    shell = "while true; do sh -c 'sleep 300 &'; setsid sleep 300 & done"
    command = start_command(docker_client, cell, ["sh", "-c", shell], cwd=None, env={}, stdin=None)
    time.sleep(0.3)
    with command:
        command.kill()
    assert command.wait(10) == 137
    assert sleepers_in(init_pid(docker_client, cell)) == []
    assert command_tree(command.pid) == []


def test_kill_reaches_a_daemon_that_left_the_command_for_the_init(
    docker_client: docker.DockerClient, cell: str
) -> None:
    # The classic daemon: a child in a session of its own forks the sleeper and exits, so the
    # sleeper is the init's child in a session that is not the command's. Then the command's
    # own process exits too: nothing on the host ties the sleeper to it but the cgroup.
    shell = "setsid sh -c 'sleep 300 > /dev/null 2>&1 & exit 0'; exit 0"
    command = start_command(docker_client, cell, ["sh", "-c", shell], cwd=None, env={}, stdin=None)
    with command:
        assert command.confined
        assert command.wait(10) == 0
        cell_init = init_pid(docker_client, cell)
        deadline = time.monotonic() + 10
        while not sleepers_in(cell_init):
            assert time.monotonic() < deadline, "the daemon did not start"
            time.sleep(0.05)
        (daemon,) = sleepers_in(cell_init)
        stat = Path(f"/proc/{daemon}/stat").read_text().rsplit(")", 1)[1].split()
        assert int(stat[1]) == cell_init and command.pid not in (int(stat[2]), int(stat[3]))
        assert command_cgroups(docker_client, cell) == [f"agentcell-cmd-{command.exec_id[:16]}"]
        assert command.kill() == 1
    assert sleepers_in(cell_init) == []
    assert command_cgroups(docker_client, cell) == []


def test_a_command_without_a_shell_to_hold_it_is_not_confined(
    docker_client: docker.DockerClient, cell: str
) -> None:
    with start_command(
        docker_client, cell, ["echo", "hi"], cwd=None, env={}, stdin=None, hold_with=None
    ) as command:
        assert b"".join(d for _, d in command.output()) == b"hi\n"
        assert command.wait(10) == 0
        assert not command.confined


def test_facts_kept_from_an_earlier_command_are_read_again_after_a_restart(
    backend: DockerBackend, docker_client: docker.DockerClient, tenant: str, tmp_path: Path
) -> None:
    cell = make_cell(backend, tenant, "restarted", tmp_path)
    first = start_command(docker_client, cell, ["true"], cwd=None, env={}, stdin=None)
    with first:
        assert first.wait(10) == 0
    docker_client.api.restart(cell, timeout=0)
    assert not first.facts.current()
    with start_command(
        docker_client, cell, ["sleep", "300"], cwd=None, env={}, stdin=None, known=first.facts
    ) as second:
        assert second.facts.init_pid == init_pid(docker_client, cell)
        assert second.confined
        assert second.kill() == 1
        assert second.wait(10) == 137


def test_a_runsc_cell_refuses_exec_unless_unfiltered_is_allowed(
    docker_client: docker.DockerClient, created: object
) -> None:
    runtimes = docker_client.info().get("Runtimes") or {}
    if "runsc" not in runtimes:
        pytest.skip("runsc is not installed on this host")
    name = "agentcell-test-runsc-" + secrets.token_hex(3)
    created.container(name)  # type: ignore[attr-defined]
    docker_client.containers.run(
        "agentcell/sandbox:0.1.0",
        ["sleep", "infinity"],
        name=name,
        detach=True,
        runtime="runsc",
        network_mode="none",
        user="65534",
    )
    with pytest.raises(HostError, match="gVisor issue 12693"):
        start_command(docker_client, name, ["true"], cwd=None, env={}, stdin=None)
    command = start_command(
        docker_client, name, ["echo", "hi"], cwd=None, env={}, stdin=None, allow_unfiltered=True
    )
    assert b"".join(d for _, d in command.output()) == b"hi\n"
    assert command.wait(30) == 0


def test_exit_codes_come_from_the_engines_announcement_or_from_asking_it(
    docker_client: docker.DockerClient, cell: str
) -> None:
    exits = ExecExits()
    try:
        for argv, expected in ((["sh", "-c", "exit 7"], 7), (["true"], 0), (["nope"], 127)):
            command = start_command(
                docker_client, cell, argv, cwd=None, env={}, stdin=None, exits=exits
            )
            list(command.output())
            # The engine's exec_die event names this exec and its code.
            assert exits.wait(command.exec_id, 10) == expected
            assert exits.announced(command.exec_id) is None  # handed out once, then forgotten
            assert command.wait(10) == expected  # asked of the engine: the same code
        killed = start_command(
            docker_client, cell, ["sleep", "300"], cwd=None, env={}, stdin=None, exits=exits
        )
        with killed:
            assert killed.wait(0.2) is None
            killed.kill()
            assert killed.wait(10) == 137
        # Without the subscription (it ended, or never opened) the engine is asked.
        exits.close()
        after = start_command(
            docker_client, cell, ["sh", "-c", "exit 3"], cwd=None, env={}, stdin=None, exits=exits
        )
        list(after.output())
        assert exits.wait(after.exec_id, 0.1) is None
        assert after.wait(10) == 3
    finally:
        exits.close()

    def unreachable() -> docker.DockerClient:
        raise EngineUnavailable("no engine here", fix="none")

    never = ExecExits(unreachable)
    command = start_command(
        docker_client, cell, ["sh", "-c", "exit 5"], cwd=None, env={}, stdin=None, exits=never
    )
    list(command.output())
    assert command.wait(10) == 5
    never.close()
