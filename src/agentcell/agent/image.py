"""The agent image's build context: its Dockerfile folder plus this package, copied alone.

The image holds the agent and nothing else of agentcell, under the package name
``agentcell_agent`` (the modules import one another relatively, so the name does not matter to
them). This module is not copied: it is for the host that builds the image.
"""

from __future__ import annotations

import shutil
from importlib.resources import as_file, files
from pathlib import Path

__all__ = ["IMAGE_NAME", "build_context"]

IMAGE_NAME = "agent"
_NOT_SHIPPED = {"image.py"}


def build_context(destination: Path) -> Path:
    """Fill ``destination`` with ``Dockerfile`` and ``agentcell_agent/``; return it."""
    destination.mkdir(parents=True, exist_ok=True)
    assets = files("agentcell") / "assets" / "images" / IMAGE_NAME
    with as_file(assets / "agent.Dockerfile") as dockerfile:
        shutil.copyfile(dockerfile, destination / "Dockerfile")
    package = destination / "agentcell_agent"
    package.mkdir(exist_ok=True)
    source = Path(__file__).resolve().parent
    for module in sorted(source.glob("*.py")):
        if module.name not in _NOT_SHIPPED:
            shutil.copyfile(module, package / module.name)
    return destination
