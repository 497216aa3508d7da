"""Comparison of what the kernel shows with the spec, on recorded host trees."""

from __future__ import annotations

import dataclasses
import json
import re
from importlib import resources
from pathlib import Path
from types import MappingProxyType

import pytest

from agentcell.runtime.uids import with_cell_ids
from agentcell.spec.load import load_paths
from agentcell.spec.model import AgentDocument
from agentcell.verify.compare import Check, VerifyReport, mismatch_ids, verify
from agentcell.verify.facts import CellTarget, EngineRecord, SandboxView, identify_runtime

from .trees import CONTAINER_ID, DATA, HOST_NAMESPACES, PID, HostTree

REPO = Path(__file__).resolve().parents[3]
STRICT = (resources.files("agentcell") / "assets" / "seccomp" / "strict.json").read_text()
V1_UNLIMITED = "9223372036854771712"
RUNSC_ARGS = ("--platform=ptrace", "--network=none")


def example(name: str, **security: object) -> AgentDocument:
    (doc,) = load_paths([REPO / "examples" / f"{name}.yaml"])
    # The recorded trees are of cells that ran as uid 1001, as if allocated that uid.
    document = with_cell_ids(doc.document, "1001")
    if security:
        spec = document.spec
        spec = spec.model_copy(update={"security": spec.security.model_copy(update=security)})
        document = document.model_copy(update={"spec": spec})
    return document


def target(
    *,
    runtime: str = "runc",
    seccomp: str | None = STRICT,
    sandbox: SandboxView | None = None,
    sandbox_error: str | None = None,
    sandbox_ps: str | None = None,
    exec_status: str | None = None,
) -> CellTarget:
    engine = EngineRecord(
        runtime=runtime,
        runtime_args=RUNSC_ARGS if runtime == "runsc" else (),
        seccomp_profile=seccomp,
    )
    return CellTarget(
        name="demo/sandbox",
        container="agentcell-demo-sandbox",
        container_id=CONTAINER_ID,
        host_pid=PID,
        engine=engine,
        sandbox=sandbox,
        sandbox_error=sandbox_error,
        sandbox_ps=sandbox_ps,
        exec_status=exec_status,
        exec_pid=4300 if exec_status is not None else 0,
    )


def run(tree: HostTree, document: AgentDocument, cell: CellTarget) -> VerifyReport:
    return verify(document, cell, spec_source="test", paths=tree.paths)


def by_id(report: VerifyReport) -> dict[str, Check]:
    return {check.id: check for check in report.checks}


def test_the_recorded_sandbox_cell_verifies(v1_host: HostTree) -> None:
    report = run(v1_host, example("sandbox"), target())
    checks = by_id(report)
    assert report.ok, [c for c in report.checks if c.status == "mismatch"]
    for check_id in ("identity.uid", "caps.bounding", "nnp", "seccomp.mode", "mounts.rootfs"):
        assert checks[check_id].status == "verified"
        assert checks[check_id].basis == "kernel"
    assert checks["mounts.tmpfs:/workspace"].status == "verified"
    assert checks["cgroup.memory"].observed.startswith("256m")
    assert checks["net.default-route"].status == "verified"
    assert checks["runtime"].status == "verified"
    # The kernel shows a filter, not which: the profile is only as good as the engine's record.
    assert checks["seccomp.profile"].status == "configured"
    assert checks["seccomp.profile"].basis == "engine"
    # This host really has no user namespace, no AppArmor: said, not hidden, not failed.
    assert checks["ns.user"].status == "not-enforced"
    assert checks["lsm"].status == "not-enforced"
    assert "AppArmor" in checks["lsm"].why


def test_the_same_cell_on_a_cgroup_v2_host_verifies(v2_host: HostTree) -> None:
    report = run(v2_host, example("sandbox"), target())
    checks = by_id(report)
    assert report.ok, report.mismatches
    assert checks["cgroup.memory-swap"].observed == "256m (cgroup v2)"
    assert checks["cgroup.pids"].source.endswith("docker-cell0001.scope/pids.max")


