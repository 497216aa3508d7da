"""The error tree: the drawing in ``agentcell.errors`` lists every class, with its exit code,
and every "cannot reach" failure is one family under HostError that exits 3."""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path

import pytest

import agentcell
from agentcell import errors
from agentcell.errors import (
    ControlPlaneUnavailable,
    EngineUnavailable,
    Error,
    HostError,
    RegistryUnavailable,
    Unreachable,
)

SRC = Path(agentcell.__file__).resolve().parent
# A line of the drawing that starts a class: the tree's branches, then the class name. Its exit
# code, "(exit N)", ends that line or one of the lines continuing its description.
CLASS_LINE = re.compile(r"^[\s│├└─]*(?P<name>[A-Z]\w+)\b")
EXIT_CODE = re.compile(r"\(exit (?P<code>\d)\)")


def _all_error_classes() -> set[type[Error]]:
    """Every subclass of Error in agentcell, after importing every module that may declare one
    (the stdlib-only agent cannot, and ``__main__`` modules run when imported)."""
    for module in pkgutil.walk_packages(agentcell.__path__, prefix="agentcell."):
        name = module.name
        if name.startswith("agentcell.agent") or name.rsplit(".", 1)[-1] == "__main__":
            continue
        importlib.import_module(name)
    found: set[type[Error]] = set()
    pending: list[type[Error]] = [Error]
    while pending:
        cls = pending.pop()
        if cls not in found:
            found.add(cls)
            pending.extend(cls.__subclasses__())
    return {cls for cls in found if cls.__module__.startswith("agentcell.")}


def _drawn() -> dict[str, tuple[int, int | None]]:
    """Class name -> (column of the name, exit code) as drawn in the errors module's docstring."""
    tree = (errors.__doc__ or "").split("::", 1)[1]
    drawn: dict[str, tuple[int, int | None]] = {}
    current = ""
    for line in tree.splitlines():
        match = CLASS_LINE.match(line)
        if match:
            current = match.group("name")
            assert current not in drawn, f"{current} is drawn twice"
            drawn[current] = (match.start("name"), None)
        code = EXIT_CODE.search(line)
        if code and current:
            drawn[current] = (drawn[current][0], int(code.group("code")))
    return drawn


def test_the_drawing_lists_every_error_class_wherever_it_is_declared() -> None:
    classes = _all_error_classes()
    # The tree really is spread over modules: the drawing is the one place to see all of it.
    assert {cls.__module__ for cls in classes} > {"agentcell.errors"}
    missing = sorted(
        f"{cls.__module__}.{cls.__qualname__}" for cls in classes if cls.__name__ not in _drawn()
    )
    assert missing == [], f"add these to the tree in agentcell/errors.py: {missing}"


def test_the_drawing_names_no_class_that_does_not_exist() -> None:
    names = {cls.__name__ for cls in _all_error_classes()}
    assert sorted(set(_drawn()) - names) == []


def test_the_exit_codes_drawn_are_the_ones_the_cli_uses() -> None:
    drawn = _drawn()
    wrong = {
        cls.__name__: (drawn[cls.__name__][1], cls.exit_code)
        for cls in _all_error_classes()
        if drawn[cls.__name__][1] not in (None, cls.exit_code)
    }
    assert wrong == {}, "drawn exit code vs. the class's exit_code"
    undrawn = sorted(name for name, (_, code) in drawn.items() if code is None and name != "Error")
    assert undrawn == [], "give every class its exit code in the drawing"


def test_the_drawing_shows_each_class_under_its_parent() -> None:
    drawn = _drawn()
    for cls in _all_error_classes() - {Error}:
        parent = cls.__mro__[1].__name__
        assert drawn[cls.__name__][0] == drawn[parent][0] + 4, f"draw {cls.__name__} under {parent}"


@pytest.mark.parametrize("cls", [EngineUnavailable, ControlPlaneUnavailable, RegistryUnavailable])
def test_every_unreachable_service_is_a_host_error_that_exits_3(cls: type[Unreachable]) -> None:
    error = cls("cannot reach it", fix="start it")
    assert isinstance(error, Unreachable)
    assert isinstance(error, HostError)
    assert error.exit_code == 3
    assert error.diagnostics() == "cannot reach it\n  fix: start it"


def test_the_control_plane_client_raises_the_one_unreachable_class() -> None:
    from agentcell.controlplane import client

    assert client.ControlPlaneUnavailable is ControlPlaneUnavailable


def test_only_the_engine_boundary_names_docker_sdk_errors() -> None:
    offenders = sorted(
        str(path.relative_to(SRC))
        for path in SRC.rglob("*.py")
        if "docker.errors" in path.read_text() and path != SRC / "runtime" / "docker" / "client.py"
    )
    assert offenders == [], "catch agentcell errors; client.translated() maps the SDK's"
