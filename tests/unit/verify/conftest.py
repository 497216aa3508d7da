"""Fixtures: recorded host trees, copied per test so each can bend one fact."""

from __future__ import annotations

from pathlib import Path

import pytest

from .trees import HostTree, v1_tree, v2_tree


@pytest.fixture
def v1_host(tmp_path: Path) -> HostTree:
    """The recorded runc cell of examples/sandbox.yaml on a cgroup v1 host."""
    return v1_tree(tmp_path)


@pytest.fixture
def v2_host(tmp_path: Path) -> HostTree:
    """The same cell on a cgroup v2 host."""
    return v2_tree(tmp_path)