def test_a_weakened_cell_shows_exactly_its_weaknesses(v1_host: HostTree) -> None:
    status = "proc/4242/status"
    v1_host.edit(status, "CapBnd:\t0000000000000000", "CapBnd:\t0000000000002000")  # NET_RAW
    v1_host.edit("proc/4242/mountinfo", "/ ro,relatime", "/ rw,relatime")
    memory = "sys/fs/cgroup/memory/docker/cell0001"
    v1_host.write(f"{memory}/memory.limit_in_bytes", V1_UNLIMITED)
    v1_host.write(f"{memory}/memory.memsw.limit_in_bytes", V1_UNLIMITED)
    report = run(v1_host, example("sandbox"), target())
    assert mismatch_ids(report.checks) == {
        "caps.bounding",
        "mounts.rootfs",
        "cgroup.memory",
        "cgroup.memory-swap",
    }
    assert by_id(report)["caps.bounding"].observed == "pid 4242 (python3): NET_RAW"


def test_a_granted_capability_is_expected(v1_host: HostTree) -> None:
    v1_host.edit("proc/4242/status", "CapBnd:\t0000000000000000", "CapBnd:\t0000000000002000")
    report = run(v1_host, example("sandbox", capabilities=("NET_RAW",)), target())
    assert by_id(report)["caps.bounding"].status == "verified"


def test_every_process_of_the_cell_is_checked(v1_host: HostTree) -> None:
    # An exec'd process with more privilege than the cell's init is a mismatch too.
    v1_host.write("sys/fs/cgroup/pids/docker/cell0001/cgroup.procs", f"{PID}\n4300\n")
    text = (v1_host.cell / "status").read_text()
    extra = text.replace("Uid:\t1001\t1001\t1001\t1001", "Uid:\t0\t0\t0\t0")
    extra = extra.replace("Seccomp:\t2", "Seccomp:\t0").replace("Name:\tpython3", "Name:\tsh")
    v1_host.write("proc/4300/status", extra)
    report = run(v1_host, example("sandbox"), target())
    checks = by_id(report)
    assert checks["identity.uid"].status == "mismatch"
    assert checks["identity.uid"].observed == "pid 4300 (sh): 0/0/0/0"
    assert checks["seccomp.mode"].status == "mismatch"


def test_a_different_seccomp_profile_is_a_mismatch_of_the_engine_record(
    v1_host: HostTree,
) -> None:
    report = run(v1_host, example("sandbox"), target(seccomp=None))
    check = by_id(report)["seccomp.profile"]
    assert (check.status, check.observed) == ("mismatch", "the engine's default profile")
    default = run(v1_host, example("sandbox", seccomp="default"), target(seccomp=None))
    assert by_id(default)["seccomp.profile"].status == "configured"


def test_tmpfs_size_and_flags_are_compared(v1_host: HostTree) -> None:
    v1_host.edit("proc/4242/mountinfo", "size=131072k", "size=262144k")
    report = run(v1_host, example("sandbox"), target())
    check = by_id(report)["mounts.tmpfs:/workspace"]
    assert check.status == "mismatch"
    assert "size=256m" in check.observed


def test_recursive_host_mounts_with_writable_submounts_are_a_mismatch(
    v1_host: HostTree,
) -> None:
    v1_host.write(
        "proc/4242/mountinfo",
        (v1_host.cell / "mountinfo").read_text()
        + "95 74 0:21 / /host/proc ro,relatime - proc proc rw\n"
        + "96 74 0:22 / /host/sys ro,relatime - sysfs sysfs rw\n"
        + "97 96 0:28 / /host/sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n"
        + "98 97 0:32 / /host/sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n",
    )
    document = example("monitor-agent")
    spec = document.spec.model_copy(update={"resources": example("sandbox").spec.resources})
    report = run(v1_host, document.model_copy(update={"spec": spec}), target())
    checks = by_id(report)
    assert checks["mounts.host:/host/proc"].status == "verified"
    sys_check = checks["mounts.host:/host/sys"]
    assert sys_check.status == "mismatch"
    assert "2 submounts rw" in sys_check.observed
    assert "non-recursively" in sys_check.why
    assert checks["mounts.unexpected"].status == "verified"


def test_unexpected_mounts_and_the_engine_socket_are_named(v1_host: HostTree) -> None:
    v1_host.write(
        "proc/4242/mountinfo",
        (v1_host.cell / "mountinfo").read_text()
        + "99 74 0:25 /docker.sock /var/run/docker.sock rw,nosuid - tmpfs tmpfs rw\n"
        + "100 74 254:0 /srv/data /data ro - ext4 /dev/vda rw\n"
        + "101 74 254:0 /id /run/agentcell/identity ro - ext4 /dev/vda rw\n",
    )
    report = run(v1_host, example("sandbox"), target())
    checks = by_id(report)
    assert checks["mounts.docker-socket"].status == "mismatch"
    assert checks["mounts.unexpected"].observed == "/data, /var/run/docker.sock"
    # agentcell's own read-only mounts are expected.
    assert checks["mounts.agentcell"].status == "verified"


