"""AC-043: a tenant whose egress allow-list opens everything is a warning, in
``tenant_findings`` and in ``lint`` (text and JSON), located at the allow entry."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agentcell.cli.report import lint_json
from agentcell.policy.lint import lint
from agentcell.policy.presets import preset
from agentcell.policy.rules import rule
from agentcell.policy.tenants import tenant_findings
from agentcell.spec.tenant import TenantDocument

OPEN = """\
apiVersion: agentcell/v1
kind: Tenant
metadata:
  name: wide
spec:
  network:
    egress:
      allow:
        - name: "*.pypi.org"
        - cidr: {open}
          ports: [443, 80]
"""


def document(allow: list[dict[str, object]]) -> TenantDocument:
    return TenantDocument.model_validate(
        {"apiVersion": "agentcell/v1", "kind": "Tenant", "metadata": {"name": "t1"},
         "spec": {"network": {"egress": {"allow": allow}}}}
    )  # fmt: skip


@pytest.mark.parametrize("entry", [{"cidr": "0.0.0.0/0"}, {"cidr": "::/0"}, {"name": "*"}])
def test_egress_open_to_everything_is_a_warning(entry: dict[str, object]) -> None:
    (finding,) = tenant_findings(document([{"name": "pypi.org"}, entry]))
    assert (finding.rule, finding.severity) == ("AC-043", "warning")
    assert "egress open to everything" in finding.message
    assert finding.where.field == "spec.network.egress.allow[1]"
    assert rule("AC-043").title


@pytest.mark.parametrize(
    "allow", [[], [{"name": "*.pypi.org"}], [{"cidr": "10.0.0.0/8"}], [{"cidr": "0.0.0.0/1"}]]
)
def test_narrower_lists_are_clean(allow: list[dict[str, object]]) -> None:
    assert tenant_findings(document(allow)) == []


def test_lint_reports_it_at_the_line(tmp_path: Path) -> None:
    spec = tmp_path / "tenant.yaml"
    spec.write_text(OPEN.format(open="0.0.0.0/0"))
    report = lint([spec], preset("restricted"))
    (finding,) = report.findings
    assert finding.rule == "AC-043"
    assert finding.where.file == str(spec) and finding.where.line == 10
    assert report.exit_code("warning") == 1 and report.exit_code("error") == 0
    items = json.loads(lint_json(report))["items"]
    assert [(i["kind"], i["name"], len(i["findings"])) for i in items] == [("Tenant", "wide", 1)]
