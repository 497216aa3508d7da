"""One control plane per state directory: the lock, the record of where it listens, and how
the CLI's settings find it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from agentcell.controlplane.instance import ServerLock, read_running_server
from agentcell.controlplane.settings import ClientSettings
from agentcell.errors import HostError


def test_a_second_lock_is_refused_naming_the_first_s_pid_and_address(tmp_path: Path) -> None:
    with ServerLock(tmp_path) as first:
        with pytest.raises(HostError, match=rf"pid {os.getpid()}, still starting") as starting:
            ServerLock(tmp_path).acquire()
        assert starting.value.exit_code == 3
        first.publish(url="https://127.0.0.1:9555", agent_socket="/run/x/agent.sock")
        with pytest.raises(HostError) as refused:
            ServerLock(tmp_path).acquire()
        assert refused.value.what == (
            f"another control plane (pid {os.getpid()}, https://127.0.0.1:9555) already serves "
            f"{tmp_path}; this one would take over its agents' socket, so it is not started"
        )
        assert refused.value.fix is not None and "--state-dir" in refused.value.fix
    # Released: the record is gone and the next server may start.
    assert not (tmp_path / "server.json").exists()
    with ServerLock(tmp_path):
        pass


def test_the_record_counts_only_while_the_lock_is_held(tmp_path: Path) -> None:
    lock = ServerLock(tmp_path)
    lock.acquire()
    lock.publish(url="https://127.0.0.1:9555", agent_socket=None)
    running = read_running_server(tmp_path)
    assert running is not None
    assert (running.pid, running.url) == (os.getpid(), "https://127.0.0.1:9555")
    # A server killed without cleaning up: its record stays, its lock goes with it.
    os.close(lock._fd or -1)
    lock._fd = None
    assert (tmp_path / "server.json").exists()
    assert read_running_server(tmp_path) is None
    assert read_running_server(tmp_path / "nothing-here") is None


def test_a_killed_holder_releases_the_lock(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from pathlib import Path;"
            "from agentcell.controlplane.instance import ServerLock;"
            f"lock = ServerLock(Path({str(tmp_path)!r})); lock.acquire();"
            "lock.publish(url='https://127.0.0.1:9556', agent_socket=None);"
            "print('locked', flush=True); sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"locked\n"
        with pytest.raises(HostError, match=rf"pid {holder.pid}, https://127.0.0.1:9556"):
            ServerLock(tmp_path).acquire()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
        for stream in (holder.stdin, holder.stdout):
            if stream is not None:
                stream.close()
    with ServerLock(tmp_path):
        pass


def test_the_cli_finds_the_running_server_without_a_url_variable(tmp_path: Path) -> None:
    state = tmp_path / "controlplane"
    state.mkdir()
    env = {"AGENTCELL_HOME": str(tmp_path)}
    assert ClientSettings.from_environ(env).url == "https://127.0.0.1:8443"
    with ServerLock(state) as lock:
        lock.publish(url="https://[::1]:9443", agent_socket=None)
        assert ClientSettings.from_environ(env).url == "https://[::1]:9443"
        given = {**env, "AGENTCELL_CONTROLPLANE_URL": "https://10.0.0.1:1"}
        assert ClientSettings.from_environ(given).url == "https://10.0.0.1:1"
        assert ClientSettings.from_environ(env, url="https://h:2").url == "https://h:2"
    assert ClientSettings.from_environ(env).url == "https://127.0.0.1:8443"
