"""Finding a held command among the processes the runtime exec'd, by its one-off token, in a
recorded /proc tree: a child of the shim, or still of the runtime; never the cell's init; and
a kernel that does not list children gives way to the engine's record at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentcell.runtime.docker import commands
from agentcell.runtime.docker.commands import CellFacts

TOKEN = "agentcell-hold-0123456789abcdef"
FACTS = CellFacts(container_id="c" * 64, runtime="runc", init_pid=100, shim_pid=50, pid_namespace=1)


def process(proc: Path, pid: int, argv: list[str], children: dict[int, list[int]]) -> None:
    (proc / str(pid)).mkdir(parents=True, exist_ok=True)
    (proc / str(pid) / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")
    (proc / str(pid) / "comm").write_text(Path(argv[0]).name[:15] + "\n")
    for thread, kids in children.items():
        task = proc / str(pid) / "task" / str(thread)
        task.mkdir(parents=True, exist_ok=True)
        (task / "children").write_text(" ".join(map(str, kids)) + (" " if kids else ""))


def held(token: str = TOKEN) -> list[str]:
    return ["/bin/sh", "-c", commands.HOLD_SCRIPT, "agentcell", token, "true"]


@pytest.fixture
def proc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(commands, "_HOST_PROC", tmp_path)
    return tmp_path


def test_the_held_process_is_found_under_the_shim_or_the_runtime(proc: Path) -> None:
    process(proc, 50, ["containerd-shim-runc-v2"], {50: [100, 200, 400], 51: [300]})
    # The init carries the token in its argv too (a hostile cell's init could): never chosen.
    process(proc, 100, held(), {100: [101]})
    process(proc, 101, held(), {101: []})
    # An earlier command's children are not looked at: only a runtime's are.
    process(proc, 200, ["/bin/sh", "-c", "sleep 300 &"], {200: [201]})
    process(proc, 201, held(), {201: []})
    # The token alone is not enough: the whole hold must be there.
    process(proc, 400, ["/bin/echo", TOKEN], {400: []})
    process(proc, 300, ["runc", "exec"], {300: [301]})
    process(proc, 301, held(), {301: []})
    assert commands._find_held(FACTS, TOKEN, 0) == 301
    assert commands._find_held(FACTS, "agentcell-hold-ffffffffffffffff", 0) is None


def test_without_children_lists_the_engine_is_asked_at_once(proc: Path) -> None:
    (proc / "50" / "task" / "50").mkdir(parents=True)
    assert commands._find_held(FACTS, TOKEN, 60) is None
    assert (
        commands._find_held(
            CellFacts(container_id="c", runtime="runc", init_pid=100, shim_pid=0, pid_namespace=1),
            TOKEN,
            60,
        )
        is None
    )


def stat(proc: Path, pid: int, ppid: int, state: str = "S") -> None:
    comm = (proc / str(pid) / "comm").read_text().strip()
    fields = [state, str(ppid), str(pid), str(pid)] + ["0"] * 18
    (proc / str(pid) / "stat").write_text(f"{pid} ({comm}) " + " ".join(fields) + "\n")


def test_in_the_cells_cgroup_only_a_newcomer_the_shim_or_its_runtime_exec_d_is_chosen(
    proc: Path, tmp_path: Path
) -> None:
    procs = tmp_path / "cgroup.procs"
    facts = CellFacts(
        container_id="c" * 64,
        runtime="runc",
        init_pid=100,
        shim_pid=50,
        pid_namespace=1,
        cell_procs=procs,
    )
    process(proc, 50, ["containerd-shim-runc-v2"], {})
    stat(proc, 50, 1)
    process(proc, 100, held(), {})  # the init: never chosen
    stat(proc, 100, 50)
    # Already in the cell before the start: not looked at (an earlier command of the shim's).
    process(proc, 150, held(), {})
    stat(proc, 150, 50)
    # A cell's process that copied the hold, as the init's child, or under a "runc" of its own.
    process(proc, 201, held(), {})
    stat(proc, 201, 100)
    process(proc, 210, ["runc", "exec"], {})
    stat(proc, 210, 100)
    process(proc, 211, held(), {})
    stat(proc, 211, 210)
    procs.write_text("100\n150\n201\n210\n211\n")
    before = frozenset({100, 150})
    assert commands._find_held(facts, TOKEN, 0, before) is None
    # The real one, still the runtime's child.
    process(proc, 300, ["runc", "exec"], {})
    stat(proc, 300, 50)
    process(proc, 301, held(), {})
    stat(proc, 301, 300, "T")
    procs.write_text("100\n150\n201\n210\n211\n301\n")
    assert commands._find_held(facts, TOKEN, 0, before) == 301
    # ...and once the runtime is gone, the shim's.
    stat(proc, 301, 50, "T")
    assert commands._find_held(facts, TOKEN, 0, before) == 301
    assert commands._find_held(facts, "agentcell-hold-ffffffffffffffff", 0, before) is None
    # An unreadable cgroup gives way to the engine's record at once.
    procs.unlink()
    assert commands._find_held(facts, TOKEN, 60, before) is None
