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
    allowing = [rule for rule in strict["syscalls"] if rule["action"] == "SCMP_ACT_ALLOW"]
    assert all("bpf" not in rule["names"] for rule in allowing)


# -- socket families ---------------------------------------------------------------------------

AF_UNIX, AF_INET, AF_INET6, AF_NETLINK, AF_VSOCK = 1, 2, 10, 16, 40
EAFNOSUPPORT, EPROTONOSUPPORT = 97, 93
ALLOWED_FAMILIES = {AF_UNIX, AF_INET, AF_INET6, AF_NETLINK}
NETLINK_ROUTE, NETLINK_SOCK_DIAG = 0, 4
# Values a register can hold that the kernel reads as an int: the upper half is garbage to
# the kernel but not to seccomp, which compares all 64 bits.
UPPER_HALF_GARBAGE = (1 << 32, 0xFFFFFFFF00000000, 1 << 63)


def _matches(condition: dict[str, Any], args: tuple[int, ...]) -> bool:
    value = args[condition["index"]]
    op = condition["op"]
    if op == "SCMP_CMP_EQ":
        return bool(value == condition["value"])
    if op == "SCMP_CMP_NE":
        return bool(value != condition["value"])
    if op == "SCMP_CMP_GE":
        return bool(value >= condition["value"])
    if op == "SCMP_CMP_MASKED_EQ":
        return bool(value & condition["value"] == condition["valueTwo"])
    raise AssertionError(f"the test does not know {op}")


def socket_verdict(syscall: str, family: int, protocol: int = 0) -> tuple[str, int | None]:
    """(action, errno) the strict profile gives ``syscall(family, type, protocol)``.

    Every rule whose conditions all hold is collected; the profile must leave no doubt, so
    they must agree (libseccomp refuses conflicting rules, and the default action would hide
    a gap).
    """
    args = (family, 1, protocol, 0, 0, 0)
    verdicts = {
        (rule["action"], rule.get("errnoRet"))
        for rule in PROFILE["syscalls"]
        if syscall in rule["names"] and all(_matches(c, args) for c in rule.get("args") or [])
    }
    assert len(verdicts) == 1, (syscall, family, protocol, verdicts)
    (verdict,) = verdicts
    return verdict


@pytest.mark.parametrize("syscall", ["socket", "socketpair"])
def test_only_unix_inet_inet6_and_netlink_sockets_can_be_created(syscall: str) -> None:
    for family in range(256):
        action, errno = socket_verdict(syscall, family)
        if family in ALLOWED_FAMILIES:
            assert action == "SCMP_ACT_ALLOW", family
        else:
            assert (action, errno) == ("SCMP_ACT_ERRNO", EAFNOSUPPORT), family
    for family in (AF_VSOCK, 17, 38, 44, 0x7FFFFFFF, 2**32 - 1):
        assert socket_verdict(syscall, family) == ("SCMP_ACT_ERRNO", EAFNOSUPPORT)


def test_garbage_in_the_upper_half_does_not_smuggle_a_family_through() -> None:
    for family in (AF_UNIX, AF_INET, AF_VSOCK):
        for garbage in UPPER_HALF_GARBAGE:
            assert socket_verdict("socket", family | garbage) == ("SCMP_ACT_ERRNO", EAFNOSUPPORT)
    for garbage in UPPER_HALF_GARBAGE:
        verdict = socket_verdict("socket", AF_NETLINK, NETLINK_ROUTE | garbage)
        assert verdict == ("SCMP_ACT_ERRNO", EPROTONOSUPPORT)


def test_netlink_only_for_route_and_sock_diag() -> None:
    for protocol in range(128):
        action, errno = socket_verdict("socket", AF_NETLINK, protocol)
        if protocol in (NETLINK_ROUTE, NETLINK_SOCK_DIAG):
            assert action == "SCMP_ACT_ALLOW", protocol
        else:
            assert (action, errno) == ("SCMP_ACT_ERRNO", EPROTONOSUPPORT), protocol


def test_the_family_filter_cannot_be_bypassed_through_socketcall_or_ia32() -> None:
    (deny,) = [rule for rule in PROFILE["syscalls"] if rule.get("errnoRet") == 1]
    assert "socketcall" in deny["names"]
    for rule in PROFILE["syscalls"]:
        if rule["action"] == "SCMP_ACT_ALLOW":
            assert "socketcall" not in rule["names"]
            if {"socket", "socketpair"} & set(rule["names"]):
                assert rule["args"], "socket is allowed only for named families"
    subs = {sub for arch in PROFILE["archMap"] for sub in arch["subArchitectures"]}
    assert "SCMP_ARCH_X86" not in subs
    assert "SCMP_ARCH_X32" in subs


def test_each_rule_compares_an_argument_once() -> None:
    # runc splits a rule with two comparisons of one argument into ORed rules.
    for rule in PROFILE["syscalls"]:
        indexes = [condition["index"] for condition in rule.get("args") or []]
        if {"socket", "socketpair"} & set(rule["names"]):
            assert len(indexes) == len(set(indexes)), rule
