"""A cell's escape sequences reach the operator's terminal only as visible text."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time
from pathlib import Path

from agentcell.policy import admit
from agentcell.runtime.docker.backend import DockerBackend
from agentcell.spec.load import load_paths
from tests.conftest import Created
from tests.policies import AdmitAll

AGENTCELL = Path(sys.executable).with_name("agentcell")
# Sets the window title, clears the screen, turns text red with an 8-bit CSI, overwrites a
# line with \r, and ends with a verdict the operator must not be fooled by.
HOSTILE = (
    r"import sys, time;"
    r"sys.stdout.write('\x1b]0;owned\x07\x1b[2J\x1b[H\x9b31mred\x9b0m\n');"
    r"sys.stdout.write('ERROR\rall good\n[bold]markup[/bold]\n');"
    r"sys.stdout.flush(); time.sleep(600)"
)


def test_logs_show_a_cells_escape_sequences_instead_of_sending_them(
    created: Created, tmp_path: Path
) -> None:
    tenant = "term" + secrets.token_hex(3)
    spec = tmp_path / "cell.yaml"
    spec.write_text(
        "apiVersion: agentcell/v1\nkind: Agent\n"
        f"metadata: {{name: hostile, tenant: {tenant}}}\n"
        "spec:\n  image: agentcell/sandbox:0.1.0\n"
        f"  command: [python3, -c, {json.dumps(HOSTILE)}]\n"
    )
    (doc,) = load_paths([spec])
    backend = DockerBackend.connect()
    try:
        result = backend.up(admit(doc, AdmitAll()))
    finally:
        backend.close()
    created.container(result.cell.container)

    deadline = time.monotonic() + 30
    while True:
        shown = subprocess.run(
            [str(AGENTCELL), "logs", f"{tenant}/hostile"], capture_output=True, timeout=60
        )
        assert shown.returncode == 0, shown.stderr
        if b"markup" in shown.stdout or time.monotonic() > deadline:
            break
        time.sleep(0.5)

    out = shown.stdout
    assert b"\x1b" not in out
    assert b"\x9b" not in out and "\x9b".encode() not in out
    assert b"\r" not in out and b"\x07" not in out
    assert b"\\x1b]0;owned\\x07\\x1b[2J" in out
    assert b"\\x9b31mred" in out
    assert b"ERROR\\x0dall good\n" in out
    assert b"[bold]markup[/bold]\n" in out