def test_privileged_containers_lose_the_proc_masks(v1_host: HostTree) -> None:
    (v1_host.root / "proc" / "keys").write_text("")  # the masked file exists on this kernel
    lines = (v1_host.cell / "mountinfo").read_text().splitlines(keepends=True)
    kept = [line for line in lines if " /proc/keys " not in line and " /proc/sys " not in line]
    v1_host.write("proc/4242/mountinfo", "".join(kept))
    (v1_host.root / "proc" / "sys").mkdir()
    check = by_id(run(v1_host, example("sandbox"), target()))["mounts.masks"]
    assert check.status == "mismatch"
    assert check.observed == "/proc/keys not masked; /proc/sys not read-only"


def test_shared_namespaces_and_routes_out(v1_host: HostTree) -> None:
    v1_host.namespaces(str(PID), {**HOST_NAMESPACES, "mnt": "mnt:[4026532178]"})
    v1_host.write(
        "proc/4242/net/route",
        "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\tMTU\tWindow\tIRTT\n"
        "eth0\t00000000\t010011AC\t0003\t0\t0\t0\t00000000\t0\t0\t0\n",
    )
    checks = by_id(run(v1_host, example("sandbox"), target()))
    for kind in ("pid", "net", "ipc", "uts"):
        assert checks[f"ns.{kind}"].status == "mismatch"
    assert checks["ns.mnt"].status == "verified"
    route = checks["net.default-route"]
    assert (route.status, route.observed) == ("mismatch", "0.0.0.0/0 via 172.17.0.1 dev eth0")


def test_host_namespaces_the_spec_asks_for_are_verified_as_shared(v1_host: HostTree) -> None:
    v1_host.namespaces(str(PID), {**HOST_NAMESPACES, "mnt": "mnt:[4026532178]"})
    document = example("sandbox")
    host = document.spec.host.model_copy(update={"pid": True, "network": True})
    spec = document.spec.model_copy(update={"host": host})
    checks = by_id(run(v1_host, document.model_copy(update={"spec": spec}), target()))
    assert checks["ns.pid"].status == "verified"
    assert checks["ns.net"].expected.startswith("shared")
    assert checks["ns.ipc"].status == "mismatch"


def test_the_runtime_is_read_from_its_state_not_from_the_engine(v1_host: HostTree) -> None:
    v1_host.runtime("crun")
    assert identify_runtime(v1_host.paths.runtime_state, CONTAINER_ID) == "crun"
    check = by_id(run(v1_host, example("sandbox"), target(runtime="runc")))["runtime"]
    assert (check.status, check.observed) == ("mismatch", "crun")
    v1_host.runtime("none")
    check = by_id(run(v1_host, example("sandbox"), target()))["runtime"]
    assert check.status == "unknown"


def test_apparmor_hosts_demand_a_confining_label(v1_host: HostTree) -> None:
    v1_host.write("sys/kernel/security/lsm", "lockdown,capability,apparmor")
    v1_host.write("proc/4242/attr/current", "docker-default (enforce)\n")
    assert by_id(run(v1_host, example("sandbox"), target()))["lsm"].status == "verified"
    v1_host.write("proc/4242/attr/current", "unconfined\n")
    assert by_id(run(v1_host, example("sandbox"), target()))["lsm"].status == "mismatch"


def test_unreadable_facts_are_unknown_with_why(v1_host: HostTree) -> None:
    (v1_host.root / "sys/fs/cgroup/pids/docker/cell0001/pids.max").unlink()
    (v1_host.cell / "mountinfo").unlink()
    report = run(v1_host, example("sandbox"), target())
    checks = by_id(report)
    assert checks["cgroup.pids"].status == "unknown"
    assert "pids.max" in checks["cgroup.pids"].why
    assert checks["mounts"].status == "unknown"
    assert report.ok  # unknown is reported, not failed


def _sandbox_view(**changes: object) -> SandboxView:
    data = json.loads((DATA / "runsc-snapshot.json").read_text())
    view = SandboxView(
        statuses=MappingProxyType({int(pid): text for pid, text in data["status"].items()}),
        mountinfo=data["mountinfo"],
        route=data["route"],
        ipv6_route=data["ipv6_route"],
        dev=data["dev"],
        present=MappingProxyType(data["present"]),
        no_new_privs=data["no_new_privs"] == 1,
        # The snapshot reads its own status as an exec'd process: gVisor shows Seccomp 0.
        self_status=data["status"]["1"],
    )
    return dataclasses.replace(view, **changes)  # type: ignore[arg-type]


