"""``docker inspect`` documents -> the views the policy rules judge. Pure: no engine."""

from __future__ import annotations

import json
from typing import Any

import pytest

from agentcell.cell.seccomp import blocks_io_uring, load_profile, strict_profile_path
from agentcell.errors import BackendError
from agentcell.runtime.docker.container_view import view_of_container

MiB = 1024**2


def inspect(host: dict[str, Any] | None = None, **top: Any) -> dict[str, Any]:
    """A minimal inspect document, as the engine returns for ``docker run image``."""
    document: dict[str, Any] = {
        "Id": "0123456789ab" * 5 + "cdef",
        "Name": "/plain",
        "Config": {"Image": "debian:bookworm", "User": "", "Labels": {}},
        "HostConfig": {"NetworkMode": "default", **(host or {})},
        "Mounts": [],
        "State": {"Status": "exited"},
    }
    document.update(top)
    return document


def test_docker_run_defaults_are_what_cis_warns_about() -> None:
    observed = view_of_container(inspect())
    view = observed.view
    assert (observed.state, observed.managed) == ("exited", False)
    assert view.user == 0 and view.user_text == ""
    assert not view.cap_drop_all and not view.read_only_rootfs and not view.no_new_privileges
    assert (view.memory, view.memory_swap, view.cpu_nanos, view.pids_limit) == (None,) * 4
    assert view.seccomp == "default" and view.seccomp_blocks_io_uring is False
    assert view.default_bridge and view.network == "bridge"
    assert view.healthcheck is False and view.restart_policy == "no"
    assert view.tenant is None and view.exceptions == ()


@pytest.mark.parametrize(
    ("user", "uid"),
    [("", 0), ("root", 0), ("0:0", 0), ("1001", 1001), ("1001:1001", 1001), ("nobody", None)],
)
def test_user(user: str, uid: int | None) -> None:
    view = view_of_container(inspect(Config={"User": user})).view
    assert view.user == uid and view.user_text == user


@pytest.mark.parametrize(
    ("options", "nnp", "seccomp"),
    [
        (["no-new-privileges"], True, "default"),
        (["no-new-privileges=true", "seccomp=unconfined"], True, "unconfined"),
        (["no-new-privileges:false", "seccomp:unconfined"], False, "unconfined"),
        (["seccomp={}", "label=disable"], False, "custom:inline profile"),
    ],
)
def test_security_options(options: list[str], nnp: bool, seccomp: str) -> None:
    view = view_of_container(inspect({"SecurityOpt": options})).view
    assert (view.no_new_privileges, view.seccomp) == (nnp, seccomp)


def test_privileged_means_no_seccomp_and_no_dropped_capabilities() -> None:
    view = view_of_container(inspect({"Privileged": True, "CapDrop": ["ALL"]})).view
    assert view.seccomp == "unconfined" and not view.cap_drop_all


