"""The procfs parsers on files recorded from real cells (runc, and gVisor's own /proc)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentcell.verify.procfs import (
    CAPABILITY_BITS,
    KernelReadError,
    active_lsms,
    capability_names,
    default_routes,
    parse_interfaces,
    parse_ipv6_routes,
    parse_mountinfo,
    parse_routes,
    parse_size,
    parse_status,
    read_lsm_label,
    read_namespaces,
    read_status,
)

DATA = Path(__file__).parent / "data"
RUNC_PROC = DATA / "v1" / "proc"
SNAPSHOT = json.loads((DATA / "runsc-snapshot.json").read_text())


def test_status_of_a_runc_cell_reads_ids_caps_nnp_and_seccomp() -> None:
    status = read_status(RUNC_PROC, 4242)
    assert status.uids == (1001, 1001, 1001, 1001)
    assert status.gids == (1001, 1001, 1001, 1001)
    assert status.cap_effective == 0
    assert status.cap_bounding == 0
    assert status.cap_ambient == 0
    assert status.no_new_privs is True
    assert status.seccomp_mode == 2
    assert status.seccomp_filters == 1


def test_gvisor_status_leaves_unshown_lines_as_none_not_as_off() -> None:
    status = parse_status(SNAPSHOT["status"]["1"], pid=1)
    assert status.uids == (1001, 1001, 1001, 1001)
    assert status.cap_bounding == 0
    # gVisor prints neither CapAmb nor NoNewPrivs: "not shown" must not read as "disabled".
    assert status.cap_ambient is None
    assert status.no_new_privs is None
    assert status.seccomp_mode == 0


def test_the_runsc_sandbox_process_holds_caps_only_in_its_own_user_namespace() -> None:
    status = parse_status((DATA / "runsc-host" / "sandbox-status").read_text(), pid=7)
    assert capability_names(status.cap_effective) == {"SYS_ADMIN", "SYS_CHROOT"}
    assert status.uids[0] == 65534
    assert status.seccomp_mode == 2


def test_status_without_uid_line_is_an_error_not_a_guess() -> None:
    with pytest.raises(ValueError, match="Uid"):
        parse_status("Name:\tx\nGid:\t0\t0\t0\t0\n", pid=3)


def test_unreadable_status_is_a_kernel_read_error_naming_the_file(tmp_path: Path) -> None:
    with pytest.raises(KernelReadError) as caught:
        read_status(tmp_path, 99)
    assert "99/status" in caught.value.what
    assert caught.value.fix


def test_capability_names_match_the_kernel_bit_numbers() -> None:
    assert capability_names(1 << 21) == {"SYS_ADMIN"}
    assert capability_names((1 << 13) | (1 << 10)) == {"NET_RAW", "NET_BIND_SERVICE"}
    assert capability_names(1 << 50) == {"CAP_50"}
    assert capability_names(None) == frozenset()


@given(st.sets(st.integers(min_value=0, max_value=len(CAPABILITY_BITS) - 1)))
def test_capability_mask_round_trips(bits: set[int]) -> None:
    mask = sum(1 << bit for bit in bits)
    assert capability_names(mask) == {CAPABILITY_BITS[bit] for bit in bits}


def test_mountinfo_of_a_runc_cell() -> None:
    entries = parse_mountinfo((RUNC_PROC / "4242" / "mountinfo").read_text())
    root = next(entry for entry in entries if entry.mount_point == "/")
    assert root.fstype == "overlay"
    assert root.read_only
    tmp = next(entry for entry in entries if entry.mount_point == "/tmp")
    assert tmp.fstype == "tmpfs"
    assert parse_size(tmp.super_options["size"]) == 64 * 2**20
    assert tmp.flag("noexec") and tmp.flag("nosuid") and tmp.flag("nodev")


def test_mountinfo_of_gvisor_has_no_optional_fields_and_byte_sizes() -> None:
    entries = parse_mountinfo(SNAPSHOT["mountinfo"])
    root = entries[0]
    assert (root.mount_point, root.fstype, root.read_only) == ("/", "9p", True)
    workspace = next(entry for entry in entries if entry.mount_point == "/workspace")
    assert parse_size(workspace.super_options["size"]) == 128 * 2**20


def test_mountinfo_unescapes_spaces_in_paths() -> None:
    line = "40 30 0:5 / /mnt/with\\040space rw,relatime shared:1 - tmpfs tmpfs rw,size=1024k\n"
    (entry,) = parse_mountinfo(line)
    assert entry.mount_point == "/mnt/with space"
    assert parse_size(entry.super_options["size"]) == 1024 * 1024


def test_mountinfo_without_separator_is_refused() -> None:
    with pytest.raises(ValueError, match="separator"):
        parse_mountinfo("1 2 0:3 / / rw tmpfs tmpfs rw\n")


_PATH = st.text(alphabet="abcdefghij -", min_size=1, max_size=12).map(lambda s: "/" + s)


@given(
    point=_PATH,
    read_only=st.booleans(),
    size_k=st.integers(min_value=1, max_value=2**30),
    optional=st.lists(st.sampled_from(["shared:1", "master:2", "unbindable"]), max_size=2),
)
def test_mountinfo_round_trips_generated_lines(
    point: str, read_only: bool, size_k: int, optional: list[str]
) -> None:
    escaped = point.replace(" ", "\\040")
    fields = " ".join([*optional, "-"])
    mode = "ro" if read_only else "rw"
    line = f"7 1 0:9 / {escaped} {mode},nosuid {fields} tmpfs tmpfs rw,size={size_k}k\n"
    (entry,) = parse_mountinfo(line)
    assert entry.mount_point == point
    assert entry.read_only is read_only
    assert parse_size(entry.super_options["size"]) == size_k * 1024


@pytest.mark.parametrize(
    ("text", "expected"),
    [("16384k", 16 * 2**20), ("16m", 16 * 2**20), ("67108864", 64 * 2**20), ("1g", 2**30)],
)
def test_tmpfs_sizes_in_every_spelling(text: str, expected: int) -> None:
    assert parse_size(text) == expected


def test_size_that_is_not_a_size_is_none() -> None:
    assert parse_size("50%") is None
    assert parse_size(None) is None


def test_routes_and_interfaces_of_a_cell_without_network() -> None:
    net = RUNC_PROC / "4242" / "net"
    assert parse_interfaces((net / "dev").read_text()) == ("lo",)
    assert parse_routes((net / "route").read_text()) == ()
    assert parse_ipv6_routes((net / "ipv6_route").read_text()) == ()


def test_default_routes_are_found_in_v4_and_v6() -> None:
    v4 = (
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
        "eth0\t00000000\t010011AC\t0003\t0\t0\t0\t00000000\t0\t0\t0\n"
        "eth0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n"
    )
    routes = parse_routes(v4)
    assert [(r.destination, r.prefix, r.gateway) for r in routes] == [
        ("0.0.0.0", 0, "172.17.0.1"),
        ("172.17.0.0", 16, "0.0.0.0"),
    ]
    assert [r.interface for r in default_routes(routes)] == ["eth0"]
    zero = "0" * 32
    v6 = (
        f"{zero} 00 {zero} 00 fe800000000000000000000000000001 00000400 00000001 00000000 "
        "00000003 eth0\n"
        f"{zero} 00 {zero} 00 {zero} ffffffff 00000001 00000000 00200200 lo\n"
    )
    (route,) = parse_ipv6_routes(v6)
    assert route.default and route.interface == "eth0" and route.family == 6


def test_namespaces_are_read_from_the_links(tmp_path: Path) -> None:
    ns = tmp_path / "77" / "ns"
    ns.mkdir(parents=True)
    os.symlink("net:[4026532182]", ns / "net")
    os.symlink("pid:[4026532181]", ns / "pid")
    assert read_namespaces(tmp_path, 77) == {"net": "net:[4026532182]", "pid": "pid:[4026532181]"}


def test_lsm_label_absent_when_no_lsm_provides_it(tmp_path: Path) -> None:
    assert read_lsm_label(tmp_path, 5) is None
    attr = tmp_path / "5" / "attr"
    attr.mkdir(parents=True)
    (attr / "current").write_bytes(b"docker-default (enforce)\n")
    assert read_lsm_label(tmp_path, 5) == "docker-default (enforce)"


def test_active_lsms_from_securityfs_or_sysfs(tmp_path: Path) -> None:
    assert active_lsms(tmp_path)[0] == ()
    params = tmp_path / "module" / "apparmor" / "parameters"
    params.mkdir(parents=True)
    (params / "enabled").write_text("Y\n")
    assert active_lsms(tmp_path)[0] == ("apparmor",)
    security = tmp_path / "kernel" / "security"
    security.mkdir(parents=True)
    (security / "lsm").write_text("lockdown,capability,landlock,bpf")
    names, source = active_lsms(tmp_path)
    assert names == ("lockdown", "capability", "landlock", "bpf")
    assert source.endswith("kernel/security/lsm")
