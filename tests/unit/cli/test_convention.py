"""One CLI convention: every command spells the shared options the same way, and every
command that prints data or acts can answer in the one JSON envelope."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from agentcell.cli.main import app

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
AGENTCELL = Path(sys.executable).with_name("agentcell")
# Commands that print neither data nor a result: a stream, a server, a document of its own.
WITHOUT_OUTPUT = {"logs", "server", "schema", "daemon serve"}
runner = CliRunner()


def commands() -> dict[str, Any]:
    """Every leaf command by its path, e.g. ``image push``."""
    found: dict[str, Any] = {}

    def walk(group: Any, prefix: str) -> None:
        for name, command in group.commands.items():
            path = f"{prefix}{name}"
            if hasattr(command, "commands"):
                walk(command, path + " ")
            else:
                found[path] = command

    walk(typer.main.get_command(app), "")
    return found


def options(command: Any) -> dict[str, list[str]]:
    """Parameter name -> its option strings."""
    return {
        param.name: [*param.opts, *param.secondary_opts]
        for param in command.params
        if param.param_type_name == "option"
    }


ALL = commands()


@pytest.mark.parametrize("path", sorted(ALL))
def test_shared_options_have_one_spelling(path: str) -> None:
    opts = options(ALL[path])
    by_flag = {flag: name for name, flags in opts.items() for flag in flags}
    if path not in WITHOUT_OUTPUT:
        assert opts.get("output", [])[:2] == ["-o", "--output"], path
        assert "--json" in by_flag, path  # the older spelling still works
    for flag, meaning in {"-o": "output", "-p": "policy", "-F": "follow"}.items():
        if flag in by_flag:
            assert by_flag[flag] == meaning, (path, flag)
    if "-f" in by_flag:
        assert opts[by_flag["-f"]][:2] == ["-f", "--file"], path
    if "policy" in opts:
        assert opts["policy"] == ["-p", "--policy"], path
    assert "--format" not in by_flag, path
    assert "--spec" not in by_flag or by_flag["--spec"] == by_flag.get("-f"), path


@pytest.mark.parametrize("path", ["up", "render", "lint", "down"])
def test_spec_inputs_are_dash_f(path: str) -> None:
    assert options(ALL[path])["files"][:2] == ["-f", "--file"]


@pytest.mark.parametrize("path", ["verify", "probe"])
def test_proof_commands_take_the_spec_with_dash_f(path: str) -> None:
    assert options(ALL[path])["spec"][:2] == ["-f", "--file"]


def test_every_command_help_shows_the_same_names() -> None:
    for path in sorted(set(ALL) - WITHOUT_OUTPUT):
        result = runner.invoke(app, [*path.split(), "--help"], terminal_width=200)
        assert result.exit_code == 0, (path, result.output)
        assert "--output" in result.output and "-o" in result.output, path
        assert "--json" not in result.output, path  # the alias is hidden


def test_version() -> None:
    from agentcell import __version__

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"agentcell {__version__}"


def test_shell_completion_is_offered() -> None:
    result = runner.invoke(app, ["--help"], terminal_width=200)
    assert "--show-completion" in result.output


@pytest.mark.parametrize(
    ("argv", "kind"),
    [
        (["render", "-f", str(EXAMPLES / "sandbox.yaml"), "-o", "json"], "RenderResult"),
        (["render", "-f", str(EXAMPLES / "sandbox.yaml"), "--json"], "RenderResult"),
        (["rules", "-o", "json"], "RuleList"),
        (["lint", "-f", str(EXAMPLES / "sandbox.yaml"), "-o", "json"], "LintReport"),
    ],
)
def test_json_answers_share_one_envelope(argv: list[str], kind: str) -> None:
    result = runner.invoke(app, argv)
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["api_version"] == "agentcell/v1"
    assert document["kind"] == kind
    assert isinstance(document["items"], list) and document["items"]
    for item in document["items"]:
        assert all(key == key.lower() and " " not in key for key in item)


def test_render_json_says_what_the_text_says() -> None:
    result = runner.invoke(app, ["render", "-f", str(EXAMPLES / "sandbox.yaml"), "-o", "json"])
    (item,) = json.loads(result.stdout)["items"]
    assert item["tenant"] == "demo" and item["agent"] == "sandbox"
    assert isinstance(item["line"], int) and item["uid_allocated_by_up"] is True
    assert item["command"].startswith("docker run -d --name agentcell_demo_sandbox")


def test_lint_takes_paths_as_a_shorthand_for_dash_f() -> None:
    spec = str(EXAMPLES / "sandbox.yaml")
    by_flag = runner.invoke(app, ["lint", "-f", spec, "-o", "json"])
    by_path = runner.invoke(app, ["lint", spec, "-o", "json"])
    assert by_flag.exit_code == by_path.exit_code == 0
    assert json.loads(by_flag.stdout) == json.loads(by_path.stdout)


def test_dash_f_dash_reads_the_spec_from_stdin() -> None:
    text = (EXAMPLES / "sandbox.yaml").read_text()
    for command in (["render"], ["lint"]):
        result = subprocess.run(
            [str(AGENTCELL), *command, "-f", "-", "-o", "json"],
            input=text,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        (item,) = json.loads(result.stdout)["items"]
        assert item["tenant"] == "demo"


def test_a_bad_spec_on_stdin_is_located() -> None:
    result = subprocess.run(
        [str(AGENTCELL), "render", "-f", "-"],
        input="apiVersion: agentcell/v1\nkind: Agent\nmetadata: {name: x, tenant: t}\n"
        "spec: {image: a/b:1, resources: {memroy: 1g}}\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "<stdin>:4: spec.resources.memroy" in result.stderr
    assert "Traceback" not in result.stderr
