"""Every rule in the catalogue trips on the cell it is about and passes the secure one.

Each case names a rule, the change that trips it (to the secure spec where a spec can express
it, else to the secure container's inspect document), a change of the same setting that
passes, and the severity the restricted preset gives the finding.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import pytest

from agentcell.cell.paths import PROVIDED_TARGETS
from agentcell.policy.admission import AllOf, Severity
from agentcell.policy.presets import TenantPolicy, preset
from agentcell.policy.rules import CATALOGUE, RULE_IDS, Rule, rule
from agentcell.policy.view import CellView

Source = Literal["spec", "container"]
RESTRICTED = preset("restricted")


@dataclass(frozen=True)
class Case:
    rule: str
    source: Source
    trips: Mapping[str, Any]
    passes: Mapping[str, Any]
    severity: Severity
    where: str
    """The field the finding must point at."""


def sec(**fields: Any) -> dict[str, Any]:
    return {"spec": {"security": fields}}


def res(**fields: Any) -> dict[str, Any]:
    return {"spec": {"resources": fields}}


def mounts(*items: dict[str, Any]) -> dict[str, Any]:
    return {"spec": {"host": {"mounts": list(items)}}}


def host(**fields: Any) -> dict[str, Any]:
    return {"HostConfig": fields}


def bind(source: str, *, rw: bool, propagation: str = "rprivate") -> dict[str, Any]:
    return {
        "Mounts": [
            {
                "Type": "bind",
                "Source": source,
                "Destination": "/mnt/x",
                "RW": rw,
                "Propagation": propagation,
            }
        ]
    }


CASES = [
    Case("AC-001", "container", host(Privileged=True), host(Privileged=False), "error",
         "HostConfig.Privileged"),
    Case("AC-002", "container", host(CapDrop=None), host(CapDrop=["all"]), "error",
         "HostConfig.CapDrop"),
    Case("AC-003", "spec", sec(capabilities=["SYS_ADMIN"]), sec(capabilities=["CHOWN"]), "error",
         "spec.security.capabilities"),
    Case("AC-003", "container", host(CapAdd=["CAP_NET_RAW"]), host(CapAdd=["KILL"]), "error",
         "HostConfig.CapAdd"),
    Case("AC-004", "spec", sec(capabilities=["NET_BIND_SERVICE"]), sec(capabilities=[]),
         "warning", "spec.security.capabilities"),
    Case("AC-005", "spec", sec(user=0), sec(user=65534), "error", "spec.security.user"),
    Case("AC-005", "container", {"Config": {"User": ""}}, {"Config": {"User": "1001"}}, "error",
         "Config.User"),
    Case("AC-005", "container", {"Config": {"User": "nobody"}}, {"Config": {"User": "1:1"}},
         "warning", "Config.User"),
    Case("AC-006", "spec", sec(no_new_privileges=False), sec(no_new_privileges=True), "error",
         "spec.security.no_new_privileges"),
    Case("AC-006", "container", host(SecurityOpt=["no-new-privileges:false"]),
         host(SecurityOpt=["no-new-privileges"]), "error", "HostConfig.SecurityOpt"),
    Case("AC-007", "spec", sec(read_only_rootfs=False), sec(read_only_rootfs=True), "error",
         "spec.security.read_only_rootfs"),
    Case("AC-008", "spec", sec(seccomp="unconfined"), sec(seccomp="default"), "error",
         "spec.security.seccomp"),
    Case("AC-008", "container", host(SecurityOpt=["seccomp:unconfined"]), host(SecurityOpt=[]),
         "error", "HostConfig.SecurityOpt"),
    Case("AC-009", "spec", sec(seccomp="default"), sec(seccomp="strict"), "warning",
         "spec.security.seccomp"),
    Case("AC-009", "spec", sec(seccomp="/etc/agentcell/profile.json"), sec(runtime="runsc"),
         "info", "spec.security.seccomp"),
    Case("AC-009", "container", host(SecurityOpt=["seccomp=" + json.dumps(
        {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": []})]), host(SecurityOpt=[
        "seccomp=" + json.dumps({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
            {"names": ["io_uring_setup", "io_uring_enter", "io_uring_register"],
             "action": "SCMP_ACT_ERRNO"}]})]), "warning", "HostConfig.SecurityOpt"),
    Case("AC-010", "container", host(SecurityOpt=["apparmor=unconfined"]),
         {"AppArmorProfile": "agentcell-probe"}, "warning", "AppArmorProfile"),
    Case("AC-010", "container", {"AppArmorProfile": ""}, {"AppArmorProfile": "docker-default"},
         "info", "AppArmorProfile"),
    Case("AC-011", "container", host(Memory=0, MemorySwap=0), host(Memory=64 * 2**20,
         MemorySwap=64 * 2**20), "error", "HostConfig.Memory"),
    Case("AC-012", "spec", res(memory="256m", memory_swap="512m"),
         res(memory="256m", memory_swap="256m"), "warning", "spec.resources.memory_swap"),
    Case("AC-012", "container", host(MemorySwap=-1), host(MemorySwap=256 * 2**20), "warning",
         "HostConfig.MemorySwap"),
    Case("AC-012", "container", host(MemorySwap=0), host(MemorySwap=256 * 2**20), "warning",
         "HostConfig.MemorySwap"),
    Case("AC-013", "container", host(NanoCpus=0), host(NanoCpus=0, CpuQuota=50_000,
         CpuPeriod=100_000), "error", "HostConfig.NanoCpus"),
    Case("AC-014", "container", host(PidsLimit=None), host(PidsLimit=64), "error",
         "HostConfig.PidsLimit"),
    Case("AC-014", "container", host(PidsLimit=-1), host(PidsLimit=1), "error",
         "HostConfig.PidsLimit"),
    Case("AC-015", "container", host(Tmpfs={"/run": "mode=755"}), host(Tmpfs={"/run": "size=1m"}),
         "warning", "HostConfig.Tmpfs./run"),
    Case("AC-015", "container", host(Mounts=[{"Type": "tmpfs", "Target": "/scratch"}]),
         host(Mounts=[{"Type": "tmpfs", "Target": "/scratch",
                       "TmpfsOptions": {"SizeBytes": 1024}}]), "warning",
         "HostConfig.Mounts[0]"),
    Case("AC-016", "spec", {"spec": {"host": {"network": True}}},
         {"spec": {"host": {"network": False}}}, "error", "spec.host.network"),
    Case("AC-016", "container", host(NetworkMode="host"), host(NetworkMode="agentcell-t1-net"),
         "error", "HostConfig.NetworkMode"),
    Case("AC-017", "spec", {"spec": {"host": {"pid": True}}}, {"spec": {"host": {"pid": False}}},
         "error", "spec.host.pid"),
    Case("AC-018", "container", host(IpcMode="host"), host(IpcMode="shareable"), "error",
         "HostConfig.IpcMode"),
    Case("AC-019", "container", host(UTSMode="host"), host(UTSMode=""), "error",
         "HostConfig.UTSMode"),
    Case("AC-020", "container", host(UsernsMode="host"), host(UsernsMode=""), "error",
         "HostConfig.UsernsMode"),
    Case("AC-021", "container", host(Devices=[{"PathOnHost": "/dev/kvm",
         "PathInContainer": "/dev/kvm", "CgroupPermissions": "rwm"}]), host(Devices=None),
         "error", "HostConfig.Devices[0]"),
    Case("AC-022", "spec", mounts({"source": "/var/run/docker.sock", "target": "/d.sock",
         "read_only": False}), mounts({"source": "/srv/data", "target": "/data"}), "error",
         "spec.host.mounts[0]"),
    Case("AC-022", "container", bind("/run/", rw=True), bind("/srv/run", rw=True), "error",
         "Mounts[0]"),
    Case("AC-023", "spec", {"spec": {"host": {"docker_socket": True}}},
         {"spec": {"host": {"docker_socket": False}}}, "error", "spec.host.docker_socket"),
    Case("AC-023", "container", bind("/run/containerd/containerd.sock", rw=False),
         bind("/run/containerd/config", rw=False), "error", "Mounts[0]"),
    Case("AC-024", "spec", mounts({"source": "/etc/cron.d", "target": "/cron",
         "read_only": False}), mounts({"source": "/etc/cron.d", "target": "/cron"}), "error",
         "spec.host.mounts[0]"),
    Case("AC-024", "container", bind("/", rw=True), bind("/srv", rw=True), "error",
         "Mounts[0]"),
    Case("AC-025", "spec", mounts({"source": "/proc", "target": "/host/proc"}),
         mounts({"source": "/srv/proc", "target": "/host/proc"}), "error",
         "spec.host.mounts[0]"),
    Case("AC-025", "container", bind("/var", rw=False), bind("/var/log", rw=False), "error",
         "Mounts[0]"),
    Case("AC-026", "spec", mounts({"source": "/srv/data", "target": "/data",
         "read_only": False}), mounts({"source": "/srv/data", "target": "/data"}), "warning",
         "spec.host.mounts[0]"),
    Case("AC-027", "spec", mounts({"source": "/var/log/app", "target": "/logs"}), {}, "warning",
         "spec.host.mounts[0]"),
    Case("AC-028", "container", bind("/srv/data", rw=False, propagation="rshared"),
         bind("/srv/data", rw=False, propagation="rslave"), "warning", "Mounts[0]"),
    Case("AC-029", "spec", {"spec": {"image": "agentcell/sandbox:0.1.0"}},
         {"spec": {"image": "registry.local:5000/sandbox:0.1.0@" + "sha256:" + "cd" * 32}},
         "warning", "spec.image"),
    Case("AC-029", "container", {"Config": {"Image": "nginx"}}, {"Config": {"Image": "e" * 64}},
         "warning", "Config.Image"),
    Case("AC-030", "container", {"Config": {"Healthcheck": {"Test": ["NONE"]}}},
         {"Config": {"Healthcheck": {"Test": ["CMD-SHELL", "true"]}}}, "warning",
         "Config.Healthcheck"),
    Case("AC-030", "spec", {"spec": {"healthcheck": None}}, {}, "info", "spec.healthcheck"),
    Case("AC-031", "spec", {"spec": {"restart": {"policy": "always"}}},
         {"spec": {"restart": {"policy": "no"}}}, "warning", "spec.restart.policy"),
    Case("AC-031", "container", host(RestartPolicy={"Name": "on-failure",
         "MaximumRetryCount": 10}), host(RestartPolicy={"Name": "", "MaximumRetryCount": 0}),
         "info", "HostConfig.RestartPolicy.MaximumRetryCount"),
    Case("AC-032", "container", host(PortBindings={"8080/tcp": [{"HostIp": "",
         "HostPort": "8080"}]}), host(PortBindings={"8080/tcp": [{"HostIp": "127.0.0.1",
         "HostPort": "8080"}]}), "warning", "HostConfig.PortBindings.8080/tcp[0]"),
    Case("AC-033", "container", host(PortBindings={"80/tcp": [{"HostIp": "127.0.0.1",
         "HostPort": "80"}]}), host(PortBindings={"80/tcp": [{"HostIp": "127.0.0.1",
         "HostPort": ""}]}), "warning", "HostConfig.PortBindings.80/tcp[0]"),
    Case("AC-034", "container", host(NetworkMode="default"), host(NetworkMode="none"), "warning",
         "HostConfig.NetworkMode"),
    Case("AC-036", "spec", {"spec": {"exceptions": [{"rule": "AC-999",
         "reason": "a typo for a real rule id"}]}}, {"spec": {"exceptions": [{"rule": "AC-009",
         "reason": "profile ships in a later release"}]}}, "warning", "spec.exceptions[0]"),
    Case("AC-038", "spec", sec(user=1001, group=1001), {}, "warning", "spec.security.user"),
    Case("AC-040", "spec", mounts({"source": "/var/lib/agentcell/controlplane",
         "target": "/state"}), mounts({"source": "/var/lib/agentcellar", "target": "/state"}),
         "error", "spec.host.mounts[0]"),
    Case("AC-040", "spec", mounts({"source": "/var/lib", "target": "/state"}),
         mounts({"source": "/var/lib/app", "target": "/state"}), "error",
         "spec.host.mounts[0]"),
    Case("AC-040", "container", bind("/run/agentcell/identity/b/rep", rw=False),
         bind("/run/agentcellx", rw=False), "error", "Mounts[0]"),
]  # fmt: skip


def view_for(
    case: Case,
    patch: Mapping[str, Any],
    spec_view: Callable[..., CellView],
    container_view: Callable[..., CellView],
) -> CellView:
    return spec_view(patch) if case.source == "spec" else container_view(patch)


def case_id(case: Case) -> str:
    return f"{case.rule}-{case.source}-{case.severity}"


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_rule_trips(
    case: Case, spec_view: Callable[..., CellView], container_view: Callable[..., CellView]
) -> None:
    view = view_for(case, case.trips, spec_view, container_view)
    found = [f for f in RESTRICTED.judge(view) if f.rule == case.rule]
    assert found, f"{case.rule} did not trip on {dict(case.trips)}"
    assert {f.severity for f in found} == {case.severity}
    assert found[0].where.field == case.where
    assert found[0].fix and found[0].message


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_rule_passes(
    case: Case, spec_view: Callable[..., CellView], container_view: Callable[..., CellView]
) -> None:
    view = view_for(case, case.passes, spec_view, container_view)
    assert [f for f in RESTRICTED.judge(view) if f.rule == case.rule] == []


def test_every_rule_has_a_case_or_a_dedicated_test() -> None:
    # combinators, tenant requirements and image labels, tested below
    dedicated = {"AC-000", "AC-035", "AC-037", "AC-039", "AC-041", "AC-042", "AC-043"}
    assert {case.rule for case in CASES} | dedicated == RULE_IDS


def test_a_tenant_network_without_its_host_rules_trips_ac_042(
    spec_view: Callable[..., CellView], container_view: Callable[..., CellView]
) -> None:
    plain = container_view({})
    altered = dataclasses.replace(plain, host_rules='missing rule inet input: iifname "ac-t" drop')
    (found,) = [f for f in RESTRICTED.judge(altered) if f.rule == "AC-042"]
    assert found.severity == "error"
    assert "missing rule" in found.message
    assert found.where.field == "HostConfig.NetworkMode"
    assert "agentcell net check" in (found.fix or "")
    assert [f for f in RESTRICTED.judge(plain) if f.rule == "AC-042"] == []
    assert [f for f in RESTRICTED.judge(spec_view({})) if f.rule == "AC-042"] == []


def test_secure_baselines_are_clean(
    spec_view: Callable[..., CellView], container_view: Callable[..., CellView]
) -> None:
    assert list(RESTRICTED.judge(spec_view())) == []
    assert list(RESTRICTED.judge(container_view())) == []


def test_empty_combination_trips_ac_000(spec_view: Callable[..., CellView]) -> None:
    (finding,) = AllOf(()).judge(spec_view())
    assert (finding.rule, finding.severity) == ("AC-000", "error")


def test_required_runtime_trips_ac_035(spec_view: Callable[..., CellView]) -> None:
    sandboxed = preset("restricted", tenant=TenantPolicy(required_runtime="runsc"))
    (finding,) = [f for f in sandboxed.judge(spec_view()) if f.rule == "AC-035"]
    assert "requires runsc" in finding.message
    assert finding.where.field == "spec.security.runtime"
    assert [f for f in sandboxed.judge(spec_view(sec(runtime="runsc"))) if f.rule == "AC-035"] == []


def test_no_runtime_requirement_means_ac_035_does_not_apply(
    spec_view: Callable[..., CellView],
) -> None:
    (verdict,) = [v for v in RESTRICTED.verdicts(spec_view()) if v.rule.id == "AC-035"]
    assert not verdict.applicable


def test_privileged_container_trips_everything_it_implies(
    container_view: Callable[..., CellView],
) -> None:
    view = container_view(host(Privileged=True))
    assert {"AC-001", "AC-008"} <= {f.rule for f in RESTRICTED.judge(view)}
    assert "AC-010" not in {f.rule for f in RESTRICTED.judge(view)}


def test_each_dangerous_capability_is_reported_separately(
    spec_view: Callable[..., CellView],
) -> None:
    view = spec_view(sec(capabilities=["SYS_ADMIN", "NET_RAW", "CHOWN"]))
    messages = [f.message for f in RESTRICTED.judge(view) if f.rule == "AC-003"]
    assert len(messages) == 2
    assert any("SYS_ADMIN" in m for m in messages) and any("NET_RAW" in m for m in messages)


def test_directory_holding_the_socket_counts_as_the_socket(
    container_view: Callable[..., CellView],
) -> None:
    view = container_view(bind("/var/run", rw=False))
    rules = {f.rule for f in RESTRICTED.judge(view)}
    assert {"AC-023", "AC-025"} <= rules


def test_spec_finding_points_at_the_written_line(spec_doc: Callable[..., Any]) -> None:
    doc = spec_doc(mounts({"source": "/proc", "target": "/host/proc"}))
    (finding,) = [f for f in RESTRICTED.evaluate(doc) if f.rule == "AC-025"]
    assert finding.where.file == "agent.yaml"
    assert finding.where.line == doc.field_lines[("spec", "host", "mounts", 0)]


def test_defaulted_field_points_at_its_nearest_written_ancestor(
    spec_doc: Callable[..., Any],
) -> None:
    doc = spec_doc(sec(seccomp="default"))
    (finding,) = [f for f in RESTRICTED.evaluate(doc) if f.rule == "AC-009"]
    assert finding.where.line == doc.field_lines[("spec", "security", "seccomp")]


def test_container_finding_names_container_and_inspect_field(
    container_view: Callable[..., CellView],
) -> None:
    (finding,) = RESTRICTED.judge(container_view(host(CapAdd=["SYS_PTRACE"])))
    assert str(finding.where) == "container agentcell-t1-probe: HostConfig.CapAdd"


@pytest.mark.parametrize("entry", CATALOGUE, ids=lambda r: r.id)
def test_catalogue_entries_explain_themselves(entry: Rule) -> None:
    assert entry.title and entry.rationale.endswith(".") and entry.remediation.endswith(".")
    assert all(control.count(".") == 1 for control in entry.cis)
    assert 0.0 <= entry.security_severity <= 10.0
    assert rule(entry.id) is entry


def test_rule_ids_are_unique_and_well_formed() -> None:
    assert len(RULE_IDS) == len(CATALOGUE)
    with pytest.raises(ValueError, match="does not match"):
        Rule(
            id="ac-1",
            severity="error",
            title="t",
            rationale="r.",
            remediation="f.",
            check=lambda view: [],
        )


def test_identity_mounts_agentcell_provides_are_not_host_access(
    spec_view: Callable[..., CellView], container_view: Callable[..., CellView]
) -> None:
    view = spec_view({"spec": {"identity": True}})
    assert [m.target for m in view.host_mounts if m.provided] == list(PROVIDED_TARGETS)
    assert list(RESTRICTED.judge(view)) == []
    identity = {"Type": "bind", "Source": "/run/agentcell/identity/t1/probe", "RW": False,
                "Destination": "/run/agentcell/identity"}  # fmt: skip
    assert list(RESTRICTED.judge(container_view({"Mounts": [identity]}))) == []


@pytest.mark.parametrize(
    ("labels", "mount", "rule"),
    [
        ({"org.agentcell.managed": "no"}, {"RW": False}, "AC-025"),  # strangers cannot claim them
        (None, {"RW": True}, "AC-024"),  # a writable one is judged like any other
        (None, {"RW": False, "Destination": "/run/agentcell/etc", "Source": "/etc"}, "AC-025"),
    ],
)
def test_only_agentcell_cells_get_provided_mounts(
    container_view: Callable[..., CellView],
    labels: dict[str, str] | None,
    mount: dict[str, Any],
    rule: str,
) -> None:
    bind = {"Type": "bind", "Source": "/run/agentcell/identity/t1/probe",
            "Destination": "/run/agentcell/identity", **mount}  # fmt: skip
    patch: dict[str, Any] = {"Mounts": [bind]}
    if labels is not None:
        patch["Config"] = {"Labels": labels}
    assert rule in {f.rule for f in RESTRICTED.judge(container_view(patch))}


def test_provided_targets_are_where_identity_mounts() -> None:
    from agentcell.cell.paths import CELL_IDENTITY_DIR, CELL_SOCKET_DIR

    assert {CELL_IDENTITY_DIR, CELL_SOCKET_DIR} == set(PROVIDED_TARGETS)


def test_image_with_agentcell_labels_trips_ac_039_and_is_no_cell() -> None:
    from agentcell.runtime.docker.container_view import view_of_container
    from tests.unit.policy.conftest import SECURE_INSPECT, merged

    forged = {"org.agentcell.managed": "true", "org.agentcell.exceptions": "AC-003,AC-009"}
    document = merged(SECURE_INSPECT, {"Config": {"Labels": forged}})
    observed = view_of_container(document, image_labels=forged)
    assert not observed.managed
    assert observed.view.tenant is None and observed.view.exceptions == ()
    (finding,) = [f for f in RESTRICTED.judge(observed.view) if f.rule == "AC-039"]
    assert finding.severity == "error"
    assert "org.agentcell.exceptions" in finding.message
    genuine = view_of_container(document, image_labels={"maintainer": "x"})
    assert genuine.managed
    assert [f for f in RESTRICTED.judge(genuine.view) if f.rule == "AC-039"] == []


def test_agentcell_state_under_agentcell_home_trips_ac_040(
    spec_view: Callable[..., CellView], monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    monkeypatch.setenv("AGENTCELL_HOME", str(tmp_path))
    view = spec_view(mounts({"source": f"{tmp_path}/run/identity", "target": "/x"}))
    assert [f.rule for f in RESTRICTED.judge(view) if f.rule == "AC-040"] == ["AC-040"]
