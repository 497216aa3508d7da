"""Audit scoring and the CIS view, over translated containers (no engine needed)."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from agentcell.policy.audit import (
    CIS_CONTROLS,
    CIS_DEVIATIONS,
    CIS_NOT_JUDGED,
    ObservedContainer,
    audit,
)
from agentcell.policy.presets import preset
from agentcell.policy.rules import CATALOGUE

RESTRICTED = preset("restricted")
Observe = Callable[..., ObservedContainer]


def test_secure_container_scores_100(observed: Observe) -> None:
    (result,) = audit([observed()], RESTRICTED).containers
    assert result.score == 100.0
    assert result.findings == ()


def test_score_is_the_share_of_applicable_rules_passed(observed: Observe) -> None:
    (result,) = audit([observed({"HostConfig": {"ReadonlyRootfs": False}})], RESTRICTED).containers
    assert result.failed_rules == ("AC-007",)
    assert result.score == pytest.approx(100 * (result.applicable - 1) / result.applicable)


def test_info_findings_do_not_lower_the_score(observed: Observe) -> None:
    (result,) = audit([observed({"AppArmorProfile": ""})], RESTRICTED).containers
    assert [f.severity for f in result.findings] == ["info"]
    assert result.score == 100.0


def test_excepted_findings_do_not_lower_the_score(observed: Observe) -> None:
    labels = {
        "org.agentcell.managed": "true",
        "org.agentcell.tenant": "t1",
        "org.agentcell.exceptions": "AC-007",
        "org.agentcell.spec": json.dumps(
            {
                "spec": {
                    "exceptions": [
                        {"rule": "AC-007", "reason": "writes its cache into the image on purpose"}
                    ]
                }
            }
        ),
    }
    container = observed({"Config": {"Labels": labels}, "HostConfig": {"ReadonlyRootfs": False}})
    (result,) = audit([container], RESTRICTED).containers
    (finding,) = result.findings
    assert finding.excepted == "writes its cache into the image on purpose"
    assert result.score == 100.0


def test_overall_is_the_mean_of_container_scores(observed: Observe) -> None:
    report = audit(
        [observed({"Name": "/a"}), observed({"Name": "/b", "HostConfig": {"Privileged": True}})],
        RESTRICTED,
    )
    scores = [c.score for c in report.containers]
    assert report.overall == pytest.approx(sum(scores) / 2)
    assert [c.container.view.name for c in report.containers] == ["a", "b"]


def test_empty_host_has_no_score_and_judges_no_control() -> None:
    report = audit([], RESTRICTED)
    assert report.overall is None
    assert {row.status for row in report.cis()} == {"NOTE"}


def test_cis_statuses(observed: Observe) -> None:
    report = audit(
        [
            observed({"Name": "/priv", "HostConfig": {"Privileged": True}}),
            observed({"Name": "/plain", "AppArmorProfile": ""}),
        ],
        RESTRICTED,
    )
    rows = {row.id: row for row in report.cis()}
    assert rows["5.5"].status == "WARN"
    assert [o.container for o in rows["5.5"].offenders] == ["priv"]
    assert rows["5.2"].status == "INFO"
    assert rows["5.29"].status == "PASS"
    assert rows["5.25"].status == rows["5.3"].status == "NOTE"


def test_excepted_offender_still_warns_in_the_cis_view(observed: Observe) -> None:
    labels = {"org.agentcell.managed": "true", "org.agentcell.exceptions": "AC-007"}
    container = observed({"Config": {"Labels": labels}, "HostConfig": {"ReadonlyRootfs": False}})
    row = next(r for r in audit([container], RESTRICTED).cis() if r.id == "5.13")
    assert row.status == "WARN"
    assert row.offenders[0].finding.excepted is not None


def test_every_cis_control_is_judged_or_explained() -> None:
    ids = [control for control, _ in CIS_CONTROLS]
    assert len(ids) == len(set(ids))
    assert {f"5.{n}" for n in range(1, 33)} <= set(ids)
    judged = {control for rule in CATALOGUE for control in rule.cis}
    assert judged <= set(ids)
    assert set(ids) - judged == set(CIS_NOT_JUDGED)
    assert set(CIS_DEVIATIONS) <= judged
    assert "cgroup-parent" in CIS_NOT_JUDGED["5.25"] and "SELinux" in CIS_NOT_JUDGED["5.3"]
