"""AC-037: under runsc the pids limit must leave room for gVisor's own threads.

The rule lives in the policy catalogue; its numbers come from what verify and probe measured
on gVisor (bench/verify.py --gvisor-pids), so its tests live beside them.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentcell.errors import AdmissionError
from agentcell.policy import admit, preset
from agentcell.policy.rules import (
    GVISOR_MIN_CELL_PROCESSES,
    GVISOR_MIN_PIDS,
    GVISOR_PIDS_PER_PROCESS,
    GVISOR_SANDBOX_PIDS,
    rule,
)
from agentcell.policy.view import view_of_spec
from agentcell.spec.load import SpecDocument, load_text

SPEC = """\
apiVersion: agentcell/v1
kind: Agent
metadata: {{name: sandbox, tenant: t1}}
spec:
  image: agentcell/sandbox:0.1.0
  resources: {{pids: {pids}}}
  network: none
  security: {{runtime: {runtime}}}
"""


def doc(pids: int, runtime: str = "runsc") -> SpecDocument:
    (loaded,) = load_text(SPEC.format(pids=pids, runtime=runtime), file="cell.yaml")
    return loaded


def test_the_minimum_leaves_room_for_the_cells_own_processes() -> None:
    room = (GVISOR_MIN_PIDS - GVISOR_SANDBOX_PIDS) // GVISOR_PIDS_PER_PROCESS
    assert room == GVISOR_MIN_CELL_PROCESSES
    # The spec's default (128) is not enough under gVisor: it died from ~6 processes here.
    assert GVISOR_MIN_PIDS > 128


def test_the_default_pids_under_runsc_is_refused_with_the_numbers() -> None:
    with pytest.raises(AdmissionError) as caught:
        admit(doc(128), preset("restricted"))
    text = caught.value.diagnostics()
    assert "AC-037" in text
    assert "pids: 128 under runsc leaves ~7 for the cell's own processes" in text
    assert f"gVisor's own threads take ~{GVISOR_SANDBOX_PIDS}" in text
    assert f"set pids >= {GVISOR_MIN_PIDS}" in text


@given(st.integers(min_value=1, max_value=4096))
def test_runsc_limits_below_the_minimum_are_refused_and_the_rest_pass(pids: int) -> None:
    findings = rule("AC-037").findings(view_of_spec(doc(pids)))
    assert bool(findings) == (pids < GVISOR_MIN_PIDS)
    for finding in findings:
        assert finding.severity == "error"
        assert f"pids: {pids} under runsc" in finding.message
        assert str(finding.where).startswith("cell.yaml:")


@given(st.integers(min_value=1, max_value=GVISOR_MIN_PIDS), st.sampled_from(["runc", "crun"]))
def test_other_runtimes_keep_any_limit(pids: int, runtime: str) -> None:
    assert rule("AC-037").findings(view_of_spec(doc(pids, runtime))) == []