RUNSC_PS = (DATA / "runsc-host" / "ps.txt").read_text()


def _record(tree: HostTree, **process: object) -> None:
    """runsc's state file with the recorded OCI spec, its process section changed."""
    state = json.loads((DATA / "runsc-host" / "state.json").read_text())
    state["spec"]["process"].update(process)
    (tree.paths.runtime_state / f"{CONTAINER_ID}_sandbox:{CONTAINER_ID}.state").write_text(
        json.dumps(state)
    )


def _gvisor(tree: HostTree, *, record: bool = True) -> None:
    tree.runtime("runsc")
    if record:
        _record(tree)
    tree.write("proc/4242/status", (DATA / "runsc-host" / "sandbox-status").read_text())
    tree.namespaces(
        str(PID),
        {**HOST_NAMESPACES, "user": "user:[4026532910]", "net": "net:[4026532914]"}
        | {"ipc": "ipc:[1]", "uts": "uts:[2]", "mnt": "mnt:[3]"},
    )


def test_gvisor_is_read_from_the_host_side_and_the_image_only_reports(v1_host: HostTree) -> None:
    _gvisor(v1_host)
    cell = target(runtime="runsc", sandbox=_sandbox_view(), sandbox_ps=RUNSC_PS)
    report = run(v1_host, example("sandbox", runtime="runsc"), cell)
    checks = by_id(report)
    assert report.ok, report.mismatches
    # gVisor's process table, asked from the host: verified.
    assert (checks["identity.uid"].status, checks["identity.uid"].basis) == ("verified", "sandbox")
    assert "image reports: 1001" in checks["identity.uid"].observed
    # The OCI spec runsc was handed: configured, with what the image said beside it.
    for check_id in ("identity.gid", "caps.bounding", "caps.ambient", "nnp", "mounts.rootfs"):
        assert (checks[check_id].status, checks[check_id].basis) == ("configured", "host")
    assert checks["mounts.tmpfs:/workspace"].status == "configured"
    assert "size=128m" in checks["mounts.tmpfs:/workspace"].observed
    assert checks["mounts.unexpected"].status == "configured"
    # Only the image can look at gVisor's /proc: its word is reported, never verified.
    assert (checks["mounts.masks"].status, checks["mounts.masks"].basis) == ("reported", "image")
    assert "untrusted" in checks["mounts.masks"].why
    # The sentry's own filter is verified on the host; the spec's profile is not applied.
    assert (checks["seccomp.mode"].status, checks["seccomp.mode"].basis) == ("verified", "kernel")
    profile = checks["seccomp.profile"]
    assert profile.status == "not-enforced"
    assert "--oci-seccomp" in profile.why
    assert checks["ns.user"].status == "verified"
    assert checks["ns.pid"].status == "verified"  # gVisor's own process table
    assert checks["runtime"].status == "verified"
    exec_check = checks["seccomp.exec"]
    assert exec_check.status == "not-enforced"
    assert "12693" in exec_check.why and "Seccomp 0" in exec_check.observed
    assert not [c.id for c in report.checks if c.basis == "image" and c.status == "verified"]


def test_a_lying_image_cannot_turn_a_mismatch_into_verified(v1_host: HostTree) -> None:
    # Started without no-new-privileges and with NET_RAW: runsc's record says so, while the
    # image's python3 prints a perfect snapshot.
    _gvisor(v1_host)
    _record(v1_host, noNewPrivileges=False, capabilities={"bounding": ["CAP_NET_RAW"]})
    cell = target(runtime="runsc", sandbox=_sandbox_view(no_new_privs=True), sandbox_ps=RUNSC_PS)
    report = run(v1_host, example("sandbox", runtime="runsc"), cell)
    checks = by_id(report)
    assert mismatch_ids(report.checks) == {"nnp", "caps.bounding"}
    assert "noNewPrivileges false" in checks["nnp"].observed
    assert "image reports: 1" in checks["nnp"].observed


