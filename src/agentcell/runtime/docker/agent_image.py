"""The reference agent image's build context: its Dockerfile plus the ``agentcell.agent``
package's source files, copied alone.

The image holds the agent and nothing else of agentcell, under the package name
``agentcell_agent`` (the modules import one another relatively, so the name does not matter to
them). The package is read as files, not imported: the runtime does not depend on the agent.
"""

from __future__ import annotations

import shutil
from importlib.resources import as_file, files
from pathlib import Path

from agentcell.cell.paths import asset

__all__ = ["IMAGE_NAME", "build_context"]

IMAGE_NAME = "agent"


def build_context(destination: Path) -> Path:
    """Fill ``destination`` with ``Dockerfile`` and ``agentcell_agent/``; return it."""
    destination.mkdir(parents=True, exist_ok=True)
    with as_file(asset("images", IMAGE_NAME, "agent.Dockerfile")) as dockerfile:
        shutil.copyfile(dockerfile, destination / "Dockerfile")
    package = destination / "agentcell_agent"
    package.mkdir(exist_ok=True)
    for module in sorted(files("agentcell.agent").iterdir(), key=lambda item: item.name):
        if module.name.endswith(".py"):
            (package / module.name).write_bytes(module.read_bytes())
    return destination
