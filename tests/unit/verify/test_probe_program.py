"""The programs sent into cells, run on this machine the way a cell runs them: on stdin."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import resources
from pathlib import Path
from typing import Any

from agentcell.runtime.docker.proof import _BOOTSTRAP, _sandbox_view
from agentcell.verify.probe import probe_program

SNAPSHOT = resources.files("agentcell") / "assets" / "probe" / "snapshot.py"


def run(*argv: str, source: bytes | None = None) -> tuple[int, list[dict[str, Any]]]:
    source = source or probe_program()
    done = subprocess.run(
        [sys.executable, "-c", _BOOTSTRAP, str(len(source)), *argv],
        input=source,
        capture_output=True,
        timeout=60,
        check=False,
    )
    return done.returncode, [json.loads(line) for line in done.stdout.splitlines()]


def test_snapshot_output_is_what_verify_parses() -> None:
    code, (record,) = run(source=SNAPSHOT.read_bytes())
    assert code == 0
    view = _sandbox_view(record)
    assert view.mountinfo
    assert view.no_new_privs is not None
    assert set(view.present) >= {"/proc/kcore", "/proc/keys"}


def test_battery_reports_what_nothing_stopped(tmp_path: Path) -> None:
    # Run on the host, outside any cell: nothing stops these, and the program must say so.
    config = {
        "tmpfs": [{"path": str(tmp_path / "not-a-mount"), "size": 1 << 20}],
        "only": ["tmpfs-fill", "default-route"],
        "some_future_key": True,
    }
    code, records = run("battery", json.dumps(config))
    assert code == 0
    results = {record["id"]: record for record in records if "id" in record}
    assert set(results) == {"tmpfs-fill", "default-route"}
    assert results["tmpfs-fill"]["status"] == "NOT BLOCKED"
    assert "nothing is mounted there" in results["tmpfs-fill"]["detail"]
    assert records[-1] == {"done": True}


def test_an_unknown_mode_is_refused() -> None:
    code, records = run("dance", "{}")
    assert (code, records) == (2, [])
