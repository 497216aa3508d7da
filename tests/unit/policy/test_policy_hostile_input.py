"""Random and hostile input never crashes the loader, the policy or the audit translation:
every failure is an agentcell error that says where, and every verdict is consistent."""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from yaml.reader import Reader

from agentcell.cell.paths import ENGINE_SOCKETS
from agentcell.errors import AdmissionError, BackendError, SpecError
from agentcell.policy import admit
from agentcell.policy.admission import apply_exceptions
from agentcell.policy.lint import lint
from agentcell.policy.presets import preset
from agentcell.policy.rules import RULE_IDS
from agentcell.policy.view import SENSITIVE_HOST_PATHS, view_of_spec
from agentcell.runtime.docker.container_view import view_of_container
from agentcell.spec.load import SpecDocument, load_text
from agentcell.spec.model import CAPABILITIES

RESTRICTED = preset("restricted")
MONITORING = preset("monitoring-agent")
FIELDS = [
    "apiVersion", "kind", "metadata", "spec", "name", "tenant", "labels", "image", "command",
    "args", "env", "resources", "security", "host", "network", "restart", "healthcheck",
    "exceptions", "cpus", "memory", "memory_swap", "pids", "tmpfs", "path", "size", "exec",
    "user", "group", "capabilities", "read_only_rootfs", "no_new_privileges", "seccomp",
    "runtime", "mounts", "source", "target", "read_only", "docker_socket", "pid", "policy",
    "max_retries", "interval", "timeout", "retries", "start_period", "rule", "reason",
]  # fmt: skip
HOSTILE = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.sampled_from(["/", "/proc", "0", "-1", "1e999", "ALL", "SYS_ADMIN", "unconfined", "64m"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(FIELDS), st.text(max_size=8)), inner, max_size=5),
    ),
    max_leaves=25,
)


def located(error: SpecError) -> None:
    for problem in error.problems or (error,):
        assert problem.where is not None, problem.diagnostics()
        assert problem.where.file == "fuzz.yaml"
        assert problem.what


def judged(doc: SpecDocument) -> None:
    for policy in (RESTRICTED, MONITORING):
        findings = list(policy.evaluate(doc))
        assert all(f.rule in RULE_IDS and f.where.file == "fuzz.yaml" for f in findings)
        assert all(f.where.line is not None and f.where.line >= 1 for f in findings)
        blocking = [f for f in apply_exceptions(doc, findings) if f.blocking]
        if blocking:
            with pytest.raises(AdmissionError) as refused:
                admit(doc, policy)
            assert all(f.rule in refused.value.what for f in blocking)
        else:
            assert not any(f.blocking for f in admit(doc, policy).findings)


def admitted_exceptions(doc: SpecDocument) -> set[str]:
    return {exception.rule for exception in doc.document.spec.exceptions}


# PyYAML's reader refuses control characters before spec.load's error handling starts (see
# the xfail case below); until that is fixed there, the fuzzer keeps to printable text.
printable_text = st.text(max_size=300).filter(lambda t: not Reader.NON_PRINTABLE.search(t))


@HOSTILE
@given(printable_text)
def test_any_text_loads_or_fails_with_a_location(text: str) -> None:
    try:
        docs = load_text(text, file="fuzz.yaml")
    except SpecError as error:
        located(error)
        return
    for doc in docs:
        judged(doc)


@HOSTILE
@given(
    st.fixed_dictionaries(
        {
            "apiVersion": st.sampled_from(["agentcell/v1", "v1", 1]),
            "kind": st.just("Agent"),
            "metadata": values,
            "spec": values,
        }
    )
)
def test_any_structure_loads_or_fails_with_a_location(document: dict[str, Any]) -> None:
    text = yaml.safe_dump(document)
    try:
        docs = load_text(text, file="fuzz.yaml")
    except SpecError as error:
        located(error)
        return
    for doc in docs:
        judged(doc)


host_paths = st.one_of(
    st.sampled_from([*SENSITIVE_HOST_PATHS, *ENGINE_SOCKETS, "/srv/data", "/var/log", "/var"]),
    st.text(alphabet=string.ascii_lowercase + "/._", min_size=1, max_size=20).map(
        lambda s: "/" + s
    ),
)
mount = st.fixed_dictionaries(
    {
        "source": host_paths,
        "target": host_paths.map(lambda p: "/host" + p.rstrip("/")),
        "read_only": st.booleans(),
    }
)
hostile_spec = st.fixed_dictionaries(
    {
        "image": st.sampled_from(["agentcell/sandbox:0.1.0", "x@sha256:" + "a" * 64, "nginx"]),
        "security": st.fixed_dictionaries(
            {
                "user": st.integers(min_value=0, max_value=2**31 - 1),
                "capabilities": st.lists(st.sampled_from(sorted(CAPABILITIES)), max_size=4),
                "read_only_rootfs": st.booleans(),
                "no_new_privileges": st.booleans(),
                "seccomp": st.sampled_from(["default", "strict", "unconfined", "p.json"]),
                "runtime": st.sampled_from(["runc", "crun", "runsc"]),
            }
        ),
        "host": st.fixed_dictionaries(
            {
                "mounts": st.lists(mount, max_size=3, unique_by=lambda m: m["target"]),
                "docker_socket": st.booleans(),
                "pid": st.booleans(),
                "network": st.booleans(),
            }
        ),
        "restart": st.sampled_from(
            [{"policy": "always"}, {"policy": "no"}, {"policy": "on-failure", "max_retries": 0}]
        ),
        "exceptions": st.lists(
            st.fixed_dictionaries(
                {
                    "rule": st.sampled_from([*sorted(RULE_IDS), "AC-999", "XX-001"]),
                    "reason": st.just("a reason long enough"),
                }
            ),
            max_size=3,
        ),
    }
)


