"""The cross-cell checks on recorded process tables: shared uids, a host /proc with siblings
in reach, and mounts of agentcell's state."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentcell.verify.neighbours import (
    CellExposure,
    container_of,
    neighbour_checks,
    read_host_processes,
)

CELL = "a" * 64
SIBLING = "b" * 64
STATE_DIRS = ("/var/lib/agentcell", "/run/agentcell")


def process(
    proc: Path, pid: int, *, uid: int, container: str | None, cap_eff: str = "0" * 16
) -> None:
    directory = proc / str(pid)
    directory.mkdir(parents=True)
    directory.joinpath("status").write_text(
        f"Name:\tp{pid}\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\nGid:\t{uid}\t{uid}\t{uid}\t{uid}\n"
        f"Groups:\t\nCapEff:\t{cap_eff}\nCapBnd:\t{cap_eff}\n"
    )
    where = f"/docker/{container}" if container else "/"
    directory.joinpath("cgroup").write_text(f"12:pids:{where}\n1:name=systemd:{where}\n")


@pytest.fixture
def proc(tmp_path: Path) -> Path:
    root = tmp_path / "proc"
    process(root, 1, uid=0, container=None)
    process(root, 100, uid=1_000_000_000, container=CELL)
    process(root, 200, uid=1_000_000_001, container=SIBLING)
    inotify = root / "sys" / "fs" / "inotify"
    inotify.mkdir(parents=True)
    (inotify / "max_user_instances").write_text("128\n")
    return root


def exposure(**fields: object) -> CellExposure:
    values: dict[str, object] = {
        "container_id": CELL,
        "host_proc_targets": (),
        "host_pid": False,
        "bind_sources": (),
        "own_sources": (),
    } | fields
    return CellExposure(**values)  # type: ignore[arg-type]


def checks(proc: Path, **fields: object) -> dict[str, tuple[str, str]]:
    found = neighbour_checks(
        exposure(**fields),
        read_host_processes(proc),
        cell_names={SIBLING: "cell b/sibling"},
        state_dirs=STATE_DIRS,
        proc=proc,
    )
    return {check.id: (check.status, f"{check.observed} {check.why}") for check in found}


def test_cells_with_their_own_uids_verify(proc: Path) -> None:
    found = checks(proc, host_proc_targets=("/host/proc",))
    assert found["cross.uid"][0] == "verified"
    assert found["cross.host-proc"][0] == "verified"
    assert "1 processes of other containers" in found["cross.host-proc"][1]
    assert found["cross.mounts"][0] == "configured"


def test_a_process_sharing_the_uid_is_a_mismatch_naming_it_and_the_limits(proc: Path) -> None:
    process(proc, 300, uid=1_000_000_000, container="c" * 64)
    process(proc, 301, uid=1_000_000_000, container=None)
    status, text = checks(proc)["cross.uid"]
    assert status == "mismatch"
    assert "container cccccccccccc (pid 300)" in text
    assert "host process 301" in text
    assert "inotify instances (128 per uid)" in text


def test_host_proc_reaching_a_sibling_with_the_same_uid_is_a_mismatch(proc: Path) -> None:
    process(proc, 201, uid=1_000_000_000, container=SIBLING)
    found = checks(proc, host_proc_targets=("/host/proc",))
    assert found["cross.host-proc"][0] == "mismatch"
    assert "cell b/sibling (pid 201)" in found["cross.host-proc"][1]


def test_a_capability_that_crosses_uids_reaches_every_sibling(tmp_path: Path) -> None:
    root = tmp_path / "proc"
    process(root, 100, uid=1_000_000_000, container=CELL, cap_eff=f"{1 << 19:016x}")  # PTRACE
    process(root, 200, uid=1_000_000_001, container=SIBLING)
    found = checks(root, host_pid=True)
    assert found["cross.host-proc"][0] == "mismatch"
    assert "SYS_PTRACE" in found["cross.host-proc"][1]


@pytest.mark.parametrize(
    "source", ["/run/agentcell", "/run/agentcell/identity/b/x", "/run", "/var/run/docker.sock"]
)
def test_mounts_of_agentcell_state_or_an_engine_socket_are_a_mismatch(
    proc: Path, source: str
) -> None:
    assert checks(proc, bind_sources=(source,))["cross.mounts"][0] == "mismatch"


def test_the_cells_own_identity_mounts_are_expected(proc: Path) -> None:
    own = ("/run/agentcell/identity/a/x", "/run/agentcell/controlplane")
    assert checks(proc, bind_sources=own, own_sources=own)["cross.mounts"][0] == "configured"


def test_a_cell_with_no_process_is_unknown_not_verified(tmp_path: Path) -> None:
    root = tmp_path / "proc"
    process(root, 1, uid=0, container=None)
    assert checks(root)["cross.uid"][0] == "unknown"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (f"12:pids:/docker/{CELL}", CELL),
        (f"0::/system.slice/docker-{CELL}.scope", CELL),
        (f"12:pids:/agentcell/acme/{CELL}", CELL),
        ("0::/user.slice", None),
        (f"12:pids:/docker/{CELL[:12]}", None),
    ],
)
def test_container_of_reads_cgroup_v1_and_v2_paths(line: str, expected: str | None) -> None:
    assert container_of(line + "\n") == expected
