"""``net log``: the decisions of a tenant, as text (cell-chosen text escaped) or one JSON
envelope, with the denied-only filter; ``net serve`` spells the shared options."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from typer.testing import CliRunner

from agentcell.cli.net_service_cmds import net_log, net_serve
from agentcell.netsvc.decisions import DecisionLog, decision_log_path

app = typer.Typer()
app.command("log")(net_log)
app.command("serve")(net_serve)
runner = CliRunner()


def logged(state: Path) -> None:
    log = DecisionLog(decision_log_path("acme", directory=state))
    log.record(tenant="acme", cell="web", kind="dns", name="pypi.org", qtype="A",
               decision="allow", reason="allowed by pypi.org:443")  # fmt: skip
    log.record(tenant="acme", cell="web", kind="dns", name="evil\x1b]0;owned\x07.test",
               qtype="TXT", decision="deny", reason="not on the allow-list")  # fmt: skip
    log.record(tenant="acme", cell="web", kind="connect", name="x.test", address=None,
               port=443, decision="deny", reason="x.test:443 is not on the allow-list")  # fmt: skip
    log.close()


def test_text_escapes_what_cells_chose(tmp_path: Path) -> None:
    logged(tmp_path)
    result = runner.invoke(app, ["log", "acme", "--state-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 3 and "ALLOW" in lines[0] and "pypi.org" in lines[0]
    assert "\x1b" not in result.stdout and "\\x1b]0;owned\\x07" in lines[1]
    assert "x.test:443" in lines[2]


def test_json_and_denied_only(tmp_path: Path) -> None:
    logged(tmp_path)
    result = runner.invoke(
        app, ["log", "acme", "--denied", "-o", "json", "--state-dir", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["kind"] == "NetDecisionList" and document["tenant"] == "acme"
    assert [(i["kind"], i["decision"]) for i in document["items"]] == [
        ("dns", "deny"), ("connect", "deny"),
    ]  # fmt: skip


def test_a_bad_tenant_name_is_refused(tmp_path: Path) -> None:
    result = runner.invoke(app, ["log", "../etc", "--state-dir", str(tmp_path)])
    assert result.exit_code != 0


def test_shared_options() -> None:
    for command in ("log", "serve"):
        result = runner.invoke(app, [command, "--help"], terminal_width=200)
        assert "--output" in result.output and "-o" in result.output
    result = runner.invoke(app, ["log", "--help"], terminal_width=200)
    assert "-F" in result.output and "--follow" in result.output and "--denied" in result.output
