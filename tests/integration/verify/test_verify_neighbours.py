"""`verify` looks across cells: a hand-made container that shares a cell's uid, and a
monitoring cell whose host /proc reaches a sibling, are mismatches; default cells pass."""

from __future__ import annotations

import json
import secrets
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from agentcell.policy import admit
from agentcell.runtime.docker.backend import DockerBackend
from agentcell.spec.load import load_text
from tests.conftest import REPO, Created
from tests.policies import AdmitAll

AGENTCELL = REPO / ".venv" / "bin" / "agentcell"


def spec(tenant: str, name: str, image: str, extra: str = "") -> str:
    return (
        "apiVersion: agentcell/v1\nkind: Agent\n"
        f"metadata: {{name: {name}, tenant: {tenant}}}\n"
        f"spec:\n  image: {image}\n{extra}"
    )


@pytest.fixture
def tenant(backend: DockerBackend) -> Iterator[str]:
    name = "vn" + secrets.token_hex(3)
    try:
        yield name
    finally:
        for cell in backend.cells():
            if cell.tenant.startswith(name):
                backend.down(cell.tenant, cell.agent)


def up(backend: DockerBackend, text: str) -> str:
    (doc,) = load_text(text, file="neighbours.yaml")
    cell = backend.up(admit(doc, AdmitAll())).cell
    return cell.key


def verify(*argv: str) -> tuple[int, dict[str, dict[str, Any]]]:
    result = subprocess.run(
        [str(AGENTCELL), "verify", *argv, "--json"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode in (0, 1), result.stderr
    (report,) = json.loads(result.stdout)["items"]
    return result.returncode, {check["id"]: check for check in report["checks"]}


def test_default_cells_of_two_tenants_verify_apart(backend: DockerBackend, tenant: str) -> None:
    monitor = up(
        backend,
        spec(tenant + "a", "monitor", "agentcell/monitor-agent:0.1.0",
             "  host:\n    mounts: [{source: /proc, target: /host/proc}]\n"),
    )  # fmt: skip
    up(backend, spec(tenant + "b", "box", "agentcell/sandbox:0.1.0"))
    code, checks = verify(monitor)
    assert code == 0
    assert checks["cross.uid"]["status"] == "verified"
    assert checks["cross.host-proc"]["status"] == "verified"
    assert "host /proc at /host/proc" in checks["cross.host-proc"]["observed"]
    assert checks["cross.mounts"]["status"] == "configured"


def test_a_hand_made_container_sharing_the_uid_is_a_mismatch_on_both_sides(
    backend: DockerBackend, docker_client: Any, created: Created, tenant: str, tmp_path: Any
) -> None:
    text = spec(tenant, "box", "agentcell/sandbox:0.1.0")
    key = up(backend, text)
    container = backend.container(key)
    user = container.attrs["Config"]["User"]
    name = created.container(f"handmade-{secrets.token_hex(3)}")
    docker_client.containers.run(
        "agentcell/sandbox:0.1.0",
        ["python3", "-c", "import time; time.sleep(120)"],
        name=name,
        user=user,
        detach=True,
        network_mode="none",
    )
    code, checks = verify(key)
    assert code == 1
    assert checks["cross.uid"]["status"] == "mismatch"
    assert name in checks["cross.uid"]["observed"]
    path = tmp_path / "box.yaml"
    path.write_text(text)
    _, foreign = verify(name, "--spec", str(path))
    assert foreign["cross.uid"]["status"] == "mismatch"
    assert f"cell {tenant}/box" in foreign["cross.uid"]["observed"]


def test_a_monitor_whose_host_proc_reaches_a_sibling_is_a_mismatch(
    backend: DockerBackend, tenant: str
) -> None:
    sibling = backend.container(up(backend, spec(tenant, "box", "agentcell/sandbox:0.1.0")))
    uid = sibling.attrs["Config"]["User"].partition(":")[0]
    monitor = up(
        backend,
        spec(tenant, "monitor", "agentcell/monitor-agent:0.1.0",
             f"  security: {{user: {uid}}}\n"
             "  host:\n    mounts: [{source: /proc, target: /host/proc}]\n"),
    )  # fmt: skip
    code, checks = verify(monitor)
    assert code == 1
    assert checks["cross.host-proc"]["status"] == "mismatch"
    assert f"cell {tenant}/box" in checks["cross.host-proc"]["observed"]
