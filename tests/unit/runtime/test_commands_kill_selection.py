"""Which processes a kill of a command takes: its session, its process group and their
descendants in the cell, wherever they moved, and nothing else of the cell."""

from __future__ import annotations

from agentcell.runtime.docker.commands import HostProcess, command_processes, parse_stat

INIT, LEADER = 100, 200


def process(pid: int, ppid: int, pgrp: int, session: int, *, zombie: bool = False) -> HostProcess:
    return HostProcess(
        pid=pid, ppid=ppid, pgrp=pgrp, session=session, start_ticks=pid, zombie=zombie
    )


CELL = [
    process(INIT, 1, INIT, INIT),  # the cell's init
    process(LEADER, 50, LEADER, LEADER),  # the exec'd process (its parent is on the host)
    process(201, LEADER, LEADER, LEADER),  # `sleep &`
    process(202, LEADER, 202, 202),  # `setsid sleep &`: a session of its own
    process(203, 202, 202, 202),  # ... and its child
    process(204, INIT, LEADER, LEADER),  # a double fork: reparented to init, same session
    process(205, INIT, 205, LEADER),  # changed its process group only
    process(206, LEADER, LEADER, LEADER, zombie=True),  # dead already
    process(300, 51, 300, 300),  # another command of the same cell
    process(301, 300, 300, 300),
    process(302, INIT, 302, 302),  # the init's own child
]


def test_the_command_its_session_group_and_descendants_are_taken() -> None:
    chosen = {p.pid for p in command_processes(CELL, LEADER)}
    assert chosen == {LEADER, 201, 202, 203, 204, 205}


def test_a_command_whose_leader_exited_still_takes_what_stayed_in_its_session() -> None:
    without_leader = [p for p in CELL if p.pid != LEADER]
    assert {p.pid for p in command_processes(without_leader, LEADER)} == {201, 204, 205}


def test_another_command_and_the_init_are_never_taken() -> None:
    chosen = {p.pid for p in command_processes(CELL, 300)}
    assert chosen == {300, 301}


def test_stat_fields_are_read_after_the_last_parenthesis_of_the_name() -> None:
    # A hostile command name with spaces and parentheses cannot shift the fields.
    fields = ["S", "7", "8", "9"] + ["0"] * 15 + ["12345"] + ["0"] * 10
    parsed = parse_stat(42, "42 (evil) 1 2 3 (x) " + " ".join(fields))
    assert parsed == HostProcess(pid=42, ppid=7, pgrp=8, session=9, start_ticks=12345, zombie=False)
    assert parse_stat(42, "42 (short) S 1") is None
    zombie = parse_stat(43, "43 (z) " + " ".join(["Z", *fields[1:]]))
    assert zombie is not None and zombie.zombie
