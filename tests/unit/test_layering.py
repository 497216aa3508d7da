"""The layers drawn in ARCHITECTURE.md are the layers of the code: one truth.

The table's "may import" column is read as the backticked names in it; every ``import`` in
``src/agentcell`` (also inside functions and under ``TYPE_CHECKING``) must fall in its own
layer, a layer its row lists, or the package root. The checker is run on a fixture tree with
a deliberate upward import, so a test that cannot fail would show.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO

SOURCE = REPO / "src" / "agentcell"
_NAME = re.compile(r"`([a-z_][a-z_.]*)`")


@dataclass(frozen=True)
class Rules:
    """Layer -> what it may import (layer names or dotted module prefixes); None for all."""

    allowed: Mapping[str, frozenset[str] | None]
    third_party: Mapping[str, frozenset[str]]


def read_rules(text: str) -> Rules:
    allowed: dict[str, frozenset[str] | None] = {}
    third_party: dict[str, frozenset[str]] = {}
    section = None
    for line in text.splitlines():
        if line.startswith("| layer |"):
            section = "layers"
            continue
        if line.startswith("| third-party package |"):
            section = "third-party"
            continue
        if not line.startswith("|"):
            section = None if not line.strip() else section
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        names = [_NAME.findall(cell) for cell in cells]
        if section is None or not names or len(names[0]) != 1:
            continue
        (name,) = names[0]
        if section == "layers" and len(cells) == 3:
            allowed[name] = None if "every layer" in cells[2] else frozenset(names[2])
        elif section == "third-party" and len(cells) == 2:
            third_party[name] = frozenset(names[1])
    return Rules(allowed=allowed, third_party=third_party)


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def imports(path: Path) -> Iterator[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module


def violations(root: Path, rules: Rules) -> list[str]:
    found = []
    package = root.name
    for path in sorted(root.rglob("*.py")):
        module = module_name(path, root)
        own = layer_of(module)
        allowed = rules.allowed.get(own, frozenset())
        for line, imported in imports(path):
            where = f"{path.relative_to(root.parent)}:{line}"
            top = imported.split(".")[0]
            if top in rules.third_party and own not in rules.third_party[top]:
                found.append(f"{where}: layer {own} imports {imported}")
            if top != package or imported == package:
                continue
            target = layer_of(imported)
            if target == own or allowed is None:
                continue
            short = imported.removeprefix(package + ".")
            if target in allowed or any(
                short == name or short.startswith(name + ".") for name in allowed
            ):
                continue
            found.append(f"{where}: layer {own} imports {imported}, not in its row")
    return found


RULES = read_rules((REPO / "ARCHITECTURE.md").read_text(encoding="utf-8"))


def test_every_package_has_a_row_and_every_row_a_package() -> None:
    packages = {
        entry.stem if entry.is_file() else entry.name
        for entry in SOURCE.iterdir()
        if ((entry.is_dir() and (entry / "__init__.py").exists()) or entry.name == "assets")
        or (entry.suffix == ".py" and entry.name != "__init__.py")
    }
    assert packages == set(RULES.allowed)


def test_no_module_imports_a_layer_its_row_does_not_list() -> None:
    assert violations(SOURCE, RULES) == []


def test_the_check_catches_an_upward_import(tmp_path: Path) -> None:
    root = tmp_path / "agentcell"
    for layer in ("errors", "spec", "runtime"):
        (root / layer).mkdir(parents=True)
        (root / layer / "__init__.py").write_text("")
    (root / "__init__.py").write_text("")
    (root / "spec" / "model.py").write_text(
        "from agentcell.errors import Error\n"
        "def lazy():\n    from agentcell.runtime import backend\n"
    )
    (root / "runtime" / "backend.py").write_text("import docker\nfrom agentcell.spec import x\n")
    (root / "spec" / "sdk.py").write_text("import docker.errors\n")
    rules = read_rules(
        "| layer | owns | may import |\n| --- | --- | --- |\n"
        "| `errors` | e | nothing |\n| `spec` | s | `errors` |\n"
        "| `runtime` | r | `spec`, `errors` |\n\n"
        "| third-party package | only these layers import it |\n| --- | --- |\n"
        "| `docker` | `runtime` |\n"
    )
    assert violations(root, rules) == [
        "agentcell/spec/model.py:3: layer spec imports agentcell.runtime, not in its row",
        "agentcell/spec/sdk.py:1: layer spec imports docker.errors",
    ]


@pytest.mark.parametrize(("layer", "expected"), [("errors", frozenset()), ("cli", None)])
def test_the_table_is_read_as_written(layer: str, expected: frozenset[str] | None) -> None:
    assert RULES.allowed[layer] == expected
    assert RULES.third_party["docker"] == {"runtime"}
