"""One control plane per state directory: a second `agentcell server` on the same
AGENTCELL_HOME is refused and leaves the first, and its agents' socket, alone; the CLI finds
the running server from its record, on any port, without AGENTCELL_CONTROLPLANE_URL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from .cp_harness import ControlPlane, free_port

AGENTCELL = str(Path(sys.executable).with_name("agentcell"))


def _env(plane: ControlPlane) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("AGENTCELL_")}
    return {**env, "AGENTCELL_HOME": str(plane.home)}


def test_a_second_server_on_the_same_home_is_refused_and_the_first_keeps_serving(
    control_plane: ControlPlane,
) -> None:
    first = control_plane.server.process
    assert first is not None
    socket_before = control_plane.paths.agent_socket.stat()
    identity = control_plane.enrol("acme", "probe", via="unix")

    second = subprocess.run(
        [AGENTCELL, "server", "--listen", f"127.0.0.1:{free_port()}"],
        env=_env(control_plane),
        capture_output=True,
        timeout=60,
        check=False,
    )

    assert second.returncode == 3, second.stderr
    assert second.stdout == b""
    error = second.stderr.decode()
    assert error.splitlines()[0] == (
        f"error: another control plane (pid {first.pid}, {control_plane.server.url}) already "
        f"serves {control_plane.paths.state_dir}; this one would take over its agents' socket, "
        "so it is not started"
    )
    assert "Traceback" not in error
    # The first server's socket is the same inode, and it still answers through it.
    socket_after = control_plane.paths.agent_socket.stat()
    assert (socket_after.st_ino, socket_after.st_dev) == (
        socket_before.st_ino,
        socket_before.st_dev,
    )
    assert control_plane.report(identity, [1, 2], via="unix").status == 200
    assert first.poll() is None
    record = json.loads((control_plane.paths.state_dir / "server.json").read_text())
    assert record == {
        "pid": first.pid,
        "url": control_plane.server.url,
        "agent_socket": str(control_plane.paths.agent_socket),
    }


def test_the_cli_finds_the_server_on_a_port_of_its_own(control_plane: ControlPlane) -> None:
    assert control_plane.server.port != 8443
    control_plane.enrol("acme", "probe")
    listed = subprocess.run(
        [AGENTCELL, "cert", "list"],
        env=_env(control_plane),
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert listed.returncode == 0, listed.stderr
    assert "acme" in listed.stdout.decode() and "probe" in listed.stdout.decode()


def test_a_stopped_server_removes_its_record_and_a_new_one_may_start(
    control_plane: ControlPlane,
) -> None:
    record = control_plane.paths.state_dir / "server.json"
    assert record.exists()
    control_plane.server.stop()
    assert not record.exists()
    assert not control_plane.paths.agent_socket.exists()
    control_plane.server.start()  # same home, same port: the lock went with the first
    restarted = control_plane.server.process
    assert restarted is not None
    assert json.loads(record.read_text())["pid"] == restarted.pid
