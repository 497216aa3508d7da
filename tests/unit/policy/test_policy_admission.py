"""Admission: the presets, composition that fails closed, written exceptions, and the type that
only policy can make."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from agentcell.errors import AdmissionError, SpecError
from agentcell.policy import AdmittedSpec, AllOf, AnyOf, Finding, admit
from agentcell.policy.admission import except_findings
from agentcell.policy.presets import PRESETS, TenantPolicy, preset
from agentcell.policy.view import CellView, view_of_spec
from agentcell.spec.load import SpecDocument, load_text

HOSTILE = """\
apiVersion: agentcell/v1
kind: Agent
metadata:
  name: hostile
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
      - {source: /var/run/docker.sock, target: /var/run/docker.sock, read_only: false}
"""
HOSTILE_RULES = {"AC-003", "AC-005", "AC-006", "AC-007", "AC-008", "AC-016", "AC-017", "AC-022"}

MONITOR_MOUNTS: dict[str, Any] = {
    "spec": {
        "host": {
            "pid": True,
            "docker_socket": True,
            "mounts": [
                {"source": "/proc", "target": "/host/proc"},
                {"source": "/sys", "target": "/host/sys"},
            ],
        }
    }
}


@dataclass(frozen=True)
class Fixed:
    """A policy that reports the same findings for every cell."""

    findings: tuple[Finding, ...]
    name: str = "fixed"

    def evaluate(self, doc: SpecDocument) -> Sequence[Finding]:
        return self.findings

    def judge(self, view: CellView) -> Sequence[Finding]:
        return self.findings


def finding(rule: str, severity: Any = "error") -> Finding:
    from agentcell.errors import Location

    return Finding(rule=rule, severity=severity, message="m", where=Location(), fix="f")


def test_hostile_spec_is_refused_with_every_reason_and_fix() -> None:
    (doc,) = load_text(HOSTILE, file="hostile.yaml")
    with pytest.raises(AdmissionError) as refused:
        admit(doc, preset("restricted"))
    text = refused.value.diagnostics()
    for rule in HOSTILE_RULES:
        assert rule in text
    assert text.count("fix:") >= len(HOSTILE_RULES)
    assert "hostile.yaml:" in text
    assert refused.value.exit_code == 2


def test_monitoring_agent_preset_turns_host_reads_into_warnings(
    spec_doc: Callable[..., SpecDocument],
) -> None:
    doc = spec_doc(MONITOR_MOUNTS)
    with pytest.raises(AdmissionError):
        admit(doc, preset("restricted"))
    admitted = admit(doc, preset("monitoring-agent"))
    severities = {f.rule: f.severity for f in admitted.findings}
    assert severities["AC-017"] == severities["AC-023"] == severities["AC-025"] == "warning"
    assert "high risk" in next(f.message for f in admitted.findings if f.rule == "AC-023")


def test_monitoring_agent_still_refuses_writing_to_the_host(
    spec_doc: Callable[..., SpecDocument],
) -> None:
    doc = spec_doc(
        {
            "spec": {
                "host": {
                    "mounts": [
                        {"source": "/sys", "target": "/host/sys", "read_only": False},
                        {"source": "/var/run/docker.sock", "target": "/d.sock", "read_only": False},
                    ]
                }
            }
        }
    )
    with pytest.raises(AdmissionError) as refused:
        admit(doc, preset("monitoring-agent"))
    assert "AC-024" in refused.value.what and "AC-022" in refused.value.what


def test_written_exception_admits_and_is_kept(spec_doc: Callable[..., SpecDocument]) -> None:
    doc = spec_doc(
        {
            "spec": {
                "host": {"mounts": [{"source": "/proc", "target": "/host/proc"}]},
                "exceptions": [
                    {"rule": "AC-025", "reason": "reads host process table for metrics"}
                ],
            }
        }
    )
    admitted = admit(doc, preset("restricted"))
    assert admitted.exceptions == {"AC-025": "reads host process table for metrics"}
    (excepted,) = [f for f in admitted.findings if f.rule == "AC-025"]
    assert not excepted.blocking
    assert "excepted: reads host process table" in excepted.describe()


def test_exception_for_another_rule_does_not_admit(spec_doc: Callable[..., SpecDocument]) -> None:
    doc = spec_doc(
        {
            "spec": {
                "security": {"user": 0},
                "exceptions": [{"rule": "AC-025", "reason": "this is for a different rule"}],
            }
        }
    )
    with pytest.raises(AdmissionError, match="AC-005"):
        admit(doc, preset("restricted"))


@pytest.mark.parametrize("combinator", [AllOf, AnyOf])
def test_empty_combination_fails_closed(
    combinator: Callable[..., Any], spec_doc: Callable[..., SpecDocument]
) -> None:
    with pytest.raises(AdmissionError, match="AC-000"):
        admit(spec_doc(), combinator(()))


@pytest.mark.parametrize("preset_name", PRESETS)
@pytest.mark.parametrize(
    "source", ["/run/agentcell", "/run/agentcell/identity/other/agent", "/var/lib/agentcell", "/"]
)
def test_agentcell_state_mount_cannot_be_excepted(
    source: str, preset_name: str, spec_doc: Callable[..., SpecDocument]
) -> None:
    doc = spec_doc(
        {
            "spec": {
                "host": {"mounts": [{"source": source, "target": "/host/run"}]},
                "exceptions": [
                    {"rule": "AC-040", "reason": "reads other cells' tokens for metrics"},
                    {"rule": "AC-025", "reason": "reads host state for metrics"},
                    {"rule": "AC-027", "reason": "reads host state for metrics"},
                ],
            }
        }
    )
    with pytest.raises(AdmissionError, match="AC-040"):
        admit(doc, preset(preset_name))


def test_empty_combination_cannot_be_excepted(spec_doc: Callable[..., SpecDocument]) -> None:
    doc = spec_doc({"spec": {"exceptions": [{"rule": "AC-000", "reason": "trying to sneak in"}]}})
    with pytest.raises(AdmissionError, match="AC-000"):
        admit(doc, AllOf(()))


def test_all_of_reports_every_policy(spec_doc: Callable[..., SpecDocument]) -> None:
    policy = AllOf((Fixed((finding("AC-005"),)), Fixed((finding("AC-007", "warning"),))))
    assert [f.rule for f in policy.evaluate(spec_doc())] == ["AC-005", "AC-007"]


def test_any_of_admits_when_one_policy_admits(spec_doc: Callable[..., SpecDocument]) -> None:
    doc = spec_doc(MONITOR_MOUNTS)
    admitted = admit(doc, AnyOf((preset("restricted"), preset("monitoring-agent"))))
    assert not any(f.blocking for f in admitted.findings)


def test_any_of_refuses_with_all_findings_when_none_admits(
    spec_doc: Callable[..., SpecDocument],
) -> None:
    policy = AnyOf((Fixed((finding("AC-005"),)), Fixed((finding("AC-007"),))))
    with pytest.raises(AdmissionError) as refused:
        admit(spec_doc(), policy)
    assert "AC-005" in refused.value.what and "AC-007" in refused.value.what


def test_any_of_counts_written_exceptions(spec_doc: Callable[..., SpecDocument]) -> None:
    doc = spec_doc({"spec": {"exceptions": [{"rule": "AC-005", "reason": "root in a gVisor box"}]}})
    policy = AnyOf((Fixed((finding("AC-005"),)), Fixed((finding("AC-007"),))))
    assert [f.rule for f in admit(doc, policy).findings] == ["AC-005"]


def test_admitted_spec_comes_only_from_admit(spec_doc: Callable[..., SpecDocument]) -> None:
    with pytest.raises(TypeError, match="admit"):
        AdmittedSpec(spec_doc(), (), "forged", _key=object())


def test_unknown_preset_is_a_spec_error() -> None:
    with pytest.raises(SpecError, match="restricted, monitoring-agent"):
        preset("permissive")


def test_presets_are_listed_and_named() -> None:
    assert PRESETS == ("restricted", "monitoring-agent")
    assert [preset(name).name for name in PRESETS] == list(PRESETS)


def test_tenant_requirement_is_carried_by_the_preset(
    spec_doc: Callable[..., SpecDocument],
) -> None:
    policy = preset("monitoring-agent", tenant=TenantPolicy(required_runtime="runsc"))
    with pytest.raises(AdmissionError, match="AC-035"):
        admit(spec_doc(), policy)
    runsc = {"security": {"runtime": "runsc"}, "resources": {"pids": 256}}  # AC-037's headroom
    assert admit(spec_doc({"spec": runsc}), policy)


def test_except_findings_leaves_unrelated_findings_alone() -> None:
    marked = except_findings([finding("AC-005"), finding("AC-007")], {"AC-007": "why not"})
    assert [f.excepted for f in marked] == [None, "why not"]


def test_a_strict_tenant_refuses_runc_relaxed_seccomp_and_host_access(
    spec_doc: Callable[..., SpecDocument],
) -> None:
    strict = preset("monitoring-agent", tenant=TenantPolicy.for_isolation("strict"))
    doc = spec_doc(
        {
            "spec": {
                "security": {"seccomp": "default"},
                "host": {"pid": True, "mounts": [{"source": "/srv/logs", "target": "/logs"}]},
                "exceptions": [
                    {"rule": "AC-041", "reason": "trying to lower the tenant's level"},
                    {"rule": "AC-035", "reason": "trying to lower the tenant's level"},
                ],
            }
        }
    )
    with pytest.raises(AdmissionError) as refused:
        admit(doc, strict)
    text = refused.value.what
    assert "requires runsc" in text
    assert "seccomp is default, but its tenant's isolation level is strict" in text
    assert "mounts host path /srv/logs" in text
    assert "shares the host's PID namespace" in text
    runsc = {"security": {"runtime": "runsc"}, "resources": {"pids": 256}}
    assert admit(spec_doc({"spec": runsc}), strict)


def test_a_standard_tenant_does_not_apply_the_strict_rule(
    spec_doc: Callable[..., SpecDocument],
) -> None:
    standard = preset("restricted", tenant=TenantPolicy.for_isolation("standard"))
    (verdict,) = [v for v in standard.verdicts(view_of_spec(spec_doc())) if v.rule.id == "AC-041"]
    assert not verdict.applicable
