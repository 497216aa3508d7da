"""``agentcell sandbox ...`` and ``agentcell run`` as users type them (the console script,
through the thin path), against the real service."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import TEMPLATE, Service

pytestmark = pytest.mark.integration
AGENTCELL = Path(sys.executable).with_name("agentcell")


def agentcell(
    service: Service, *args: str, token: str | None = None, stdin: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, **service.env(token or service.tenant_token)}
    env.pop("AGENTCELL_DAEMON_URL", None)
    return subprocess.run(
        [str(AGENTCELL), *args], env=env, capture_output=True, input=stdin, timeout=120
    )


def test_create_exec_cp_timeout_ls_and_kill(service: Service, tmp_path: Path) -> None:
    made = agentcell(service, "sandbox", "create", TEMPLATE)
    assert made.returncode == 0, made.stderr
    sandbox_id = made.stdout.decode().strip()
    service.made.append(sandbox_id)
    assert sandbox_id.startswith("sbx-")

    ran = agentcell(
        service, "sandbox", "exec", sandbox_id, "--", "sh", "-c", "echo out; echo err >&2; exit 3"
    )
    assert (ran.returncode, ran.stdout, ran.stderr) == (3, b"out\n", b"err\n")

    local = tmp_path / "in.txt"
    local.write_bytes(b"round trip\n")
    assert (
        agentcell(
            service, "sandbox", "cp", str(local), f"{sandbox_id}:/workspace/in.txt"
        ).returncode
        == 0
    )
    back = tmp_path / "out.txt"
    copied = agentcell(service, "sandbox", "cp", f"{sandbox_id}:/workspace/in.txt", str(back))
    assert copied.returncode == 0, copied.stderr
    assert back.read_bytes() == b"round trip\n"

    assert agentcell(service, "sandbox", "timeout", sandbox_id, "200").returncode == 0
    listed = agentcell(service, "sandbox", "ls", "-o", "json")
    assert listed.returncode == 0, listed.stderr
    document = json.loads(listed.stdout)
    assert document["kind"] == "SandboxList"
    assert sandbox_id in {item["id"] for item in document["items"]}

    killed = agentcell(service, "sandbox", "kill", sandbox_id)
    assert killed.returncode == 0, killed.stderr
    again = agentcell(service, "sandbox", "exec", sandbox_id, "--", "true")
    assert again.returncode == 2
    assert again.stderr.startswith(b"error: ")


def test_run_is_one_command_in_a_fresh_sandbox_with_its_exit_code(service: Service) -> None:
    ran = agentcell(
        service, "run", TEMPLATE, "--", "python3", "-c", "import sys; print('hi'); sys.exit(7)"
    )
    assert (ran.returncode, ran.stdout) == (7, b"hi\n")
    timed = agentcell(service, "run", TEMPLATE, "--timeout", "1", "--", "sleep", "60")
    assert timed.returncode == 124
    assert b"timed out" in timed.stderr


def test_an_unknown_sandbox_and_a_missing_service_are_clear_errors(
    service: Service, tmp_path: Path
) -> None:
    unknown = agentcell(service, "sandbox", "exec", "sbx-0000000000000000", "--", "true")
    assert unknown.returncode == 2
    assert b"error: " in unknown.stderr
    env = {**os.environ, "AGENTCELL_HOME": str(tmp_path)}
    env.pop("AGENTCELL_DAEMON_URL", None)
    absent = subprocess.run([str(AGENTCELL), "sandbox", "ls"], env=env, capture_output=True)
    assert absent.returncode == 3
    assert b"agentcell daemon serve" in absent.stderr
