"""A custom seccomp profile is judged the same way by lint (from the spec's file) and by audit
(from the profile the engine holds): both read it with agentcell.cell.seccomp."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agentcell.cell.seccomp import strict_profile
from agentcell.policy.presets import preset
from agentcell.policy.view import CellView

RESTRICTED = preset("restricted")
ALLOWS_IO_URING = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": []}
BLOCKS_IO_URING = {
    "defaultAction": "SCMP_ACT_ALLOW",
    "syscalls": [
        {"names": ["io_uring_setup", "io_uring_enter", "io_uring_register"],
         "action": "SCMP_ACT_ERRNO"}
    ],
}  # fmt: skip


def io_uring_findings(view: CellView) -> list[tuple[str, str]]:
    return [(f.rule, f.severity) for f in RESTRICTED.judge(view) if f.rule == "AC-009"]


@pytest.mark.parametrize(
    ("profile", "expected"),
    [(ALLOWS_IO_URING, [("AC-009", "warning")]), (BLOCKS_IO_URING, []), (None, [])],
    ids=["allows", "blocks", "strict"],
)
def test_lint_and_audit_agree_on_a_custom_profile(
    profile: dict[str, Any] | None,
    expected: list[tuple[str, str]],
    tmp_path: Path,
    spec_view: Callable[..., CellView],
    container_view: Callable[..., CellView],
) -> None:
    content = dict(strict_profile()) if profile is None else profile
    path = tmp_path / "profile.json"
    path.write_text(json.dumps(content, indent=2))
    from_spec = spec_view({"spec": {"security": {"seccomp": str(path)}}})
    inline = "seccomp=" + json.dumps(content, separators=(",", ":"))
    from_engine = container_view(
        {"HostConfig": {"SecurityOpt": ["no-new-privileges:true", inline]}}
    )
    assert io_uring_findings(from_spec) == io_uring_findings(from_engine)
    if profile is not None:
        assert io_uring_findings(from_spec) == expected


def test_an_unreadable_profile_is_unknown_not_passed(
    tmp_path: Path, spec_view: Callable[..., CellView]
) -> None:
    view = spec_view({"spec": {"security": {"seccomp": str(tmp_path / "missing.json")}}})
    assert view.seccomp_blocks_io_uring is None
    assert io_uring_findings(view) == [("AC-009", "info")]