def test_without_the_host_side_the_image_reading_is_only_reported(v1_host: HostTree) -> None:
    _gvisor(v1_host, record=False)  # runsc's state holds no spec; runsc ps was not run
    cell = target(runtime="runsc", sandbox=_sandbox_view())
    report = run(v1_host, example("sandbox", runtime="runsc"), cell)
    checks = by_id(report)
    for check_id in ("identity.uid", "identity.gid", "caps.bounding", "nnp", "mounts.rootfs"):
        assert checks[check_id].status == "reported", checks[check_id]
        assert checks[check_id].basis == "image"
    assert report.ok
    assert "reported" in report.to_json()["checks"][0]["status"]


def test_an_image_reading_weaker_than_the_record_fails_closed(v1_host: HostTree) -> None:
    _gvisor(v1_host)
    cell = target(runtime="runsc", sandbox=_sandbox_view(no_new_privs=False), sandbox_ps=RUNSC_PS)
    check = by_id(run(v1_host, example("sandbox", runtime="runsc"), cell))["nnp"]
    assert (check.status, check.basis) == ("mismatch", "image")
    assert "host side: process.noNewPrivileges true (configured)" in check.observed


def test_runsc_ps_showing_root_is_a_mismatch_whatever_the_image_says(v1_host: HostTree) -> None:
    _gvisor(v1_host)
    ps = RUNSC_PS.replace("\n1001  ", "\n0     ")
    cell = target(runtime="runsc", sandbox=_sandbox_view(), sandbox_ps=ps)
    check = by_id(run(v1_host, example("sandbox", runtime="runsc"), cell))["identity.uid"]
    assert (check.status, check.basis) == ("mismatch", "sandbox")


@pytest.mark.parametrize(("line", "status"), [("2\t1", "verified"), ("0\t0", "mismatch")])
def test_an_execd_process_is_read_on_the_host_under_runc(
    v1_host: HostTree, line: str, status: str
) -> None:
    mode, filters = line.split("\t")
    text = (v1_host.cell / "status").read_text()
    text = re.sub(r"Seccomp:\t\d+", f"Seccomp:\t{mode}", text)
    text = re.sub(r"Seccomp_filters:\t\d+", f"Seccomp_filters:\t{filters}", text)
    check = by_id(run(v1_host, example("sandbox"), target(exec_status=text)))["seccomp.exec"]
    assert (check.status, check.basis) == (status, "kernel")
    assert "/proc/4300/status" in check.source


def test_no_execd_process_is_unknown_not_verified(v1_host: HostTree) -> None:
    check = by_id(run(v1_host, example("sandbox"), target()))["seccomp.exec"]
    assert check.status == "unknown"


def test_gvisor_with_oci_seccomp_holds_the_profile_as_configured(v1_host: HostTree) -> None:
    _gvisor(v1_host)
    cell = target(runtime="runsc", sandbox=_sandbox_view())
    engine = EngineRecord(
        runtime="runsc", runtime_args=(*RUNSC_ARGS, "--oci-seccomp"), seccomp_profile=STRICT
    )
    cell = dataclasses.replace(cell, engine=engine)
    check = by_id(run(v1_host, example("sandbox", runtime="runsc"), cell))["seccomp.profile"]
    assert check.status == "configured"


def test_gvisor_without_its_view_is_unknown_not_passed(v1_host: HostTree) -> None:
    _gvisor(v1_host, record=False)
    cell = target(runtime="runsc", sandbox_error="could not read the sandbox's view (timed out)")
    checks = by_id(run(v1_host, example("sandbox", runtime="runsc"), cell))
    assert checks["identity.uid"].status == "unknown"
    assert "timed out" in checks["identity.uid"].why
    assert checks["cgroup.memory"].status == "verified"  # the host's cgroup files still tell
    # runsc's own record still tells what it was handed.
    _record(v1_host)
    checks = by_id(run(v1_host, example("sandbox", runtime="runsc"), cell))
    assert checks["nnp"].status == "configured"
    assert "image's reading: none" in checks["nnp"].observed


def test_report_json_is_plain_data(v1_host: HostTree) -> None:
    data = run(v1_host, example("sandbox"), target()).to_json()
    text = json.dumps(data)
    assert json.loads(text)["ok"] is True
    assert {"id", "status", "expected", "observed", "source", "basis", "why"} <= set(
        data["checks"][0]
    )


@pytest.mark.parametrize("mode", ["strict", "default"])
def test_expected_seccomp_is_never_unconfined_by_accident(v1_host: HostTree, mode: str) -> None:
    report = run(v1_host, example("sandbox", seccomp=mode), target(seccomp="unconfined"))
    assert by_id(report)["seccomp.profile"].status == "mismatch"
