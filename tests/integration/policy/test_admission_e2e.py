"""Admission end to end on the real engine: ``agentcell up`` refuses a hostile spec with every
reason and creates nothing, and every cell made from the examples audits clean by the policy
that admitted it, with the same findings as its spec."""

from __future__ import annotations

import dataclasses
import secrets
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import docker
import pytest

from agentcell.errors import AdmissionError
from agentcell.policy import AdmittedSpec, Finding, admit
from agentcell.policy.audit import audit
from agentcell.policy.presets import RulePolicy, preset
from agentcell.runtime.docker.backend import DockerBackend
from agentcell.runtime.docker.facts import observe_host
from agentcell.spec.load import SpecDocument, load_paths
from agentcell.spec.model import HostMount, PolicyException
from tests.conftest import EXAMPLES, Created

pytestmark = pytest.mark.integration

AGENTCELL = Path(sys.executable).with_name("agentcell")
HOSTILE_RULES = ("AC-003", "AC-005", "AC-006", "AC-007", "AC-008", "AC-016", "AC-017", "AC-022")


@pytest.fixture
def tenant() -> str:
    return "pol" + secrets.token_hex(3)


def hostile(tenant: str) -> str:
    return f"""\
apiVersion: agentcell/v1
kind: Agent
metadata:
  name: hostile
  tenant: {tenant}
spec:
  image: agentcell/sandbox:0.1.0
  security:
    user: 0
    capabilities: [SYS_ADMIN]
    read_only_rootfs: false
    no_new_privileges: false
    seccomp: unconfined
  host:
    pid: true
    network: true
    mounts:
      - source: /var/run/docker.sock
        target: /var/run/docker.sock
        read_only: false
"""


def up(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(AGENTCELL), "up", "-f", str(path)], capture_output=True, text=True, timeout=120
    )


def left_behind(client: docker.DockerClient, tenant: str) -> list[str]:
    containers = client.containers.list(
        all=True, filters={"label": f"org.agentcell.tenant={tenant}"}
    )
    networks = client.networks.list(filters={"label": f"org.agentcell.tenant={tenant}"})
    return [c.name or "?" for c in containers] + [n.name or "?" for n in networks]


def test_up_refuses_a_hostile_spec_with_every_reason(
    docker_client: docker.DockerClient, tenant: str, tmp_path: Path
) -> None:
    path = tmp_path / "hostile.yaml"
    path.write_text(hostile(tenant))
    result = up(path)
    assert result.returncode == 2, result.stdout + result.stderr
    for rule in HOSTILE_RULES:
        assert rule in result.stderr, rule
    assert result.stderr.count("fix:") >= len(HOSTILE_RULES)
    assert f"{path}:" in result.stderr
    assert left_behind(docker_client, tenant) == []


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        ("    privileged: true\n", "unknown field 'privileged'"),
        ("    pids: 0\n", "out of range"),
    ],
)
def test_up_refuses_what_a_spec_cannot_say(
    docker_client: docker.DockerClient, tenant: str, tmp_path: Path, extra: str, says: str
) -> None:
    section = "  security:\n" if "privileged" in extra else "  resources:\n"
    path = tmp_path / "agent.yaml"
    path.write_text(
        "apiVersion: agentcell/v1\nkind: Agent\n"
        f"metadata:\n  name: sneaky\n  tenant: {tenant}\n"
        f"spec:\n  image: agentcell/sandbox:0.1.0\n{section}{extra}"
    )
    result = up(path)
    assert result.returncode == 2
    assert says in result.stderr and f"{path}:" in result.stderr
    assert left_behind(docker_client, tenant) == []


def admitted_by_first(doc: SpecDocument) -> tuple[AdmittedSpec, RulePolicy]:
    """Admit by restricted, or else by monitoring-agent (the monitoring example needs it)."""
    refusal: AdmissionError | None = None
    for name in ("restricted", "monitoring-agent"):
        policy = preset(name)
        try:
            return admit(doc, policy), policy
        except AdmissionError as exc:
            refusal = exc
    assert refusal is not None
    raise refusal


def in_tenant(doc: SpecDocument, tenant: str) -> SpecDocument:
    metadata = doc.document.metadata.model_copy(update={"tenant": tenant})
    return dataclasses.replace(doc, document=doc.document.model_copy(update={"metadata": metadata}))


@pytest.fixture
def backend(docker_client: docker.DockerClient) -> DockerBackend:
    return DockerBackend(docker_client)


@pytest.mark.parametrize("example", sorted(p.name for p in EXAMPLES.glob("*.yaml")))
def test_cells_from_the_examples_audit_clean(
    docker_client: docker.DockerClient,
    backend: DockerBackend,
    created: Created,
    tenant: str,
    example: str,
) -> None:
    for original in load_paths([EXAMPLES / example]):
        doc = in_tenant(original, tenant)
        admitted, policy = admitted_by_first(doc)
        try:
            cell = backend.up(admitted).cell
            created.container(cell.container)
            (container,) = [
                c for c in audit(observe_host(docker_client), policy).containers
                if c.container.view.name == cell.container
            ]  # fmt: skip
        finally:
            backend.down(doc.tenant, doc.name)

        blocking = [f.describe() for f in container.findings if f.blocking]
        assert blocking == [], "\n".join(blocking)
        assert container.container.managed and container.container.view.tenant == tenant
        # The spec and the container it became are judged alike. AC-029 aside: the backend
        # may run a tag by the digest it resolved (image trust), which a spec cannot know.
        from_spec = judged_alike(admitted.findings)
        from_engine = judged_alike(container.findings)
        assert from_engine == from_spec


def judged_alike(findings: Sequence[Finding]) -> set[tuple[str, str, str | None]]:
    return {
        (f.rule, f.severity, f.excepted)
        for f in findings
        if f.severity != "info" and f.rule != "AC-029"
    }


def test_exceptions_written_in_the_spec_show_in_the_audit(
    docker_client: docker.DockerClient, backend: DockerBackend, created: Created, tenant: str
) -> None:
    (original,) = load_paths([EXAMPLES / "sandbox.yaml"])
    spec = original.document.spec
    host = spec.host.model_copy(
        update={"mounts": (HostMount(source="/proc", target="/host/proc"),)}
    )
    reason = "reads the host's process table to report on it"
    exceptions = (PolicyException(rule="AC-025", reason=reason),)
    document = original.document.model_copy(
        update={"spec": spec.model_copy(update={"host": host, "exceptions": exceptions})}
    )
    doc = in_tenant(dataclasses.replace(original, document=document), tenant)
    admitted = admit(doc, preset("restricted"))
    assert admitted.exceptions == {"AC-025": reason}
    try:
        cell = backend.up(admitted).cell
        created.container(cell.container)
        report = audit(observe_host(docker_client), preset("restricted"))
    finally:
        backend.down(doc.tenant, doc.name)
    (container,) = [c for c in report.containers if c.container.view.name == cell.container]
    (finding,) = [f for f in container.findings if f.rule == "AC-025"]
    assert finding.excepted == reason
    assert "AC-025" not in container.failed_rules
