"""The uid allocation lock is one per host: the engine's uids are, whatever AGENTCELL_HOME
each agentcell process runs with (two services in two homes once handed one uid to cells of
two tenants)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

from agentcell.runtime.uids import allocation_lock

OTHER = """\
from agentcell.runtime.uids import allocation_lock
with allocation_lock():
    print("got it")
"""


def test_a_process_with_another_home_waits_for_the_lock(tmp_path: Path) -> None:
    env = {**os.environ, "AGENTCELL_HOME": str(tmp_path / "other-home")}
    with allocation_lock():
        other = subprocess.Popen(
            [sys.executable, "-c", OTHER], env=env, stdout=subprocess.PIPE, text=True
        )
        with contextlib.suppress(subprocess.TimeoutExpired):
            other.wait(timeout=2)  # it stays blocked for as long as this process holds it
        assert other.poll() is None
    out, _ = other.communicate(timeout=30)
    assert (other.returncode, out) == (0, "got it\n")
