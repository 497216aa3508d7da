"""The host's check of a file path before anything reaches the cell: absolute, normalized,
no ``..``, strictly inside one of the cell's tmpfs mounts."""

from __future__ import annotations

import posixpath
from typing import Any, cast

import docker
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentcell.runtime.docker.files import CellFileError, CellFiles

TMPFS = ("/tmp", "/workspace/data")


class NoEngine:
    """A client that fails the test if a refused path ever reaches the engine."""

    def __getattr__(self, name: str) -> Any:
        pytest.fail(f"the engine was called ({name}) for a path the host should refuse")


FILES = CellFiles(cast("docker.DockerClient", NoEngine()), "cell", TMPFS)


def refusal(path: str) -> CellFileError:
    with pytest.raises(CellFileError) as refused:
        FILES.write(path, iter(()))
    return refused.value


@pytest.mark.parametrize(
    "path",
    [
        "tmp/x",
        "",
        "/tmp/../etc/passwd",
        "/tmp/..",
        "/tmp/a/../b",
        "/tmp/./x",
        "/tmp//x",
        "/tmp/x/",
        "//tmp/x",
        "/etc/passwd",
        "/tmp2/x",
        "/tmpx",
        "/workspace/x",
        "/workspace/database/x",
        "/tmp",
        "/workspace/data",
        "/tmp/a\x00b",
    ],
)
def test_paths_not_strictly_inside_a_tmpfs_are_refused(path: str) -> None:
    error = refusal(path)
    assert error.reason == "bad_path"
    assert error.fix
    assert error.exit_code == 2


def test_a_tmpfs_root_may_be_listed_but_never_written() -> None:
    assert "tmpfs mount itself" in str(refusal("/tmp"))
    assert FILES._root_of("/tmp", whole_root_allowed=True) == "/tmp"


def test_the_message_names_the_cell_s_tmpfs_mounts() -> None:
    assert "/tmp, /workspace/data" in str(refusal("/etc/passwd"))


def test_a_tmpfs_root_of_slash_is_refused() -> None:
    with pytest.raises(CellFileError):
        CellFiles(cast("docker.DockerClient", NoEngine()), "cell", ["/"])


segment = st.sampled_from(["a", "b", "..", ".", "", "tmp", "workspace", "data", "x y"])


@given(st.lists(segment, min_size=1, max_size=6))
def test_an_accepted_path_is_normalized_and_inside_a_tmpfs(parts: list[str]) -> None:
    path = "/" + "/".join(parts)
    if (
        ".." in parts
        or posixpath.normpath(path) != path
        or not path.startswith(("/tmp/", "/workspace/data/"))
    ):
        assert refusal(path).reason == "bad_path"
        return
    root = FILES._root_of(path, whole_root_allowed=False)
    assert ".." not in path.split("/")
    assert posixpath.normpath(path) == path
    assert path.startswith(root + "/") and len(path) > len(root) + 1
