"""What a spec becomes for Docker, without an engine."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentcell.cell.labels import LABEL_AGENT, LABEL_SPEC, LABEL_SPEC_HASH
from agentcell.cell.names import container_name
from agentcell.cell.network import tenant_network
from agentcell.cell.users import UNALLOCATED
from agentcell.errors import SpecError
from agentcell.policy import AdmittedSpec, admit
from agentcell.runtime.docker.translate import (
    RESOLV_CONF,
    BindMount,
    TenantAttachment,
    settings_for,
)
from agentcell.spec.load import load_paths, load_text
from agentcell.spec.model import AgentDocument
from tests.policies import AdmitAll

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
MINIMAL = """\
apiVersion: agentcell/v1
kind: Agent
metadata: {name: tiny, tenant: acme}
spec:
  image: agentcell/sandbox:0.1.0
"""


def admitted(text: str = MINIMAL) -> AdmittedSpec:
    (doc,) = load_text(text, file="tiny.yaml")
    return admit(doc, AdmitAll())


def test_admitted_spec_cannot_be_forged() -> None:
    spec = admitted()
    with pytest.raises(TypeError, match="admit"):
        AdmittedSpec(spec.doc, (), "forged", _key=object())


def test_minimal_spec_becomes_a_locked_down_container() -> None:
    kwargs = settings_for(admitted()).sdk_kwargs()
    assert kwargs["name"] == "agentcell_acme_tiny"
    assert kwargs["user"] == f"{UNALLOCATED}:{UNALLOCATED}"
    assert kwargs["cap_drop"] == ["ALL"]
    assert "cap_add" not in kwargs
    assert "no-new-privileges:true" in kwargs["security_opt"]
    assert kwargs["read_only"] is True
    assert kwargs["tmpfs"] == {
        "/tmp": f"size=67108864,mode=1777,uid={UNALLOCATED},gid={UNALLOCATED},noexec,nosuid,nodev"
    }
    assert kwargs["nano_cpus"] == 500_000_000
    assert kwargs["mem_limit"] == kwargs["memswap_limit"] == 256 * 2**20
    assert kwargs["pids_limit"] == 128
    assert kwargs["network_mode"] == "none"
    assert "pid_mode" not in kwargs
    assert kwargs["mounts"] == []
    assert kwargs["restart_policy"] == {"Name": "on-failure", "MaximumRetryCount": 5}
    assert kwargs["runtime"] == "runc"


def test_the_spec_travels_with_the_cell() -> None:
    spec = admitted()
    labels = settings_for(spec).labels
    assert AgentDocument.model_validate_json(labels[LABEL_SPEC]) == spec.doc.document


def test_spec_hash_changes_with_the_spec_only() -> None:
    first = settings_for(admitted()).labels[LABEL_SPEC_HASH]
    assert settings_for(admitted()).labels[LABEL_SPEC_HASH] == first
    changed = admitted(MINIMAL + "  resources: {pids: 64}\n")
    assert settings_for(changed).labels[LABEL_SPEC_HASH] != first


def test_extra_mounts_and_env_do_not_change_the_hash() -> None:
    spec = admitted()
    extra = settings_for(
        spec,
        extra_mounts=[BindMount(source="/run/x", target="/run/x", read_only=True)],
        extra_env={"TOKEN_FILE": "/run/x/token"},
    )
    plain = settings_for(spec)
    assert extra.labels[LABEL_SPEC_HASH] == plain.labels[LABEL_SPEC_HASH]
    assert [m["Target"] for m in extra.sdk_kwargs()["mounts"]] == ["/run/x"]
    assert extra.environment["TOKEN_FILE"] == "/run/x/token"


@pytest.mark.parametrize("example", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_docker_run_rendering_says_what_the_sdk_gets(example: Path) -> None:
    (doc,) = load_paths([example])
    settings = settings_for(admit(doc, AdmitAll()))
    argv = shlex.split(settings.docker_run_command())
    kwargs = settings.sdk_kwargs()

    def values(flag: str) -> list[str]:
        return [argv[i + 1] for i, word in enumerate(argv) if word == flag]

    assert values("--name") == [kwargs["name"]]
    assert values("--user") == [kwargs["user"]]
    assert values("--cap-drop") == ["ALL"]
    assert values("--network") == [kwargs["network_mode"]]
    assert values("--pids-limit") == [str(kwargs["pids_limit"])]
    assert values("--runtime") == [kwargs["runtime"]]
    assert values("--mount") == [
        f"type=bind,src={m['Source']},dst={m['Target']},readonly,"
        "bind-propagation=private,bind-nonrecursive"
        for m in kwargs["mounts"]
    ]
    assert ("--read-only" in argv) is kwargs["read_only"]
    assert float(values("--cpus")[0]) * 1e9 == kwargs["nano_cpus"]
    assert sorted(v.split(":", 1)[0] for v in values("--tmpfs")) == sorted(kwargs["tmpfs"])
    assert argv[-1] == kwargs["image"] or kwargs.get("command")


def test_host_access_is_rendered_read_only() -> None:
    spec = admitted(
        MINIMAL
        + "  host:\n    mounts:\n      - {source: /proc, target: /host/proc}\n"
        + "    docker_socket: true\n    pid: true\n"
    )
    kwargs = settings_for(spec).sdk_kwargs()
    # Non-recursive: the host's submounts (e.g. /proc/sys/fs/binfmt_misc, /sys/fs/cgroup/*)
    # do not come along, so they cannot be writable under a read-only top mount.
    assert kwargs["mounts"] == [
        {
            "Type": "bind",
            "Source": source,
            "Target": target,
            "ReadOnly": True,
            "BindOptions": {"Propagation": "private", "NonRecursive": True},
        }
        for source, target in (
            ("/proc", "/host/proc"),
            ("/var/run/docker.sock", "/var/run/docker.sock"),
        )
    ]
    assert kwargs["pid_mode"] == "host"


def test_network_tenant_joins_the_tenants_one_network_under_the_agent_name() -> None:
    settings = settings_for(admitted(MINIMAL + "  network: tenant\n"))
    assert settings.network_mode == settings.internal_network == "agentcell_acme"
    kwargs = settings.sdk_kwargs()
    assert "network_mode" not in kwargs
    assert kwargs["network"] == "agentcell_acme"
    assert kwargs["networking_config"]["agentcell_acme"]["Aliases"] == [
        settings.labels[LABEL_AGENT]
    ]
    # Without the network's gateway (render, host checks) nothing of the attachment is set.
    assert settings.dns == ()
    assert all(mount.target != RESOLV_CONF for mount in settings.mounts)


def test_a_tenant_attachment_sends_dns_and_proxies_to_the_gateway_only() -> None:
    doc = admitted(MINIMAL + "  network: tenant\n")
    attachment = TenantAttachment(
        gateway="172.30.0.1", resolv_conf="/run/agentcell/net/acme/resolv.conf", no_proxy=("a", "b")
    )
    settings = settings_for(doc, attachment=attachment)
    plain = settings_for(doc)
    assert settings.dns == ("172.30.0.1",)
    assert settings.sdk_kwargs()["dns"] == ["172.30.0.1"]
    resolv = [mount for mount in settings.mounts if mount.target == RESOLV_CONF]
    assert [(m.source, m.read_only) for m in resolv] == [
        ("/run/agentcell/net/acme/resolv.conf", True)
    ]
    assert settings.environment["HTTPS_PROXY"] == "http://172.30.0.1:3128"
    assert settings.environment["http_proxy"] == "http://172.30.0.1:3128"
    assert settings.environment["NO_PROXY"] == "a,b"
    # agentcell's additions are not the spec's: the spec hash and spec label stay the same.
    assert settings.labels[LABEL_SPEC_HASH] == plain.labels[LABEL_SPEC_HASH]
    assert settings.labels[LABEL_SPEC] == plain.labels[LABEL_SPEC]
    assert "--dns" in settings.docker_run_argv()


def test_custom_seccomp_profile_is_inlined(tmp_path: Path) -> None:
    profile = {"defaultAction": "SCMP_ACT_ERRNO", "syscalls": []}
    (tmp_path / "p.json").write_text(json.dumps(profile))
    spec_file = tmp_path / "a.yaml"
    spec_file.write_text(MINIMAL + "  security: {seccomp: p.json}\n")
    (doc,) = load_paths([spec_file])
    settings = settings_for(admit(doc, AdmitAll()))
    inline = [o for o in settings.security_opt if o.startswith("seccomp=")]
    assert [json.loads(o.removeprefix("seccomp=")) for o in inline] == [profile]
    assert f"seccomp={tmp_path}/p.json" in settings.docker_run_command()


def test_unreadable_seccomp_profile_names_the_spec_line(tmp_path: Path) -> None:
    spec_file = tmp_path / "a.yaml"
    spec_file.write_text(MINIMAL + "  security:\n    seccomp: missing.json\n")
    (doc,) = load_paths([spec_file])
    with pytest.raises(SpecError) as caught:
        settings_for(admit(doc, AdmitAll()))
    assert caught.value.where is not None
    assert (caught.value.where.line, caught.value.where.field) == (7, "spec.security.seccomp")


def test_allocated_uid_is_the_cells_user_and_owns_its_tmpfs() -> None:
    settings = settings_for(admitted(), uid=1_000_000_042)
    assert settings.user == "1000000042:1000000042"
    assert settings.labels["org.agentcell.uid"] == "1000000042"
    assert "uid=1000000042,gid=1000000042" in settings.tmpfs["/tmp"]


def test_pinned_uid_wins_over_an_allocation() -> None:
    pinned = admitted(MINIMAL + "  security: {user: 2000, group: 3000}\n")
    assert settings_for(pinned, uid=1_000_000_042).user == "2000:3000"


@given(
    st.from_regex(r"[a-z0-9]([-a-z0-9]{0,10}[a-z0-9])?", fullmatch=True),
    st.from_regex(r"[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?", fullmatch=True),
    st.from_regex(r"[a-z0-9]([-a-z0-9]{0,10}[a-z0-9])?", fullmatch=True),
    st.from_regex(r"[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?", fullmatch=True),
)
def test_cell_and_network_names_are_injective(t1: str, n1: str, t2: str, n2: str) -> None:
    if (t1, n1) != (t2, n2):
        assert container_name(t1, n1) != container_name(t2, n2)
        assert (tenant_network(t1) == tenant_network(t2)) == (t1 == t2)


@pytest.mark.parametrize(
    ("first", "second"), [(("ux", "a-x"), ("ux-a", "x")), (("a", "b-c"), ("a-b", "c"))]
)
def test_names_that_collided_under_the_dash_scheme_are_apart(
    first: tuple[str, str], second: tuple[str, str]
) -> None:
    assert container_name(*first) != container_name(*second)


def test_logs_are_bounded_and_carry_the_tenant() -> None:
    settings = settings_for(admitted())
    log = settings.sdk_kwargs()["log_config"]
    assert log["Type"] == "json-file"
    assert log["Config"]["labels"] == "org.agentcell.tenant,org.agentcell.agent"
    assert log["Config"]["max-size"] == "10m" and log["Config"]["max-file"] == "3"
    argv = settings.docker_run_argv()
    assert "--log-opt" in argv and "labels=org.agentcell.tenant,org.agentcell.agent" in argv
