"""Where a command's cgroup goes: beneath its cell's v1 freezer cgroup, or nowhere (no v1
freezer: the caller falls back to the session it can see)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentcell.runtime.command_cgroup import CommandCgroup, freezer_path

CELL = "/agentcell/acme/" + "a" * 64
V1 = f"""12:pids:{CELL}
6:freezer:{CELL}
5:cpu,cpuacct:{CELL}
1:name=systemd:{CELL}
0::/
"""


def test_the_freezer_line_is_found_among_the_controllers() -> None:
    assert freezer_path(V1) == CELL
    assert freezer_path("0::/system.slice/docker.service\n") is None
    assert freezer_path("3:cpu,freezer:/x\n") == "/x"


def tree(tmp_path: Path, cgroup_text: str, *, freezer: bool = True) -> tuple[Path, Path]:
    proc, root = tmp_path / "proc", tmp_path / "cgroup"
    (proc / "42").mkdir(parents=True)
    (proc / "42" / "cgroup").write_text(cgroup_text)
    if freezer:
        (root / "freezer" / CELL.lstrip("/")).mkdir(parents=True)
        (root / "freezer" / "cgroup.procs").write_text("")
    return proc, root


def test_a_command_cgroup_is_made_beneath_the_cell(tmp_path: Path) -> None:
    proc, root = tree(tmp_path, V1)
    made = CommandCgroup.create(42, "agentcell-cmd-1", proc=proc, root=root)
    assert made is not None
    assert made.path == root / "freezer" / CELL.lstrip("/") / "agentcell-cmd-1"
    assert made.path.is_dir() and made.members() == []
    assert made.remove() and not made.path.exists()
    assert made.remove()  # gone already


@pytest.mark.parametrize(
    ("cgroup_text", "freezer"),
    [(V1, False), ("0::/docker/x\n", True), ("6:freezer:/\n", True)],
    ids=["no-v1-freezer", "cgroup-v2-only", "cell-at-the-root"],
)
def test_no_freezer_for_the_cell_is_no_cgroup(
    tmp_path: Path, cgroup_text: str, freezer: bool
) -> None:
    proc, root = tree(tmp_path, cgroup_text, freezer=freezer)
    assert CommandCgroup.create(42, "agentcell-cmd-1", proc=proc, root=root) is None
    assert not list(root.rglob("agentcell-cmd-*"))
