"""What agentcell reads from `docker info`, and what it refuses on such a host."""

from __future__ import annotations

import pytest

from agentcell.errors import HostError
from agentcell.runtime.docker.host import HostFacts

INFO = {
    "ServerVersion": "20.10.24",
    "CgroupVersion": "1",
    "Runtimes": {
        "runc": {"path": "runc"},
        "io.containerd.runc.v2": {"path": "runc"},
        "runsc": {
            "path": "/usr/bin/runsc",
            "runtimeArgs": ["--platform=ptrace", "--network=none", "--oci-seccomp"],
        },
    },
}


def facts() -> HostFacts:
    return HostFacts.from_info(INFO, api_version="1.41")


def test_runtimes_are_listed_with_what_they_can_do_here() -> None:
    runtimes = {runtime.name: runtime for runtime in facts().runtimes}
    assert runtimes["runc"].available
    assert not runtimes["crun"].available  # not registered: listed, and said so
    assert "not registered" in runtimes["crun"].note
    assert not runtimes["runsc"].networking
    assert "--oci-seccomp" in runtimes["runsc"].note
    assert "io.containerd.runc.v2" not in runtimes


def test_a_missing_runtime_is_refused() -> None:
    with pytest.raises(HostError, match="'crun' is not available"):
        facts().require_runtime("crun", networked=False)


def test_gvisor_without_network_support_refuses_a_network() -> None:
    with pytest.raises(HostError, match="without networking"):
        facts().require_runtime("runsc", networked=True)


@pytest.mark.parametrize("path", ["/proc", "/sys", "/sys/fs/cgroup"])
def test_gvisor_refuses_host_kernel_filesystems_it_cannot_serve(path: str) -> None:
    with pytest.raises(HostError, match="EINVAL"):
        facts().require_runtime("runsc", networked=False, host_paths=[path])


def test_other_host_paths_and_other_runtimes_pass() -> None:
    assert facts().require_runtime("runsc", networked=False, host_paths=["/run/agentcell/x"])
    assert facts().require_runtime("runc", networked=True, host_paths=["/proc", "/sys"])
    assert facts().require_runtime("runsc", networked=False, host_paths=["/procfs-like"])
