"""The reference agent in a real cell, reporting over mTLS through the mounted socket.

Covers the whole path: spec with ``identity: true`` -> admission -> join token and read-only
mounts (prepare_cell) -> DockerBackend.up -> enrolment with a key born in the cell's tmpfs ->
reports -> renewal -> `agentcell metrics`; then the faults: the control plane killed with
SIGKILL for more than ten seconds, the cell restarted without a new token, the cell replaced
through `up`, and the certificate revoked under a running agent.
"""

from __future__ import annotations

import contextlib
import signal
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import docker
import docker.errors
import pytest
from docker.models.containers import Container

from agentcell.cli.identity_cmds import metrics
from agentcell.controlplane.api import RevokeRequest
from agentcell.launch import prepare_cell
from agentcell.policy import admit, preset
from agentcell.policy.admission import AdmittedSpec
from agentcell.runtime.docker.backend import DockerBackend
from agentcell.runtime.uids import cell_ids
from agentcell.spec.load import load_paths

from .cp_harness import ControlPlane

pytestmark = pytest.mark.integration

TENANT = "itest"
SPEC = """\
apiVersion: agentcell/v1
kind: Agent
metadata:
  name: {name}
  tenant: {tenant}
spec:
  image: {image}
  identity: true
  env:
    AGENTCELL_INTERVAL: "0.5"
  resources:
    cpus: 0.25
    memory: 64m
    pids: 32
    tmpfs:
      - path: /tmp
        size: 16m
  host:
    mounts:
      - source: /proc
        target: /host/proc
      - source: /sys
        target: /host/sys
"""


def _eventually(condition: Callable[[], bool], *, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds:g}s waiting for {what}")
        time.sleep(0.25)


class Cells:
    """Launches agent cells the way `agentcell up` does, and removes them afterwards."""

    def __init__(self, client: docker.DockerClient, image: str, spec_dir: Path) -> None:
        self.backend = DockerBackend(client)
        self.client = client
        self.image = image
        self.spec_dir = spec_dir
        self.names: list[str] = []
        self.ids: dict[str, tuple[int, int]] = {}

    def admitted(self, name: str) -> AdmittedSpec:
        path = self.spec_dir / f"{name}.yaml"
        path.write_text(SPEC.format(name=name, tenant=TENANT, image=self.image))
        (doc,) = load_paths([path])
        return admit(doc, preset("monitoring-agent"))

    def up(self, plane: ControlPlane, name: str) -> str:
        """uid allocation + prepare_cell + backend.up: what `up` does for an identity spec."""
        admitted = self.admitted(name)
        key = admitted.doc.document.key
        with self.backend.uid_allocation([admitted]) as uids:
            ids = cell_ids(admitted.doc.document.spec.security, uids.get(key))
            identity = prepare_cell(admitted, plane.admin, uid=ids)
            result = self.backend.up(
                admitted, extra_mounts=identity.mounts, extra_env=identity.env, uid=uids.get(key)
            )
        self.ids[result.cell.container] = ids
        if result.cell.container not in self.names:
            self.names.append(result.cell.container)
        return result.cell.container

    def container(self, name: str) -> Container:
        return self.client.containers.get(name)

    def logs(self, name: str) -> str:
        output: bytes = self.container(name).logs()
        return output.decode()

    def remove_all(self) -> None:
        for name in self.names:
            with contextlib.suppress(docker.errors.NotFound):
                self.client.containers.get(name).remove(force=True)


@pytest.fixture
def cells(docker_client: docker.DockerClient, agent_image: str, tmp_path: Path) -> Iterator[Cells]:
    launched = Cells(docker_client, agent_image, tmp_path)
    try:
        yield launched
    finally:
        launched.remove_all()


def _sequences(plane: ControlPlane, agent: str) -> list[int]:
    store = plane.store()
    try:
        sequences: list[int] = store.stored_sequences(TENANT, agent)
        return sequences
    finally:
        store.close()


def _name() -> str:
    return f"agent-{uuid.uuid4().hex[:8]}"


