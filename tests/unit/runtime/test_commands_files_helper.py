"""The in-cell file helper, run here by this host's python3 on a temporary directory standing
for a tmpfs: framed uploads that replace a file only when complete, refusals of symlinks on the
way and at the end, listing and removal. (Mounts, a full tmpfs and the cell's uid are shown by
tests/integration/runtime/test_cell_files.py.)"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agentcell.cell.paths import asset

PROGRAM = asset("files", "cellfiles.py").read_text()


def helper(operation: str, root: Path, path: str, stdin: bytes = b"") -> tuple[list[Any], bytes]:
    """Run the helper; its answer lines (and, for read, the bytes after the first)."""
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM, operation, str(root), path],
        input=stdin,
        capture_output=True,
        check=False,
        timeout=30,
    )
    if operation == "read":
        head, _, data = done.stdout.partition(b"\n")
        return [json.loads(head)], data
    return [json.loads(line) for line in done.stdout.splitlines()], b""


def frames(*chunks: bytes, commit: bool = True) -> bytes:
    body = b"".join(struct.pack(">I", len(c)) + c for c in chunks)
    return body + (struct.pack(">I", 0) if commit else b"")


def test_an_upload_is_written_whole_when_its_last_frame_arrives(tmp_path: Path) -> None:
    answers, _ = helper("write", tmp_path, f"{tmp_path}/f", frames(b"ab", b"cd"))
    ready, done = answers
    assert ready["ok"] is True and ready["temporary"].startswith(".f.agentcell-")
    assert done == {"ok": True, "size": 4}
    assert (tmp_path / "f").read_bytes() == b"abcd"
    assert oct((tmp_path / "f").stat().st_mode & 0o777) == oct(0o644)


def test_an_upload_cut_short_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"old")
    answers, _ = helper("write", tmp_path, f"{tmp_path}/f", frames(b"new", commit=False))
    assert answers[-1]["ok"] is False
    assert (tmp_path / "f").read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["f"]


def test_symlinks_on_the_way_or_at_the_end_are_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "target").write_bytes(b"keep")
    root = tmp_path / "tmpfs"
    root.mkdir()
    (root / "dir").symlink_to(outside)
    (root / "last").symlink_to(outside / "target")
    for path in (f"{root}/dir/target", f"{root}/last"):
        for operation in ("write", "read"):
            answers, _ = helper(operation, root, path, frames(b"owned"))
            assert answers[-1] == {
                "ok": False,
                "reason": "bad_path",
                "message": answers[-1]["message"],
            }
            assert "symlink" in answers[-1]["message"]
    assert (outside / "target").read_bytes() == b"keep"
    assert sorted(os.listdir(root)) == ["dir", "last"]


def test_read_list_and_remove(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_bytes(b"x" * 600_000)
    answers, data = helper("read", tmp_path, f"{tmp_path}/d/f")
    assert answers == [{"ok": True, "size": 600_000}] and data == b"x" * 600_000
    answers, _ = helper("list", tmp_path, f"{tmp_path}/d")
    (entry, end) = answers
    assert (entry["name"], entry["kind"], entry["size"]) == ("f", "file", 600_000)
    assert end == {"ok": True, "count": 1}
    answers, _ = helper("remove", tmp_path, f"{tmp_path}/d")
    assert answers[0]["reason"] == "is_directory"
    assert helper("remove", tmp_path, f"{tmp_path}/d/f")[0] == [{"ok": True}]
    assert helper("remove", tmp_path, f"{tmp_path}/d")[0] == [{"ok": True}]
    assert helper("read", tmp_path, f"{tmp_path}/d/f")[0][0]["reason"] == "not_found"


@pytest.mark.parametrize("operation", ["write", "read"])
def test_a_directory_is_not_a_file(tmp_path: Path, operation: str) -> None:
    (tmp_path / "d").mkdir()
    answers, _ = helper(operation, tmp_path, f"{tmp_path}/d", frames(b"x"))
    assert answers[-1]["reason"] == "is_directory"