@pytest.mark.parametrize(
    ("profile", "blocks"),
    [
        ({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": []}, True),
        ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": []}, False),
        (
            {"defaultAction": "SCMP_ACT_ERRNO",
             "syscalls": [{"names": ["io_uring_enter"], "action": "SCMP_ACT_ALLOW"}]},
            False,
        ),
        (
            {"defaultAction": "SCMP_ACT_LOG",
             "syscalls": [{"names": ["io_uring_setup", "io_uring_enter"],
                           "action": "SCMP_ACT_ERRNO"}]},
            False,  # io_uring_register falls through to a default that allows
        ),
        (
            {"defaultAction": "SCMP_ACT_ALLOW",
             "syscalls": [{"names": ["io_uring_setup", "io_uring_enter", "io_uring_register"],
                           "action": "SCMP_ACT_KILL_PROCESS"}]},
            True,
        ),
    ],
)  # fmt: skip
def test_seccomp_profile_analysis(profile: dict[str, Any], blocks: bool) -> None:
    assert blocks_io_uring(load_profile(json.dumps(profile))) is blocks


@pytest.mark.parametrize("text", ["not json", "[]", '{"syscalls": []}', '{"defaultAction": 1}'])
def test_unreadable_seccomp_profile_is_unknown(text: str) -> None:
    assert blocks_io_uring(load_profile(text)) is None


def test_limits() -> None:
    view = view_of_container(
        inspect(
            {
                "Memory": 64 * MiB,
                "MemorySwap": 0,
                "CpuQuota": 25_000,
                "CpuPeriod": 50_000,
                "PidsLimit": 10,
            }
        )
    ).view
    assert view.memory == 64 * MiB and view.memory_swap == 128 * MiB
    assert view.cpu_nanos == 500_000_000 and view.pids_limit == 10


def test_mounts_ports_devices_and_tmpfs() -> None:
    view = view_of_container(
        inspect(
            {
                "Tmpfs": {"/tmp": "size=64m,noexec", "/run": "mode=755"},
                "PortBindings": {"80/tcp": [{"HostIp": "", "HostPort": "8080"}], "53/udp": None},
                "Devices": [{"PathOnHost": "/dev/fuse", "PathInContainer": ""}],
            },
            Mounts=[
                {"Type": "bind", "Source": "/srv", "Destination": "/data", "RW": False},
                {"Type": "volume", "Source": "/var/lib/docker/volumes/x", "Destination": "/v"},
            ],
        )
    ).view
    assert [(t.path, t.size) for t in view.tmpfs] == [("/tmp", "64m"), ("/run", None)]
    assert [(p.container_port, p.host_ip, p.host_port) for p in view.ports] == [
        ("80/tcp", "", 8080)
    ]
    assert [(d.host_path, d.container_path) for d in view.devices] == [("/dev/fuse", "/dev/fuse")]
    (mount,) = view.host_mounts  # named volumes are not host paths
    assert (mount.source, mount.read_only, mount.field) == ("/srv", True, ("Mounts", 0))


def test_restart_and_healthcheck() -> None:
    view = view_of_container(
        inspect(
            {"RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": 0}},
            Config={"Healthcheck": {"Test": ["CMD", "true"]}},
        )
    ).view
    assert view.restart_policy == "on-failure" and view.restart_max_retries is None
    assert view.healthcheck is True


def test_exceptions_are_read_only_from_agentcell_cells() -> None:
    labels = {
        "org.agentcell.exceptions": "AC-007,AC-025",
        "org.agentcell.spec": json.dumps(
            {"spec": {"exceptions": [{"rule": "AC-025", "reason": "reads /proc for metrics"}]}}
        ),
        "org.agentcell.source": "examples/monitor.yaml:4",
        "org.agentcell.tenant": "demo",
    }
    stranger = view_of_container(inspect(Config={"Labels": labels})).view
    assert stranger.exceptions == () and stranger.tenant is None
    cell = view_of_container(
        inspect(Config={"Labels": {**labels, "org.agentcell.managed": "true"}})
    ).view
    assert cell.tenant == "demo"
    assert cell.exception_reasons == {
        "AC-007": "excepted in examples/monitor.yaml:4",
        "AC-025": "reads /proc for metrics",
    }


def test_finding_locations_name_the_inspect_field() -> None:
    view = view_of_container(inspect({"CapAdd": ["SYS_ADMIN"]})).view
    assert str(view.where("cap_add")) == "container plain: HostConfig.CapAdd"
    assert view.where("tmpfs", ("HostConfig", "Tmpfs", "/tmp")).field == "HostConfig.Tmpfs./tmp"


@pytest.mark.parametrize(
    "document",
    [{}, {"Id": "x", "Name": "/y"}, {"Id": "x", "Name": "/y", "HostConfig": {"Memory": "lots"}}],
)
def test_unreadable_inspect_document_is_a_backend_error(document: dict[str, Any]) -> None:
    with pytest.raises(BackendError, match="cannot read"):
        view_of_container(document)


def test_agentcell_strict_profile_is_recognised() -> None:
    profile = strict_profile_path().read_text(encoding="utf-8")
    compact = json.dumps(json.loads(profile), separators=(",", ":"))
    view = view_of_container(inspect({"SecurityOpt": ["seccomp=" + compact]})).view
    assert view.seccomp == "strict" and view.seccomp_blocks_io_uring is True


def test_exception_reasons_come_from_the_spec_the_cell_carries() -> None:
    spec = {"spec": {"exceptions": [{"rule": "AC-025", "reason": "reads /proc for metrics"}]}}
    labels = {
        "org.agentcell.managed": "true",
        "org.agentcell.exceptions": "AC-025",
        "org.agentcell.spec": json.dumps(spec),
    }
    view = view_of_container(inspect(Config={"Labels": labels})).view
    assert view.exception_reasons == {"AC-025": "reads /proc for metrics"}
    assert view.where("exceptions", view.exceptions[0].field).field == (
        "Config.Labels.org.agentcell.spec"
    )
    labels["org.agentcell.spec"] = "{not json"
    view = view_of_container(inspect(Config={"Labels": labels})).view
    assert view.exception_reasons == {"AC-025": "excepted in the spec"}