def test_agent_in_a_cell_enrols_reports_renews_and_is_shown(
    make_control_plane: Callable[[Mapping[str, str]], ControlPlane],
    cells: Cells,
    capsys: pytest.CaptureFixture[str],
) -> None:
    plane = make_control_plane({"AGENTCELL_CERT_TTL": "30s"})
    name = _name()
    container = cells.up(plane, name)

    _eventually(lambda: len(_sequences(plane, name)) >= 4, seconds=30, what="reports")
    assert "enrolled as spiffe://test.local/tenant/itest/agent/" in cells.logs(container)

    # The cell is the default hardened one, and nothing of the key crossed to the host.
    attrs = cells.container(container).attrs
    host_config = attrs["HostConfig"]
    assert host_config["NetworkMode"] == "none"
    assert host_config["ReadonlyRootfs"] is True
    uid, gid = cells.ids[container]
    assert attrs["Config"]["User"] == f"{uid}:{gid}"
    assert all(not mount["RW"] for mount in attrs["Mounts"])
    # The spent join token was removed from the cell's directory at enrolment.
    identity_dir = plane.paths.cell_identity_dir(TENANT, name)
    assert sorted(p.name for p in identity_dir.iterdir()) == ["ca.pem"]
    # The image has no shell or coreutils: ask its python.
    key_mode = cells.container(container).exec_run(
        [
            "python3",
            "-c",
            "import os; s = os.stat('/tmp/agentcell/key.pem'); "
            "print(format(s.st_mode & 0o777, 'o'), s.st_uid)",
        ]
    )
    assert isinstance(key_mode.output, bytes)
    assert key_mode.output.decode().split() == ["600", str(uid)]

    # With 30 s certificates the agent renews at about 20 s, over mTLS, with a new key.
    def renewed() -> bool:
        kinds = [c.kind for c in plane.admin.certificates(tenant=TENANT, agent=name).certificates]
        return "renew" in kinds

    assert not renewed(), "renewed long before two thirds of the lifetime"
    _eventually(renewed, seconds=40, what="a renewed certificate")
    assert "renewed certificate" in cells.logs(container)
    # ...and keeps reporting with the new certificate.
    count = len(_sequences(plane, name))
    _eventually(lambda: len(_sequences(plane, name)) >= count + 2, seconds=10, what="reports")

    # `agentcell metrics` shows the host's load as reported by the cell.
    metrics(
        name="load.1m",
        state_dir=plane.paths.state_dir,
        url=plane.server.url,
        tenant=TENANT,
        agent=name,
        points=30,
        output="text",
        json_alias=False,
    )
    shown = capsys.readouterr().out
    assert f"{TENANT}/{name}" in shown
    assert any(bar in shown for bar in "▁▂▃▄▅▆▇█")

    # Revoked under a running agent: it says so in one line and stops.
    plane.admin.revoke(RevokeRequest(tenant=TENANT, agent=name, reason="test"))
    _eventually(
        lambda: "no longer accepts this agent's certificate" in cells.logs(container),
        seconds=20,
        what="the agent to report its revoked certificate",
    )


def test_reports_survive_a_killed_control_plane(
    make_control_plane: Callable[[Mapping[str, str]], ControlPlane], cells: Cells
) -> None:
    plane = make_control_plane({})
    name = _name()
    container = cells.up(plane, name)
    _eventually(lambda: len(_sequences(plane, name)) >= 5, seconds=30, what="reports")

    plane.server.kill()  # SIGKILL: no shutdown, no flush
    before = len(_sequences(plane, name))
    time.sleep(11)
    _eventually(
        lambda: "control plane unreachable" in cells.logs(container),
        seconds=5,
        what="the agent to notice the outage",
    )
    plane.server.start()
    # 11 s at 0.5 s per report: at least 20 reports were buffered and must now arrive.
    _eventually(
        lambda: len(_sequences(plane, name)) >= before + 25,
        seconds=30,
        what="the buffered reports",
    )
    cells.container(container).stop(timeout=10)  # SIGTERM: the agent sends what is left

    stored = _sequences(plane, name)
    assert stored == list(range(1, len(stored) + 1)), "a sequence is missing or stored twice"
    assert "control plane reachable again" in cells.logs(container)


def test_restarted_cell_needs_up_and_then_re_enrols_cleanly(
    make_control_plane: Callable[[Mapping[str, str]], ControlPlane], cells: Cells
) -> None:
    plane = make_control_plane({})
    name = _name()
    container = cells.up(plane, name)
    _eventually(lambda: len(_sequences(plane, name)) >= 3, seconds=30, what="reports")
    first_serials = [c.serial for c in plane.admin.certificates(agent=name).certificates]

    # A restart by the engine alone gets a fresh tmpfs and no token (the control plane removed
    # the spent one at enrolment): the agent cannot enrol and says so.
    cells.container(container).kill(signal=int(signal.SIGKILL))
    cells.container(container).start()
    _eventually(
        lambda: (
            "no join token at /run/agentcell/identity/token: it was already used"
            in cells.logs(container)
        ),
        seconds=20,
        what="the agent to find no join token",
    )
    # Exit 3, as for a refused token (the engine may be restarting it: the last exit counts).
    _eventually(
        lambda: cells.container(container).attrs["State"]["ExitCode"] == 3,
        seconds=20,
        what="the agent to exit 3",
    )

    # `up` issues a new token into the mounted directory; the cell enrols again.
    cells.backend.down(TENANT, name)
    cells.up(plane, name)
    _eventually(
        lambda: len(plane.admin.certificates(agent=name).certificates) == 2,
        seconds=30,
        what="a second enrolment",
    )
    certificates = {c.serial: c for c in plane.admin.certificates(agent=name).certificates}
    (old,) = first_serials
    assert certificates[old].revoke_reason == "superseded by a new enrolment"
    count = len(_sequences(plane, name))
    _eventually(lambda: len(_sequences(plane, name)) >= count + 3, seconds=30, what="new reports")
    stored = _sequences(plane, name)
    assert stored == list(range(1, len(stored) + 1)), "re-enrolment reused or skipped a sequence"
