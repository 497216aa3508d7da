"""The agent's buffer: order, bounds, acknowledgement, and resuming from the tmpfs."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentcell.agent.spool import Spool


def test_reports_leave_oldest_first_and_only_when_acknowledged(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_records=10)
    for sequence in range(1, 6):
        spool.append(sequence, f'{{"sequence":{sequence}}}'.encode())
    assert [s for s, _ in spool.oldest(3)] == [1, 2, 3]
    spool.acknowledge([1, 2])
    assert [s for s, _ in spool.oldest(10)] == [3, 4, 5]
    assert spool.oldest(1) == [(3, b'{"sequence":3}')]
    assert len(spool) == 3


def test_bound_drops_the_oldest_and_counts_them(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_records=3)
    dropped = [spool.append(sequence, b"x") for sequence in range(1, 7)]
    assert dropped == [0, 0, 0, 1, 1, 1]
    assert spool.dropped == 3
    assert [s for s, _ in spool.oldest(10)] == [4, 5, 6]
    assert len(list(tmp_path.iterdir())) == 3


def test_order_is_the_contract(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_records=3)
    spool.append(5, b"x")
    with pytest.raises(ValueError, match="not after"):
        spool.append(5, b"y")


def test_a_new_process_resumes_the_same_spool(tmp_path: Path) -> None:
    first = Spool(tmp_path, max_records=10)
    for sequence in (7, 8, 9):
        first.append(sequence, b"x")
    first.acknowledge([7])
    (tmp_path / ".10.new").write_bytes(b"half")  # a write cut short by a kill
    resumed = Spool(tmp_path, max_records=10)
    assert [s for s, _ in resumed.oldest(10)] == [8, 9]
    assert resumed.last_sequence == 9
    assert not (tmp_path / ".10.new").exists()


@given(
    bound=st.integers(min_value=1, max_value=20),
    steps=st.lists(st.one_of(st.just("append"), st.integers(0, 5)), max_size=60),
)
def test_model_of_a_bounded_ordered_queue(
    tmp_path_factory: pytest.TempPathFactory, bound: int, steps: list[str | int]
) -> None:
    spool = Spool(tmp_path_factory.mktemp("spool"), max_records=bound)
    model: list[int] = []
    sequence = 0
    for step in steps:
        if step == "append":
            sequence += 1
            spool.append(sequence, b"r")
            model = [*model, sequence][-bound:]
        else:
            assert isinstance(step, int)
            taken = [s for s, _ in spool.oldest(step)]
            assert taken == model[:step]
            spool.acknowledge(taken)
            model = model[len(taken) :]
        assert [s for s, _ in spool.oldest(bound)] == model
        assert len(spool) <= bound
