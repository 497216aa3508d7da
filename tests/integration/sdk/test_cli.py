"""``agentcell sandbox ...`` and ``agentcell run`` as users type them (the console script,
through the thin path), against the real service."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import EXAMPLES

from .conftest import TEMPLATE, TENANT, Service

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


def test_up_ps_and_down_through_the_service_print_what_the_full_commands_print(
    service: Service, tmp_path: Path
) -> None:
    spec = tmp_path / "cell.yaml"
    spec.write_text(
        (EXAMPLES / "sandbox.yaml").read_text().replace("tenant: demo", f"tenant: {TENANT}")
    )
    full = {"AGENTCELL_NO_DAEMON": "1"}

    def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
        merged = {**os.environ, **service.env(), **(env or {})}
        merged.pop("AGENTCELL_DAEMON_URL", None)
        merged.pop("AGENTCELL_TOKEN", None)
        return subprocess.run([str(AGENTCELL), *args], env=merged, capture_output=True, timeout=120)

    key = f"{TENANT}/sandbox"
    try:
        thin_up = run("up", "-f", str(spec))
        assert thin_up.returncode == 0, thin_up.stderr
        assert thin_up.stdout.startswith(b"created   " + key.encode())
        thin_ps = run("ps", "--tenant", TENANT)
        full_ps = run("ps", "--tenant", TENANT, env=full)
        assert thin_ps.returncode == full_ps.returncode == 0
        assert thin_ps.stdout == full_ps.stdout
        assert key.split("/")[1].encode() in thin_ps.stdout
        thin_json = json.loads(run("ps", "--tenant", TENANT, "-o", "json").stdout)
        full_json = json.loads(run("ps", "--tenant", TENANT, "-o", "json", env=full).stdout)
        assert thin_json == full_json

        thin_down = run("down", key)
        assert (thin_down.returncode, thin_down.stdout) == (0, f"removed   {key}\n".encode())
        full_up = run("up", "-f", str(spec), env=full)
        assert (full_up.returncode, full_up.stdout) == (0, thin_up.stdout)
        full_down = run("down", key, env=full)
        assert full_down.stdout == thin_down.stdout
        assert run("down", key).stdout == f"absent    {key}\n".encode()
    finally:
        run("down", key, env=full)


def test_a_bad_spec_through_the_service_fails_as_without_it(
    service: Service, tmp_path: Path
) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text(
        "apiVersion: agentcell/v1\nkind: Agent\n"
        f"metadata: {{name: bad, tenant: {TENANT}}}\n"
        "spec: {image: x, resources: {cpus: lots}}\n"
    )
    env = {**os.environ, **service.env()}
    env.pop("AGENTCELL_DAEMON_URL", None)
    thin = subprocess.run([str(AGENTCELL), "up", "-f", str(spec)], env=env, capture_output=True)
    full = subprocess.run(
        [str(AGENTCELL), "up", "-f", str(spec)],
        env={**env, "AGENTCELL_NO_DAEMON": "1"},
        capture_output=True,
    )
    assert thin.returncode == full.returncode == 2
    assert thin.stdout == full.stdout == b""
    assert b"bad.yaml" in thin.stderr
    assert b"spec.resources.cpus" in thin.stderr
