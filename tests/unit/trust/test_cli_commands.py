"""The trust commands register on a typer app and parse their options (no engine needed)."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from agentcell.cli import trust_cmds
from agentcell.trust.keys import load_private_key, read_public_key


def _app() -> typer.Typer:
    app = typer.Typer()
    keys = typer.Typer()
    keys.command("generate")(trust_cmds.keys_generate)
    app.add_typer(keys, name="keys")
    image = typer.Typer()
    for name in ("build", "report", "push", "sign", "verify"):
        image.command(name)(getattr(trust_cmds, f"image_{name}"))
    app.add_typer(image, name="image")
    return app


@pytest.mark.parametrize(
    "command",
    [
        ["keys", "generate"],
        ["image", "build"],
        ["image", "report"],
        ["image", "push"],
        ["image", "sign"],
        ["image", "verify"],
    ],
)
def test_every_command_has_help(command: list[str]) -> None:
    result = CliRunner().invoke(_app(), [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_keys_generate_writes_a_cosign_key_pair(tmp_path: Path) -> None:
    prefix = tmp_path / "release"
    runner = CliRunner(env={"COSIGN_PASSWORD": "pw"})
    result = runner.invoke(_app(), ["keys", "generate", "--output-prefix", str(prefix)])
    assert result.exit_code == 0, result.output
    private, public = tmp_path / "release.key", tmp_path / "release.pub"
    assert private.stat().st_mode & 0o777 == 0o600
    assert private.read_bytes().startswith(b"-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----")
    pair = load_private_key(private.read_bytes(), b"pw")
    assert pair.public.fingerprint == read_public_key(public).fingerprint
    again = runner.invoke(_app(), ["keys", "generate", "--output-prefix", str(prefix)])
    assert again.exit_code != 0
    assert private.read_bytes().startswith(b"-----BEGIN ENCRYPTED SIGSTORE")
