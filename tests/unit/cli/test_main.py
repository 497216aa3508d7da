"""The command line without an engine: schema, render, and lazy imports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from agentcell.cell.users import UNALLOCATED
from agentcell.cli.main import app

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
runner = CliRunner()


def test_schema_is_json_schema_for_agent_documents() -> None:
    result = runner.invoke(app, ["schema"])
    assert result.exit_code == 0
    schema = json.loads(result.stdout)
    assert schema["title"] == "agentcell Agent"
    assert set(schema["required"]) == {"apiVersion", "kind", "metadata", "spec"}
    assert schema["additionalProperties"] is False


def test_render_prints_the_equivalent_docker_run() -> None:
    result = runner.invoke(app, ["render", "-f", str(EXAMPLES / "sandbox.yaml")])
    assert result.exit_code == 0, result.output
    command = result.stdout.splitlines()[-1]
    assert command.startswith(
        f"docker run -d --name agentcell_demo_sandbox --user {UNALLOCATED}:{UNALLOCATED}"
    )
    assert "allocates the cell a host uid of its own" in result.stdout
    for flag in ("--cap-drop ALL", "--read-only", "--network none", "--pids-limit 128"):
        assert flag in command
    assert "org.agentcell.spec=" not in command


def test_cli_start_imports_neither_the_docker_sdk_nor_pydantic() -> None:
    code = (
        "import sys, agentcell.cli.main; "
        "print(sorted(m for m in ('docker', 'pydantic', 'rich.table') if m in sys.modules))"
    )
    output = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert output.strip() == "[]"


def test_the_launch_path_loads_no_crypto_or_control_plane_for_a_plain_up() -> None:
    # `up` of a spec without identity or registry images pays for neither.
    code = (
        "import sys, agentcell.launch; "
        "print(sorted(m for m in ('cryptography', 'agentcell.controlplane.settings', "
        "'agentcell.identity.ca', 'aiohttp') if m in sys.modules))"
    )
    output = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert output.strip() == "[]"
