"""How ``probe`` judges what the program and the engine report, without an engine.

The host here is a small stand-in for the ProbeHost protocol that replays what a real cell
answered; the real engine is exercised by tests/integration/verify.
"""

from __future__ import annotations

import ast
import contextlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from agentcell.errors import Error
from agentcell.spec.load import load_paths
from agentcell.spec.model import AgentDocument
from agentcell.verify.facts import HostPaths
from agentcell.verify.probe import (
    BATTERY,
    Canary,
    CellState,
    ExecResult,
    Neighbour,
    ProbeReport,
    cell_death,
    probe_program,
    run_probes,
)

REPO = Path(__file__).resolve().parents[3]


def sandbox() -> AgentDocument:
    (doc,) = load_paths([REPO / "examples" / "sandbox.yaml"])
    return doc.document


def line(probe_id: str, status: str = "blocked", **extra: object) -> bytes:
    record = {
        "id": probe_id,
        "category": "syscall",
        "title": probe_id,
        "status": status,
        "mechanism": "seccomp filter (EPERM)",
        "detail": "",
        "ms": 0.1,
        **extra,
    }
    return json.dumps(record).encode() + b"\n"


@dataclass
class ReplayHost:
    """Answers each program run with the next canned result, and records what it was asked."""

    runtime: str = "runc"
    battery: ExecResult | None = None
    bomb: ExecResult | None = None
    states: list[CellState] = field(default_factory=list)
    runs: list[list[str]] = field(default_factory=list)
    canaries: int = 0
    neighbours: list[int | None] = field(default_factory=list)

    def run_program(self, source: bytes, argv: Sequence[str], *, timeout_s: float) -> ExecResult:
        assert source == probe_program()
        self.runs.append(list(argv))
        outcome = self.battery if argv[0] == "battery" else self.bomb
        assert outcome is not None
        return outcome

    def state(self) -> CellState:
        if len(self.states) > 1:
            return self.states.pop(0)
        return (
            self.states[0]
            if self.states
            else CellState(running=True, pid=100, restart_count=0, oom_killed=False)
        )

    @contextlib.contextmanager
    def canary(self) -> Iterator[Canary | None]:
        self.canaries += 1
        yield Canary(host="172.30.0.2", port=8080, network="n", reachable_from_host=True)

    @contextlib.contextmanager
    def neighbour(self, uid: int | None) -> Iterator[Neighbour | None]:
        self.neighbours.append(uid)
        yield Neighbour(
            pid=4242, uid=uid or 1_000_000_099, secret="s", identity_host_dir="/x", container="n"
        )


def all_blocked(ids: Sequence[str] = BATTERY) -> ExecResult:
    return ExecResult(
        exit_code=0, stdout=b"".join(line(i) for i in ids) + b'{"done": true}\n', stderr=b""
    )


def probe(host: ReplayHost, only: Sequence[str] | None = None) -> ProbeReport:
    return run_probes(
        host,
        sandbox(),
        cell="demo/sandbox",
        container="agentcell-demo-sandbox",
        only=only,
        paths=HostPaths(proc=Path("/nonexistent")),
        settle_s=0.0,
    )


def test_the_battery_list_matches_the_program() -> None:
    tree = ast.parse(probe_program())
    registered = [
        node.args[0].value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "probe"
        and node.args
        and isinstance(node.args[0], ast.Constant)
    ]
    assert tuple(registered) == BATTERY
    assert len(BATTERY) >= 20


def test_a_fully_blocked_run_is_ok_and_passes_the_spec_to_the_program() -> None:
    host = ReplayHost(battery=all_blocked(), bomb=ExecResult(exit_code=137, stdout=b"", stderr=b""))
    report = probe(host)
    assert report.ok
    assert [r.id for r in report.results][-1] == "memory-bomb"
    assert host.canaries == 1
    config = json.loads(host.runs[0][1])
    assert config["pids_limit"] == 128
    assert config["tmpfs"] == [
        {"path": "/tmp", "size": 64 * 2**20},
        {"path": "/workspace", "size": 128 * 2**20},
    ]
    assert config["canary"] == {"host": "172.30.0.2", "port": 8080}
    assert config["neighbour"] == {"pid": 4242, "secret": "s", "identity_host_dir": "/x"}
    assert host.neighbours == [None]  # a uid of its own unless the caller asks for one
    bomb = json.loads(host.runs[1][1])
    assert bomb["memory_target"] == (256 + 256) * 2**20
    assert any("reachable from the host" in note for note in report.notes)
    assert any("of another tenant ran beside the cell" in note for note in report.notes)


def test_one_not_blocked_fails_the_run() -> None:
    ids = [i for i in BATTERY if i != "io_uring"]
    stdout = all_blocked(ids).stdout + line("io_uring", "NOT BLOCKED")
    host = ReplayHost(battery=ExecResult(exit_code=0, stdout=stdout, stderr=b""))
    report = probe(host, only=list(BATTERY))
    assert not report.ok
    assert [r.id for r in report.failures] == ["io_uring"]


def test_only_runs_what_it_names_and_refuses_unknown_names() -> None:
    host = ReplayHost(battery=all_blocked(["mount"]))
    report = probe(host, only=["mount"])
    assert [r.id for r in report.results] == ["mount"]
    assert host.canaries == 0
    with pytest.raises(Error, match="unknown probe nope"):
        probe(host, only=["nope"])


