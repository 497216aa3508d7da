"""`probe` tries every path into a neighbour cell of another tenant: /proc/<pid>/root, cwd,
environ, mem, fd, signals in a host PID namespace, and its join token. Blocked on default
cells, also on monitoring cells with a host /proc or the host's PID namespace; NOT BLOCKED
when the neighbour shares the cell's uid (the weakened pair)."""

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
from agentcell.verify.probe import NEIGHBOUR_PROBES
from tests.conftest import REPO
from tests.policies import AdmitAll

AGENTCELL = REPO / ".venv" / "bin" / "agentcell"
HOST_VIEWS = {
    "sandbox": "",
    "host-proc": "  host:\n    mounts: [{source: /proc, target: /host/proc}]\n",
    "host-pid": "  host:\n    pid: true\n",
}


@pytest.fixture
def tenant(backend: DockerBackend) -> Iterator[str]:
    name = "pn" + secrets.token_hex(3)
    try:
        yield name
    finally:
        for cell in backend.cells(tenant=name):
            backend.down(cell.tenant, cell.agent)


def launch(backend: DockerBackend, tenant: str, extra: str) -> str:
    (doc,) = load_text(
        "apiVersion: agentcell/v1\nkind: Agent\n"
        f"metadata: {{name: prober, tenant: {tenant}}}\n"
        f"spec:\n  image: agentcell/monitor-agent:0.1.0\n{extra}",
        file="prober.yaml",
    )
    return backend.up(admit(doc, AdmitAll())).cell.key


def probe(key: str, *extra: str) -> tuple[int, dict[str, dict[str, Any]]]:
    argv = [str(AGENTCELL), "probe", key, "--json"]
    for probe_id in NEIGHBOUR_PROBES:
        argv += ["--only", probe_id]
    result = subprocess.run([*argv, *extra], capture_output=True, text=True, timeout=180)
    assert result.returncode in (0, 1), result.stderr
    report = json.loads(result.stdout)
    return result.returncode, {item["id"]: item for item in report["items"]}


@pytest.mark.parametrize("view", sorted(HOST_VIEWS))
def test_every_path_into_a_neighbour_is_blocked(
    backend: DockerBackend, tenant: str, view: str
) -> None:
    code, results = probe(launch(backend, tenant, HOST_VIEWS[view]))
    assert code == 0, results
    assert set(results) == set(NEIGHBOUR_PROBES)
    assert {item["status"] for item in results.values()} == {"blocked"}, results
    if view == "host-proc":
        assert "another uid" in results["neighbour-environ"]["mechanism"]
    if view == "host-pid":
        assert "another uid" in results["neighbour-signal"]["mechanism"]


@pytest.mark.parametrize("view", ["host-proc", "host-pid"])
def test_a_neighbour_sharing_the_uid_is_not_blocked(
    backend: DockerBackend, tenant: str, view: str
) -> None:
    key = launch(backend, tenant, HOST_VIEWS[view])
    uid = backend.container(key).attrs["Config"]["User"].partition(":")[0]
    code, results = probe(key, "--neighbour-uid", uid)
    assert code == 1
    expected = {"neighbour-root", "neighbour-environ", "neighbour-mem", "neighbour-fd",
                "neighbour-identity", "neighbour-cwd"}  # fmt: skip
    if view == "host-pid":
        expected.add("neighbour-signal")
    assert {i for i, item in results.items() if item["status"] == "NOT BLOCKED"} == expected
