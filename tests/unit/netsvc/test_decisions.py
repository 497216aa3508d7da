"""The decision log: one JSON line per decision, bounded by rotation, read back with the
denied-only filter and followed across rotations."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from agentcell.errors import InvalidInput
from agentcell.netsvc.decisions import (
    DecisionLog,
    DecisionRecord,
    decision_log_path,
    read_decisions,
)


def write(log: DecisionLog, name: str, decision: str = "deny") -> DecisionRecord:
    return log.record(
        tenant="acme", cell="web", kind="dns", name=name, qtype="A",
        decision=decision, reason="not on the allow-list",  # type: ignore[arg-type]
    )  # fmt: skip


def test_path_is_per_tenant_under_the_state_dir(tmp_path: Path) -> None:
    assert decision_log_path("acme", directory=tmp_path) == tmp_path / "net/acme/decisions.jsonl"
    with pytest.raises(InvalidInput):
        decision_log_path("../etc", directory=tmp_path)


def test_records_are_json_lines_with_every_field(tmp_path: Path) -> None:
    log = DecisionLog(tmp_path / "d.jsonl")
    write(log, "exfil.example.com")
    log.record(tenant="acme", cell="web", kind="connect", name="pypi.org", address="10.0.0.1",
               port=443, decision="allow", reason="allowed by pypi.org:443")  # fmt: skip
    log.close()
    lines = (tmp_path / "d.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    assert set(first) == {"ts", "tenant", "cell", "kind", "name", "qtype", "address", "port",
                          "decision", "reason"}  # fmt: skip
    assert (first["cell"], first["name"], first["qtype"], first["decision"]) == (
        "web", "exfil.example.com", "A", "deny",
    )  # fmt: skip
    assert json.loads(lines[1])["port"] == 443


def test_the_log_rotates_and_stays_bounded(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    log = DecisionLog(path, max_bytes=2000)
    for index in range(200):
        write(log, f"n{index}.example.com")
    log.close()
    assert path.stat().st_size <= 2000
    assert path.with_name("d.jsonl.1").stat().st_size <= 2000
    names = [entry.name or "" for entry in read_decisions(path)]
    assert names[-1] == "n199.example.com"
    assert names == sorted(names, key=lambda n: int(n.split(".")[0][1:]))  # oldest first


def test_denied_only_and_garbage_lines(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    log = DecisionLog(path)
    write(log, "a.test", "allow")
    write(log, "b.test", "deny")
    log.close()
    with open(path, "ab") as handle:
        handle.write(b'not json\n{"kind": "dns"}\n[1]\n')
    assert [e.name for e in read_decisions(path)] == ["a.test", "b.test"]
    assert [e.name for e in read_decisions(path, denied_only=True)] == ["b.test"]


def test_long_names_are_cut(tmp_path: Path) -> None:
    log = DecisionLog(tmp_path / "d.jsonl")
    entry = write(log, "x" * 5000)
    log.close()
    assert entry.name is not None and len(entry.name) < 600


def test_follow_sees_new_records_across_a_rotation(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    log = DecisionLog(path, max_bytes=600)
    write(log, "before.test")
    stop, started = threading.Event(), threading.Event()
    seen: list[str] = []

    def reader() -> None:
        for entry in read_decisions(path, follow=True, poll_interval=0.02, stop=stop):
            seen.append(entry.name or "")
            started.set()
            if entry.name == "last.test":
                stop.set()

    thread = threading.Thread(target=reader)
    thread.start()
    assert started.wait(10)  # following the file before it rotates (twice would lose a record)
    for index in range(10):  # enough to rotate a 600-byte log
        write(log, f"during{index}.test")
    write(log, "last.test")
    thread.join(timeout=10)
    stop.set()
    log.close()
    assert not thread.is_alive()
    assert seen[0] == "before.test" and seen[-1] == "last.test"
