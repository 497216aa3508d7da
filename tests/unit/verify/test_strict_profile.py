"""The shipped strict seccomp profile: what it denies, and that it is what the generator makes."""

from __future__ import annotations

import importlib.util
import json
from importlib import resources
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[3]
GENERATOR = REPO / "scripts" / "gen-seccomp-strict.py"
PROFILE: dict[str, Any] = json.loads(
    (resources.files("agentcell") / "assets" / "seccomp" / "strict.json").read_text()
)
MUST_DENY = {
    "io_uring_setup", "io_uring_enter", "io_uring_register", "keyctl", "add_key", "bpf",
    "perf_event_open", "userfaultfd", "unshare", "setns", "mount", "umount2",
    "open_by_handle_at", "kexec_load", "kexec_file_load", "init_module", "finit_module",
    "delete_module", "ptrace",
}  # fmt: skip


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_seccomp_strict", GENERATOR)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_no_allow_rule_names_a_denied_syscall_whatever_the_capabilities() -> None:
    for rule in PROFILE["syscalls"]:
        if rule["action"] == "SCMP_ACT_ALLOW":
            assert not MUST_DENY & set(rule["names"]), rule


def test_denials_are_explicit_eperm() -> None:
    (deny,) = [rule for rule in PROFILE["syscalls"] if rule.get("errnoRet") == 1]
    assert deny["action"] == "SCMP_ACT_ERRNO"
    assert set(deny["names"]) >= MUST_DENY


def test_cap_sys_admin_cannot_create_namespaces_through_clone() -> None:
    for rule in PROFILE["syscalls"]:
        if {"clone", "clone3"} & set(rule["names"]):
            assert "CAP_SYS_ADMIN" not in (rule.get("includes") or {}).get("caps", [])
            assert "CAP_SYS_ADMIN" not in (rule.get("excludes") or {}).get("caps", [])
            if rule["action"] == "SCMP_ACT_ALLOW":
                assert rule["args"], "clone is allowed only without namespace flags"


def test_ordinary_syscalls_stay_allowed() -> None:
    allowed = {
        name
        for rule in PROFILE["syscalls"]
        if rule["action"] == "SCMP_ACT_ALLOW" and not rule.get("includes")
        for name in rule["names"]
    }
    assert {"read", "write", "openat", "execve", "futex", "epoll_wait", "socket"} <= allowed


def test_the_profile_names_its_origin() -> None:
    assert "20.10.24" in PROFILE["comment"]
    assert "Apache-2.0" in PROFILE["comment"]


def test_the_generator_derives_exactly_the_committed_profile() -> None:
    module = generator()
    source = Path(module.DEBIAN_SOURCE)
    if not source.is_file():
        pytest.skip(f"{source} absent: apt-get install -y {module.DEBIAN_PACKAGE}")
    derived = module.render(module.derive(json.loads(source.read_bytes())))
    assert json.loads(derived) == PROFILE


def test_the_generator_leaves_its_input_alone() -> None:
    module = generator()
    default = {
        "defaultAction": "SCMP_ACT_ERRNO",
        "syscalls": [
            {"names": ["read", "ptrace", "io_uring_setup"], "action": "SCMP_ACT_ALLOW"},
            {"names": ["bpf", "clone"], "action": "SCMP_ACT_ALLOW",
             "includes": {"caps": ["CAP_SYS_ADMIN"]}},
        ],
    }  # fmt: skip
    before = json.dumps(default)
    strict = module.derive(default)
    assert json.dumps(default) == before
    assert strict["syscalls"][0]["names"] == ["read"]
    assert all("bpf" not in rule["names"] for rule in strict["syscalls"][:-1])
