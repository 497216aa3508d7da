"""Where the SDK looks for the host service, and that it looks where the service writes."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from agentcell.cell import paths
from agentcell.sdk import DaemonUnavailable, InvalidRequest, daemon_dir, discover


@pytest.mark.parametrize("environ", [{}, {"AGENTCELL_HOME": "/srv/ac"}, {"AGENTCELL_HOME": ""}])
def test_the_sdk_derives_the_state_directory_as_cell_paths_does(environ: dict[str, str]) -> None:
    assert daemon_dir(environ) == paths.state_dir(environ) / "daemon"


def test_arguments_come_before_the_environment(tmp_path: Path) -> None:
    env = {
        "AGENTCELL_HOME": str(tmp_path),
        "AGENTCELL_DAEMON_URL": "https://127.0.0.1:1",
        "AGENTCELL_DAEMON_CA": "/env/ca.pem",
        "AGENTCELL_TOKEN": "env-token",
    }
    address = discover(url="https://10.0.0.1:9", token="arg-token", ca="/arg.pem", environ=env)
    assert (address.url, address.ca, address.token) == (
        "https://10.0.0.1:9",
        "/arg.pem",
        "arg-token",
    )
    address = discover(environ=env)
    assert (address.url, address.ca, address.token) == (
        "https://127.0.0.1:1",
        "/env/ca.pem",
        "env-token",
    )
    assert "env-token" not in repr(address)


def _record(tmp_path: Path, **fields: object) -> dict[str, str]:
    directory = daemon_dir({"AGENTCELL_HOME": str(tmp_path)})
    directory.mkdir(parents=True)
    (directory / "daemon.json").write_text(json.dumps(fields))
    return {"AGENTCELL_HOME": str(tmp_path)}


def test_the_record_s_socket_is_preferred_and_the_admin_token_read(tmp_path: Path) -> None:
    sock_path = tmp_path / "d.sock"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(sock_path))
    try:
        env = _record(
            tmp_path, pid=1, url="https://127.0.0.1:8766", socket=str(sock_path), ca="/ca.pem"
        )
        (daemon_dir(env) / "admin.token").write_text("admin-secret\n")
        address = discover(environ=env)
        assert address.is_unix
        assert address.socket_path == str(sock_path)
        assert address.token == "admin-secret"
    finally:
        listener.close()


def test_without_its_socket_the_record_s_tls_address_and_ca_are_used(tmp_path: Path) -> None:
    env = _record(tmp_path, pid=1, url="https://127.0.0.1:8766", socket="/gone.sock", ca="/ca.pem")
    address = discover(environ=env)
    assert (address.url, address.ca, address.host_port) == (
        "https://127.0.0.1:8766",
        "/ca.pem",
        ("127.0.0.1", 8766),
    )


def test_no_service_anywhere_says_how_to_start_one(tmp_path: Path) -> None:
    with pytest.raises(DaemonUnavailable) as caught:
        discover(environ={"AGENTCELL_HOME": str(tmp_path)})
    assert caught.value.exit_code == 3
    assert "agentcell daemon serve" in (caught.value.fix or "")


def test_a_plain_http_url_is_refused_not_sent_in_clear() -> None:
    with pytest.raises(InvalidRequest, match="neither an https"):
        discover(url="http://127.0.0.1:8766", environ={})
