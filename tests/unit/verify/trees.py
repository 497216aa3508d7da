"""A recorded host tree (procfs, cgroupfs, runtime state) that a test can bend into a case."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from agentcell.verify.facts import HostPaths

DATA = Path(__file__).parent / "data"
PID = 4242
CONTAINER_ID = "cell0001"
HOST_NAMESPACES = {
    "pid": "pid:[4026531836]",
    "net": "net:[4026531833]",
    "ipc": "ipc:[4026531839]",
    "uts": "uts:[4026531838]",
    "user": "user:[4026531837]",
    "cgroup": "cgroup:[4026531835]",
    "mnt": "mnt:[4026531832]",
}
CELL_NAMESPACES = {
    **HOST_NAMESPACES,
    "pid": "pid:[4026532181]",
    "net": "net:[4026532182]",
    "ipc": "ipc:[4026532180]",
    "uts": "uts:[4026532179]",
    "mnt": "mnt:[4026532178]",
}


@dataclass
class HostTree:
    """A copy of a recorded host under ``root``, with helpers to change one fact at a time."""

    root: Path

    @property
    def paths(self) -> HostPaths:
        return HostPaths(
            proc=self.root / "proc",
            sys=self.root / "sys",
            root=self.root,
            runtime_state=self.root / "run" / "runtime",
        )

    @property
    def cell(self) -> Path:
        return self.root / "proc" / str(PID)

    def namespaces(self, pid: str, links: dict[str, str]) -> None:
        directory = self.root / "proc" / pid / "ns"
        if directory.exists():
            shutil.rmtree(directory)
        directory.mkdir(parents=True)
        for kind, target in links.items():
            os.symlink(target, directory / kind)

    def runtime(self, name: str) -> None:
        state = self.paths.runtime_state
        if state.exists():
            shutil.rmtree(state)
        state.mkdir(parents=True)
        if name == "runc":
            (state / CONTAINER_ID).mkdir()
            (state / CONTAINER_ID / "state.json").write_text("{}")
        elif name == "crun":
            (state / CONTAINER_ID).mkdir()
            (state / CONTAINER_ID / "status").write_text("running")
        elif name == "runsc":
            (state / f"{CONTAINER_ID}_sandbox:{CONTAINER_ID}.state").write_text("{}")
            (self.cell / "cmdline").write_text("runsc-sandbox\0--root=/x\0boot\0")

    def edit(self, relative: str, old: str, new: str) -> None:
        path = self.root / relative
        text = path.read_text()
        assert old in text, f"{old!r} not in {relative}"
        path.write_text(text.replace(old, new))

    def write(self, relative: str, text: str) -> None:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def _tree(tmp_path: Path, source: str) -> HostTree:
    root = tmp_path / "host"
    shutil.copytree(DATA / source, root)
    tree = HostTree(root=root)
    tree.namespaces("self", HOST_NAMESPACES)
    tree.namespaces(str(PID), CELL_NAMESPACES)
    tree.runtime("runc")
    return tree


def v1_tree(tmp_path: Path) -> HostTree:
    """The recorded runc cell of examples/sandbox.yaml on a cgroup v1 host."""
    return _tree(tmp_path, "v1")


def v2_tree(tmp_path: Path) -> HostTree:
    """The same cell on a cgroup v2 host."""
    tree = _tree(tmp_path, "v2")
    # The cell's procfs files are the same whatever the cgroup version.
    for name in ("status", "mountinfo"):
        shutil.copy(DATA / "v1" / "proc" / str(PID) / name, tree.cell / name)
    shutil.copytree(DATA / "v1" / "proc" / str(PID) / "net", tree.cell / "net")
    return tree
