"""Every command fed empty, malformed and hostile names, as a new user (or a script with an
unset variable) would: one located error line and a fix, exit 2, no traceback, nothing done.

Malformed names are refused before the engine or the control plane is asked, so most cases
need neither; names that are well formed but match nothing ask the real engine.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest

AGENTCELL = Path(sys.executable).with_name("agentcell")

MALFORMED = {
    "empty": "",
    "trailing slash": "ux/",
    "leading slash": "/x",
    "two slashes": "a/b/c",
    "space": "a b",
    "uppercase tenant": "UX/rep",
    "escape sequence": "\x1b]0;owned\x07\x1b[2J",
    "markup": "[red]x[/red]",
    "too long": "a" * 300,
    "dot dot": "../../etc",
    "bidi override": "evil\u202etxt",
}

# (argv with NAME where the name goes, the argument the error must name)
CELL_COMMANDS = {
    "down": (["down", "NAME"], "NAME"),
    "inspect": (["inspect", "NAME"], "NAME"),
    "logs": (["logs", "NAME"], "NAME"),
    "verify": (["verify", "NAME"], "NAME"),
    "probe": (["probe", "NAME"], "NAME"),
}
OTHER_COMMANDS = {
    "cert revoke": (["cert", "revoke", "NAME"], "TARGET"),
    "cert list --agent": (["cert", "list", "--agent", "NAME"], "--agent"),
    "cert list --tenant": (["cert", "list", "--tenant", "NAME"], "--tenant"),
    "events --agent": (["events", "--agent", "NAME"], "--agent"),
    "metrics": (["metrics", "NAME"], "METRIC"),
    "metrics --tenant": (["metrics", "load.1m", "--tenant", "NAME"], "--tenant"),
    "ps --tenant": (["ps", "--tenant", "NAME"], "--tenant"),
}


def run(argv: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    # An empty home: a control-plane command that got past its checks could reach nothing.
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("AGENTCELL_CONTROLPLANE")},
        "AGENTCELL_HOME": str(tmp_path),
        "COLUMNS": "200",
    }
    return subprocess.run(
        [str(AGENTCELL), *argv], capture_output=True, text=True, timeout=120, env=env
    )


def assert_one_located_line(result: subprocess.CompletedProcess[str], argument: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert [line for line in lines if line.startswith("error:")] == [lines[0]], result.stderr
    assert lines[0].startswith(f"error: {argument}"), result.stderr
    assert len(lines) == 2 and lines[1].startswith("  fix: "), result.stderr
    # The name is shown, never sent: no control or bidi character reaches the terminal.
    assert not {c for c in result.stderr if unicodedata.category(c) in ("Cc", "Cf")} - {"\n"}


@pytest.mark.parametrize("case", sorted(MALFORMED))
@pytest.mark.parametrize("command", sorted(CELL_COMMANDS) + sorted(OTHER_COMMANDS))
def test_a_malformed_name_is_refused_on_one_line(command: str, case: str, tmp_path: Path) -> None:
    argv, argument = {**CELL_COMMANDS, **OTHER_COMMANDS}[command]
    name = MALFORMED[case]
    if command == "cert revoke" and case == "markup":
        name = "[ab]"  # hex letters in brackets: still no serial
    result = run([name if part == "NAME" else part for part in argv], tmp_path)
    assert_one_located_line(result, argument)


@pytest.mark.parametrize("command", sorted(CELL_COMMANDS))
def test_a_cell_that_does_not_exist_is_bad_input(command: str, tmp_path: Path) -> None:
    argv, _ = CELL_COMMANDS[command]
    missing = f"nosuch{secrets.token_hex(3)}/agent"
    result = run([missing if part == "NAME" else part for part in argv], tmp_path)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith(f"error: no cell {missing}"), result.stderr


def test_an_unknown_probe_rule_or_option_value_is_bad_input(tmp_path: Path) -> None:
    for argv, words in (
        (["probe", "some-cell", "--only", "no-such-probe"], "--only: no probe 'no-such-probe'"),
        (["rules", "AC-999"], "RULE: no rule 'AC-999'"),
        (["image", "sign", "127.0.0.1:5000/x:1", "--key", "k", "-a", "novalue"], "--annotation"),
        (["image", "build", "x", "--context", ".", "--allow", "everything"], "--allow"),
    ):
        result = run(argv, tmp_path)
        assert result.returncode == 2, (argv, result.stderr)
        assert "Traceback" not in result.stderr
        assert result.stderr.startswith(f"error: {words}"), result.stderr


@pytest.mark.parametrize("reference", ["", "a b", "UP/x", "\x1b[2J", "a:"])
@pytest.mark.parametrize("command", ["report", "push", "verify"])
def test_a_malformed_image_reference_is_bad_input(
    command: str, reference: str, tmp_path: Path
) -> None:
    argv = ["image", command, reference]
    if command == "verify":
        argv += ["--key", str(tmp_path / "cosign.pub")]
    result = run(argv, tmp_path)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("error: "), result.stderr
    assert "is not an image reference" in result.stderr


def test_no_name_at_all_says_what_to_give(tmp_path: Path) -> None:
    for argv in (["down"], ["verify"], ["lint"]):
        result = run(argv, tmp_path)
        assert result.returncode == 2, result.stderr
        assert result.stderr.startswith("error: ") and "fix: " in result.stderr, result.stderr
