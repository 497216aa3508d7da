"""Sandbox templates: loaded with file:line:field errors like every spec, turned into the
Agent documents the launch path takes, with TTLs and pool minimums checked with the numbers."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentcell.daemon.contract import TimeoutRefused
from agentcell.daemon.records import JsonSandboxRecords, SandboxRecord
from agentcell.daemon.sandboxes import _ttl, new_sandbox_id, pool_overruns
from agentcell.errors import SpecError
from agentcell.policy.admission import admit
from agentcell.policy.presets import preset
from agentcell.spec.template import load_template_text, load_templates
from agentcell.spec.tenant import TenantDocument

GOOD = """\
apiVersion: agentcell/v1
kind: SandboxTemplate
metadata:
  name: python
  tenant: acme
spec:
  cell:
    image: agentcell/sandbox:0.1.0
    resources:
      cpus: 1
      memory: 512m
      tmpfs:
        - {path: /tmp, size: 128m}
  pool: {min: 2, max: 8}
  ttl: {default: 5m, max: 1h}
"""


def test_a_template_loads_with_its_pool_and_ttls() -> None:
    (template,) = load_template_text(GOOD, file="python.yaml")
    spec = template.document.spec
    assert (template.tenant, template.name) == ("acme", "python")
    assert (spec.pool.min, spec.pool.max) == (2, 8)
    assert (spec.ttl.default_s, spec.ttl.max_s) == (300.0, 3600.0)


def test_defaults_are_a_five_minute_ttl_and_no_warm_cells() -> None:
    (template,) = load_template_text(
        "apiVersion: agentcell/v1\nkind: SandboxTemplate\nmetadata: {name: t}\n"
        "spec:\n  cell: {image: x}\n"
    )
    assert template.document.spec.ttl.default_s == 300.0
    assert template.document.spec.pool.min == 0
    assert template.tenant == "default"


@pytest.mark.parametrize(
    ("change", "line", "field", "words"),
    [
        ("      cpus: 1\n", 10, "spec.cell.resources.cpus", "out of range"),
        ("  pool: {min: 2, max: 8}\n", 14, "spec.pool", "pool.min (9) is above pool.max (8)"),
        ("  ttl: {default: 5m, max: 1h}\n", 15, "spec.ttl", "above ttl.max"),
        ("    image: agentcell/sandbox:0.1.0\n", 8, "spec.cell.imag", "unknown field 'imag'"),
    ],
)
def test_errors_name_the_file_line_and_field(
    change: str, line: int, field: str, words: str
) -> None:
    replacement = {
        "      cpus: 1\n": "      cpus: -1\n",
        "  pool: {min: 2, max: 8}\n": "  pool: {min: 9, max: 8}\n",
        "  ttl: {default: 5m, max: 1h}\n": "  ttl: {default: 2h, max: 1h}\n",
        "    image: agentcell/sandbox:0.1.0\n": "    image: x\n    imag: y\n",
    }[change]
    text = GOOD.replace(change, replacement)
    with pytest.raises(SpecError) as refused:
        load_template_text(text, file="templates/python.yaml")
    error = refused.value
    assert error.where is not None
    assert (error.where.file, error.where.line, error.where.field) == (
        "templates/python.yaml",
        line if field != "spec.cell.imag" else 9,
        field,
    )
    assert words in error.what


def test_a_templates_directory_holds_only_templates(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(GOOD)
    (tmp_path / "b.yaml").write_text(
        "apiVersion: agentcell/v1\nkind: Agent\nmetadata: {name: a}\nspec: {image: x}\n"
    )
    (tmp_path / "c.yaml").write_text(GOOD)
    with pytest.raises(SpecError) as refused:
        load_templates([tmp_path])
    text = str(refused.value)
    assert "b.yaml:2: kind" in text and "SandboxTemplate documents only" in text
    assert "template acme/python is defined twice" in text


def test_an_empty_templates_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"no \*\.yaml"):
        load_templates([tmp_path])


def test_the_cell_is_an_agent_named_after_the_sandbox_and_located_in_the_template() -> None:
    (template,) = load_template_text(GOOD, file="python.yaml")
    sandbox_id = new_sandbox_id()
    doc = template.agent(sandbox_id)
    assert doc.document.key == ("acme", sandbox_id)
    assert doc.document.spec.resources.memory == 512 * 1024**2
    where = doc.where("spec", "resources", "memory")
    assert (where.file, where.line) == ("python.yaml", 11)
    assert admit(doc, preset("restricted")).doc is doc


def test_ttl_within_the_maximum_and_refused_over_it_with_both_numbers() -> None:
    (template,) = load_template_text(GOOD, file="python.yaml")
    assert _ttl(template, None) == 300.0
    assert _ttl(template, 1800) == 1800.0
    with pytest.raises(TimeoutRefused) as refused:
        _ttl(template, 7200)
    assert "7200" in refused.value.what and "3600" in refused.value.what
    with pytest.raises(TimeoutRefused):
        _ttl(template, 0)


def test_pool_minimums_over_the_quota_give_the_numbers() -> None:
    (template,) = load_template_text(GOOD, file="python.yaml")
    admitted = admit(template.agent(new_sandbox_id()), preset("restricted"))
    tenant = TenantDocument.model_validate(
        {
            "apiVersion": "agentcell/v1",
            "kind": "Tenant",
            "metadata": {"name": "acme"},
            "spec": {"quota": {"cpus": 1.5, "memory": "4g", "cells": 10}},
        }
    )
    over = pool_overruns({"acme": [admitted, admitted]}, {"acme": tenant})
    assert over == ["tenant acme: cpus 0 in use + 2 asked > 1.5 quota"]
    assert pool_overruns({"acme": [admitted]}, {"acme": tenant}) == []
    assert pool_overruns({"acme": [admitted] * 50}, {}) == []  # no document, no quota


def test_records_survive_a_reload(tmp_path: Path) -> None:
    store = JsonSandboxRecords(tmp_path / "records")
    record = SandboxRecord(
        id=new_sandbox_id(), tenant="acme", template="python", state="running",
        cell="agentcell_acme_x", warm=True, created_at=1.0, expires_at=301.0, acquire_ms=2.5,
    )  # fmt: skip
    store.save(record)
    store.save(record.ended("expired", 400.0))
    assert store.load() == [record.ended("expired", 400.0)]
    store.delete(record.id)
    assert store.load() == []


def test_lint_judges_a_templates_cell_and_up_refuses_the_document(tmp_path: Path) -> None:
    from agentcell.policy.lint import lint
    from agentcell.spec.load import load_paths

    path = tmp_path / "python.yaml"
    image = "    image: agentcell/sandbox:0.1.0\n"
    path.write_text(GOOD.replace(image, image + "    host: {pid: true}\n"))
    report = lint([path], preset("restricted"))
    assert not report.problems
    (result,) = report.results
    (finding,) = [f for f in result.findings if f.severity == "error"]
    assert finding.where is not None and finding.where.line == 9
    with pytest.raises(SpecError, match="takes Agent documents only"):
        load_paths([path])