@HOSTILE
@given(hostile_spec)
def test_hostile_specs_are_judged_consistently(spec: dict[str, Any]) -> None:
    document = {
        "apiVersion": "agentcell/v1",
        "kind": "Agent",
        "metadata": {"name": "fuzz"},
        "spec": spec,
    }
    try:
        (doc,) = load_text(yaml.safe_dump(document), file="fuzz.yaml")
    except SpecError as error:
        located(error)  # e.g. a host mount over the /tmp tmpfs, or host.network with a network
        return
    judged(doc)
    view = view_of_spec(doc)
    rules = {f.rule for f in RESTRICTED.judge(view)}
    if spec["security"]["user"] == 0:
        assert "AC-005" in rules
    if spec["host"]["docker_socket"]:
        assert "AC-023" in rules
    if any(m.engine_socket and not m.read_only for m in view.host_mounts):
        assert "AC-022" in rules
    if "AC-005" in rules and "AC-005" not in admitted_exceptions(doc):
        with pytest.raises(AdmissionError):
            admit(doc, RESTRICTED)


INSPECT_KEYS = [
    "Privileged", "CapAdd", "CapDrop", "ReadonlyRootfs", "SecurityOpt", "Runtime", "Memory",
    "MemorySwap", "NanoCpus", "CpuQuota", "CpuPeriod", "PidsLimit", "Tmpfs", "Mounts", "PidMode",
    "NetworkMode", "IpcMode", "UTSMode", "UsernsMode", "Devices", "RestartPolicy", "PortBindings",
]  # fmt: skip


@HOSTILE
@given(
    st.dictionaries(st.sampled_from(INSPECT_KEYS), values, max_size=8),
    st.dictionaries(st.sampled_from(["User", "Image", "Labels", "Healthcheck"]), values),
    values,
)
def test_any_inspect_document_translates_or_fails_clearly(
    host: dict[str, Any], config: dict[str, Any], mounts: Any
) -> None:
    document = {
        "Id": "f" * 64,
        "Name": "/fuzz",
        "HostConfig": host,
        "Config": config,
        "Mounts": mounts,
    }
    refusal: str | None
    try:
        observed = view_of_container(document)
    except BackendError as error:
        refusal = error.what
    else:
        refusal = None
    if refusal is not None:
        assert "cannot read" in refusal
        return
    for finding in RESTRICTED.judge(observed.view):
        assert str(finding.where).startswith("container fuzz")


@pytest.mark.parametrize(
    "text",
    [
        "a: &a [*a]\n",  # a self-referencing alias
        "x: &x [1,1,1,1,1,1,1,1,1]\n"
        + "".join(
            f"x{i}: &x{i} [*x{i - 1 if i else ''},*x{i - 1 if i else ''}]\n" for i in range(1, 40)
        ),
        "[" * 5000 + "]" * 5000,
        "!!python/object/apply:os.system ['true']\n",
        "apiVersion: agentcell/v1\nkind: Agent\n---\n" * 50,
        "\x00\x01binary",
        "metadata:\n  name: a\nmetadata:\n  name: b\n",
    ],
)
def test_hostile_yaml_is_a_located_spec_error(text: str) -> None:
    with pytest.raises(SpecError) as caught:
        load_text(text, file="fuzz.yaml")
    located(caught.value)


def test_lint_reports_control_characters_as_bad_input(tmp_path: Path) -> None:
    (tmp_path / "good.yaml").write_text(
        "apiVersion: agentcell/v1\nkind: Agent\nmetadata: {name: ok}\nspec: {image: a/b:1}\n"
    )
    (tmp_path / "bad.yaml").write_text("apiVersion: agentcell/v1\n\x1f\n")
    report = lint([tmp_path], RESTRICTED)
    assert report.exit_code() == 2
    assert [r.doc.name for r in report.results] == ["ok"]
    (problem,) = report.problems
    assert problem.where is not None and problem.where.file == str(tmp_path / "bad.yaml")
