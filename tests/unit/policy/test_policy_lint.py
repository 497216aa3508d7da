"""``lint`` in-process and through its command: exit codes, files and directories, formats."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from agentcell.cli.policy_cmds import audit_command, lint_command, rules_command
from agentcell.policy.lint import lint
from agentcell.policy.presets import preset

BROKEN = "apiVersion: agentcell/v1\nkind: Agent\nmetadata: {name: Bad_Name}\nspec: {image: a/b:1}\n"


@pytest.fixture
def texts(spec_yaml: Callable[..., str]) -> dict[str, str]:
    return {
        "clean": spec_yaml(),
        "warns": spec_yaml({"spec": {"image": "agentcell/sandbox:0.1.0"}}),
        "errs": spec_yaml({"metadata": {"name": "rooty"}, "spec": {"security": {"user": 0}}}),
    }


def app() -> typer.Typer:
    cli = typer.Typer()
    cli.command("lint")(lint_command)
    cli.command("rules")(rules_command)
    cli.command("audit")(audit_command)
    return cli


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app(), list(args))
    return result.exit_code, result.output


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_clean_spec_exits_0(tmp_path: Path, texts: dict[str, str]) -> None:
    code, output = run("lint", str(write(tmp_path, "a.yaml", texts["clean"])))
    assert code == 0, output
    assert "clean" in output


def test_error_finding_exits_1(tmp_path: Path, texts: dict[str, str]) -> None:
    code, output = run("lint", str(write(tmp_path, "a.yaml", texts["errs"])))
    assert code == 1
    assert "AC-005" in output and "a.yaml:" in output


def test_warning_exits_0_unless_fail_on_warning(tmp_path: Path, texts: dict[str, str]) -> None:
    path = str(write(tmp_path, "a.yaml", texts["warns"]))
    assert run("lint", path)[0] == 0
    assert run("lint", "--fail-on", "warning", path)[0] == 1
    assert run("lint", "--fail-on", "never", str(write(tmp_path, "b.yaml", texts["errs"])))[0] == 0


def test_invalid_input_exits_2_and_still_judges_the_rest(
    tmp_path: Path, texts: dict[str, str]
) -> None:
    write(tmp_path, "specs/good.yaml", texts["errs"])
    write(tmp_path, "specs/nested/bad.yml", BROKEN)
    code, output = run("lint", "-o", "json", str(tmp_path / "specs"))
    assert code == 2
    report = json.loads(output)
    assert report["kind"] == "LintReport"
    assert [d["name"] for d in report["items"]] == ["rooty"]
    (problem,) = report["problems"]
    assert problem["where"]["file"].endswith("bad.yml") and problem["where"]["line"] == 3


def test_missing_path_and_empty_directory_exit_2(tmp_path: Path) -> None:
    assert run("lint", str(tmp_path / "nope.yaml"))[0] == 2
    (tmp_path / "empty").mkdir()
    assert run("lint", str(tmp_path / "empty"))[0] == 2


def test_directory_is_walked_for_yaml_and_yml(tmp_path: Path, texts: dict[str, str]) -> None:
    write(tmp_path, "one.yaml", texts["clean"])
    write(tmp_path, "deep/two.yml", texts["errs"])
    write(tmp_path, "notes.txt", "not a spec")
    report = lint([tmp_path], preset("restricted"))
    assert sorted(r.doc.name for r in report.results) == ["probe", "rooty"]
    assert report.exit_code() == 1


def test_excepted_error_does_not_fail(tmp_path: Path, spec_yaml: Callable[..., str]) -> None:
    text = spec_yaml(
        {
            "spec": {
                "security": {"user": 0},
                "exceptions": [{"rule": "AC-005", "reason": "runs under gVisor as root by design"}],
            }
        }
    )
    code, output = run("lint", str(write(tmp_path, "a.yaml", text)))
    assert code == 0
    assert "excepted: runs under gVisor" in output


def test_policy_option_selects_the_preset(tmp_path: Path, spec_yaml: Callable[..., str]) -> None:
    text = spec_yaml({"spec": {"host": {"mounts": [{"source": "/proc", "target": "/p"}]}}})
    path = str(write(tmp_path, "a.yaml", text))
    assert run("lint", path)[0] == 1
    assert run("lint", "--policy", "monitoring-agent", path)[0] == 0


def test_unknown_preset_is_refused(tmp_path: Path, texts: dict[str, str]) -> None:
    result = CliRunner().invoke(
        app(), ["lint", "-p", "nope", str(write(tmp_path, "a", texts["clean"]))]
    )
    assert result.exit_code != 0


def test_markup_in_paths_prints_as_written(tmp_path: Path, texts: dict[str, str]) -> None:
    code, output = run("lint", str(write(tmp_path, "[red]x[/red].yaml", texts["errs"])))
    assert code == 1
    assert "[red]x[/red].yaml" in output


def test_rules_lists_every_rule_and_explains_one() -> None:
    code, output = run("rules")
    assert code == 0 and "AC-001" in output and "AC-036" in output
    code, output = run("rules", "ac-023")
    assert code == 0 and "read-only" in output.lower() and "monitoring-agent: warning" in output
    assert run("rules", "AC-999")[0] == 2


def test_rules_json_has_severity_per_preset() -> None:
    _code, output = run("rules", "-o", "json")
    rules = {rule["id"]: rule for rule in json.loads(output)["items"]}
    assert rules["AC-025"]["severity"] == {"restricted": "error", "monitoring-agent": "warning"}
    assert rules["AC-001"]["cis"] == ["5.5"]


@pytest.mark.parametrize("fmt", ["text", "json", "sarif"])
def test_every_format_renders(tmp_path: Path, fmt: str, texts: dict[str, str]) -> None:
    code, output = run("lint", "-o", fmt, str(write(tmp_path, "a.yaml", texts["errs"])))
    assert code == 1
    if fmt != "text":
        json.loads(output)
