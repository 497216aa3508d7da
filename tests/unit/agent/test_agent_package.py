"""The agent stays standard-library only and self-contained, and reads its settings strictly."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

import agentcell.agent
from agentcell.agent.main import AgentConfig
from agentcell.agent.transport import Endpoint
from agentcell.runtime.docker.agent_image import build_context

PACKAGE = Path(agentcell.agent.__file__).resolve().parent


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("module", sorted(p.name for p in PACKAGE.glob("*.py")))
def test_only_the_standard_library_is_imported(module: str) -> None:
    outside = {
        name
        for name in _imports(PACKAGE / module)
        if name not in sys.stdlib_module_names and name != "__future__"
    }
    assert outside == set(), f"{module} imports {sorted(outside)}"


def test_build_context_holds_the_dockerfile_and_the_runtime_modules(tmp_path: Path) -> None:
    context = build_context(tmp_path)
    assert (context / "Dockerfile").read_text().startswith("# The reference monitoring agent")
    shipped = sorted(p.name for p in (context / "agentcell_agent").iterdir())
    assert "image.py" not in shipped
    assert {"__init__.py", "__main__.py", "main.py", "keys.py", "spool.py"} <= set(shipped)


def test_config_defaults_and_bounds() -> None:
    config = AgentConfig.from_environ({})
    assert config.endpoint == Endpoint(
        unix_path="/run/agentcell/controlplane/agent.sock", host="", port=0
    )
    assert config.interval == 5.0
    assert config.key_file == Path("/tmp/agentcell/key.pem")
    with pytest.raises(ValueError, match="AGENTCELL_INTERVAL"):
        AgentConfig.from_environ({"AGENTCELL_INTERVAL": "0"})
    with pytest.raises(ValueError, match="AGENTCELL_BATCH_MAX"):
        AgentConfig.from_environ({"AGENTCELL_BATCH_MAX": "5000"})
    with pytest.raises(ValueError, match="unix"):
        AgentConfig.from_environ({"AGENTCELL_CONTROL_PLANE": "http://plain.example"})