def test_missing_and_forged_lines_are_reported_not_trusted() -> None:
    stdout = (
        line("mount")
        + b"not json\n"
        + line("ptrace", "fine")  # not a status the program can report
        + line("bpf", mechanism="x" * 10_000)  # longer than any real mechanism
    )
    host = ReplayHost(
        battery=ExecResult(exit_code=1, stdout=stdout, stderr=b"Traceback\nBoom: x\n")
    )
    report = probe(host, only=["mount", "ptrace", "bpf"])
    results = report.by_id()
    assert results["mount"].status == "blocked"
    assert results["ptrace"].status == "skipped"
    assert results["bpf"].status == "skipped"
    assert "exited 1: Traceback | Boom: x" in results["ptrace"].mechanism
    assert any("malformed" in note for note in report.notes)


def test_runsc_skips_the_probes_that_would_end_the_sandbox_unless_named() -> None:
    ids = [i for i in BATTERY if i != "fork-bomb"]
    host = ReplayHost(runtime="runsc", battery=all_blocked(ids))
    report = probe(host).by_id()
    assert report["fork-bomb"].status == "skipped"
    assert "--only fork-bomb" in report["fork-bomb"].mechanism
    assert report["memory-bomb"].status == "skipped"
    assert all(run[0] == "battery" for run in host.runs)
    assert "fork-bomb" not in json.loads(host.runs[0][1])["only"]


def test_a_fork_bomb_that_takes_the_cell_down_was_stopped_by_the_limit() -> None:
    alive = CellState(running=True, pid=100, restart_count=0, oom_killed=False)
    restarted = CellState(running=True, pid=200, restart_count=1, oom_killed=False)
    host = ReplayHost(
        runtime="runsc",
        battery=ExecResult(exit_code=None, stdout=b"", stderr=b"", error="the cell died"),
        states=[alive, alive, restarted],
    )
    report = probe(host, only=["fork-bomb"])
    result = report.by_id()["fork-bomb"]
    assert result.status == "blocked"
    assert "pids limit" in result.mechanism
    # The limit held, but it held by ending the cell: the run fails and says so.
    assert not report.ok
    assert report.cell_died is not None and "restart count 0 -> 1" in report.cell_died
    assert report.to_json()["ok"] is False


def test_a_cell_that_dies_during_a_syscall_probe_is_not_counted_as_blocked() -> None:
    alive = CellState(running=True, pid=100, restart_count=0, oom_killed=False)
    gone = CellState(running=False, pid=0, restart_count=0, oom_killed=False)
    host = ReplayHost(
        battery=ExecResult(exit_code=None, stdout=line("mount"), stderr=b"", error="died"),
        states=[alive, alive, gone],
    )
    # The battery runs mount, bpf, keyctl in that order: bpf was running when the cell died.
    report = probe(host, only=["mount", "keyctl", "bpf"])
    assert not report.ok and report.failures == ()
    assert report.cell_died is not None and "not running" in report.cell_died
    results = report.by_id()
    assert results["mount"].status == "blocked"
    assert results["bpf"].status == "skipped"
    assert "died during this probe" in results["bpf"].mechanism
    assert results["keyctl"].mechanism.startswith("no result")


@pytest.mark.parametrize(
    ("exit_code", "states", "status", "mechanism"),
    [
        (137, [], "blocked", "OOM kill of the bomb; the cell survived"),
        (3, [], "blocked", "ENOMEM"),
        (0, [], "NOT BLOCKED", "no memory limit"),
        (
            None,
            [
                CellState(running=True, pid=100, restart_count=0, oom_killed=False),
                CellState(running=True, pid=100, restart_count=0, oom_killed=False),
                CellState(running=True, pid=300, restart_count=1, oom_killed=True),
            ],
            "blocked",
            "ended the whole cell",
        ),
    ],
)
def test_memory_bomb_verdicts(
    exit_code: int | None, states: list[CellState], status: str, mechanism: str
) -> None:
    stdout = b'{"allocated": 201326592}\n'
    host = ReplayHost(
        bomb=ExecResult(exit_code=exit_code, stdout=stdout, stderr=b""), states=states
    )
    report = probe(host, only=["memory-bomb"])
    result = report.by_id()["memory-bomb"]
    assert result.status == status
    assert mechanism in result.mechanism
    assert "allocated 192m of 512m (limit 256m)" in result.detail
    # Only the bomb's own exec may die; the whole cell dying fails the run.
    assert (report.cell_died is not None) == ("whole cell" in mechanism)


def test_an_oom_killed_exec_alone_is_not_a_dead_cell() -> None:
    before = CellState(running=True, pid=100, restart_count=0, oom_killed=False, started_at="t0")
    flagged = CellState(running=True, pid=100, restart_count=0, oom_killed=True, started_at="t0")
    assert cell_death(before, flagged) is None
    again = CellState(running=True, pid=100, restart_count=0, oom_killed=False, started_at="t1")
    assert cell_death(before, again) == "the cell died during the probe: started at t0 -> t1"


def test_a_cell_restarted_by_the_engine_between_probes_fails_the_run() -> None:
    alive = CellState(running=True, pid=100, restart_count=0, oom_killed=False)
    back = CellState(running=True, pid=100, restart_count=2, oom_killed=False)
    # Every probe line came back, yet the engine restarted the cell meanwhile.
    host = ReplayHost(battery=all_blocked(["mount"]), states=[alive, alive, back])
    report = probe(host, only=["mount"])
    assert report.by_id()["mount"].status == "blocked"
    assert not report.ok
    data = report.to_json()
    assert data["state_before"]["restart_count"] == 0
    assert data["state_after"]["restart_count"] == 2


def test_report_json_round_trips() -> None:
    host = ReplayHost(battery=all_blocked(["mount"]))
    data = probe(host, only=["mount"]).to_json()
    assert json.loads(json.dumps(data))["ok"] is True
