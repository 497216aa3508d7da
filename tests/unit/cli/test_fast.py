"""The thin path takes only the argument lists it understands, and only with a service
running; everything else goes to the full command line, which works as without a service."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentcell.cli import fast
from tests.conftest import EXAMPLES

SPEC = str(EXAMPLES / "sandbox.yaml")


@pytest.fixture
def no_service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("AGENTCELL_HOME", str(tmp_path))
    for name in ("AGENTCELL_DAEMON_URL", "AGENTCELL_TOKEN", "AGENTCELL_NO_DAEMON"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


@pytest.fixture
def listening_service(no_service: Path) -> Iterator[Path]:
    """A service record whose socket accepts connections (nothing answers HTTP on it)."""
    directory = no_service / "controlplane" / "daemon"
    directory.mkdir(parents=True)
    sock_path = no_service / "d.sock"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(sock_path))
    listener.listen()
    (directory / "daemon.json").write_text(
        json.dumps({"pid": 1, "url": "https://127.0.0.1:1", "socket": str(sock_path), "ca": None})
    )
    try:
        yield sock_path
    finally:
        listener.close()


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["up", "-f", SPEC],
        ["ps"],
        ["down", "demo/sandbox"],
        ["lint", "-f", SPEC],
        ["--help"],
    ],
)
def test_without_a_service_the_full_command_line_answers(no_service: Path, argv: list[str]) -> None:
    assert fast.dispatch(argv) is None


@pytest.mark.parametrize(
    "argv",
    [
        ["up", "-f", SPEC, "--help"],
        ["up", "-f", SPEC, "--frobnicate"],
        ["up", "-f", str(EXAMPLES)],  # a directory: the full loader walks it
        ["up"],
        ["down", "sandbox"],  # an agent name alone: the full command resolves it
        ["down", "-f", SPEC],
        ["ps", "-o", "yaml"],
        ["sandbox", "exec", "sbx-1"],  # no command after --
        ["sandbox", "create", "python", "--timeout", "soon"],
        ["sandbox", "frobnicate"],
        ["run", "python"],  # no command
    ],
)
def test_what_the_thin_path_does_not_understand_falls_through(
    listening_service: Path, argv: list[str]
) -> None:
    assert fast.dispatch(argv) is None


def test_a_running_service_is_one_whose_socket_answers(
    listening_service: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert fast._daemon_answers()
    monkeypatch.setenv("AGENTCELL_NO_DAEMON", "1")
    assert not fast._daemon_answers()


def test_a_stale_record_is_no_running_service(no_service: Path) -> None:
    directory = no_service / "controlplane" / "daemon"
    directory.mkdir(parents=True)
    (directory / "daemon.json").write_text(
        json.dumps({"pid": 1, "url": "https://127.0.0.1:1", "socket": str(no_service / "gone")})
    )
    assert not fast._daemon_answers()
    assert fast.dispatch(["ps"]) is None


def test_sandbox_commands_without_a_service_say_how_to_start_one(
    no_service: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert fast.dispatch(["sandbox", "ls"]) == 3
    assert "agentcell daemon serve" in capsys.readouterr().err


def test_a_bad_name_is_refused_as_the_full_command_refuses_it(
    listening_service: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert fast.dispatch(["down", "Demo/x"]) == 2
    assert "'Demo/x': the tenant part may hold only a-z" in capsys.readouterr().err


def test_the_entry_point_imports_neither_typer_nor_the_launch_path() -> None:
    # Nor dataclasses (it costs inspect), nor the SDK's sandbox classes: `up`, `down` and `ps`
    # need the transport alone.
    code = (
        "import sys, agentcell.cli.fast, agentcell.sdk, agentcell.sdk._transport; "
        "print(sorted(m for m in ('typer', 'click', 'docker', 'pydantic', 'yaml', 'rich', "
        "'agentcell.launch', 'aiohttp', 'dataclasses', 'agentcell.sdk._sync') "
        "if m in sys.modules))"
    )
    output = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert output.strip() == "[]"
