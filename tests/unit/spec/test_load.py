"""The loader turns every kind of bad input into a SpecError naming file, line and field."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agentcell.errors import SpecError
from agentcell.spec.load import load_paths, load_text
from agentcell.spec.model import MiB

MINIMAL = """\
apiVersion: agentcell/v1
kind: Agent
metadata:
  name: probe
spec:
  image: agentcell/sandbox:0.1.0
"""


def problems(error: SpecError) -> list[SpecError]:
    return list(error.problems or (error,))


def only_problem(text: str, file: str = "agent.yaml") -> SpecError:
    with pytest.raises(SpecError) as caught:
        load_text(text, file=file)
    found = problems(caught.value)
    assert len(found) == 1, caught.value.diagnostics()
    return found[0]


def test_minimal_spec_gets_every_secure_default() -> None:
    (doc,) = load_text(MINIMAL)
    spec = doc.document.spec
    assert (spec.security.user, spec.security.group) == (None, None)  # allocated at launch
    assert spec.security.capabilities == ()
    assert spec.security.no_new_privileges is True
    assert spec.security.read_only_rootfs is True
    assert spec.security.seccomp != "unconfined"
    assert spec.security.runtime == "runc"
    assert spec.resources.cpus == 0.5
    assert spec.resources.memory == 256 * MiB
    assert spec.resources.memory_swap == spec.resources.memory
    assert spec.resources.pids == 128
    assert [(t.path, t.size) for t in spec.resources.tmpfs] == [("/tmp", 64 * MiB)]
    assert spec.network == "none"
    assert spec.host.mounts == ()
    assert not (spec.host.pid or spec.host.network or spec.host.docker_socket)
    assert (spec.restart.policy, spec.restart.max_retries) == ("on-failure", 5)
    assert doc.tenant == "default"


def test_swap_follows_memory_unless_written() -> None:
    (doc,) = load_text(MINIMAL + "  resources:\n    memory: 512m\n")
    assert doc.document.spec.resources.memory_swap == 512 * MiB


def test_unreadable_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "secret.yaml"
    path.write_text(MINIMAL)
    path.chmod(0)
    if os.access(path, os.R_OK):  # root reads anything; use a directory entry we cannot open
        path = tmp_path / "missing.yaml"
    with pytest.raises(SpecError) as caught:
        load_paths([path])
    assert str(path) in caught.value.diagnostics()
    assert caught.value.exit_code == 2


def test_invalid_yaml_points_at_the_line() -> None:
    error = only_problem(MINIMAL + "  env: [unclosed\n")
    assert error.where is not None
    assert error.where.file == "agent.yaml"
    assert error.where.line == 8
    assert "invalid YAML" in error.what


def test_unknown_field_suggests_the_right_one() -> None:
    error = only_problem(MINIMAL + "  resources:\n    memroy: 512m\n")
    assert error.where is not None
    assert (error.where.line, error.where.field) == (8, "spec.resources.memroy")
    assert error.fix is not None and "did you mean 'memory'" in error.fix


def test_wrong_type_names_the_field() -> None:
    error = only_problem(MINIMAL + "  resources:\n    pids: lots\n")
    assert error.where is not None
    assert (error.where.line, error.where.field) == (8, "spec.resources.pids")


def test_unquoted_number_in_env_is_a_clear_error() -> None:
    error = only_problem(MINIMAL + "  env:\n    WORKERS: 4\n")
    assert error.where is not None and error.where.field == "spec.env.WORKERS"
    assert error.fix is not None and "quote" in error.fix


@pytest.mark.parametrize(
    ("resources", "field"),
    [
        ("cpus: -1", "spec.resources.cpus"),
        ("cpus: 100000", "spec.resources.cpus"),
        ("memory: 1k", "spec.resources.memory"),
        ("memory: 90000g", "spec.resources.memory"),
        ("pids: 0", "spec.resources.pids"),
        ("pids: -5", "spec.resources.pids"),
        ("memory: lots", "spec.resources.memory"),
    ],
)
def test_negative_or_absurd_limits_are_refused(resources: str, field: str) -> None:
    error = only_problem(MINIMAL + f"  resources:\n    {resources}\n")
    assert error.where is not None
    assert (error.where.line, error.where.field) == (8, field)


def test_swap_below_memory_is_refused() -> None:
    error = only_problem(MINIMAL + "  resources:\n    memory: 512m\n    memory_swap: 256m\n")
    assert "memory_swap" in error.what


def test_missing_image_is_named() -> None:
    error = only_problem(MINIMAL.replace("  image: agentcell/sandbox:0.1.0\n", "  env: {}\n"))
    assert error.where is not None
    assert error.where.field == "spec.image"
    assert error.where.line == 5  # the 'spec:' line: image belongs under it
    assert error.fix == "add 'image:' under spec"


def test_two_agents_with_one_name_collide() -> None:
    with pytest.raises(SpecError) as caught:
        load_text(MINIMAL + "---\n" + MINIMAL)
    (error,) = problems(caught.value)
    assert "defined twice" in error.what
    assert error.where is not None and error.where.line == 11


def test_collisions_are_found_across_files(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(MINIMAL)
    (tmp_path / "b.yaml").write_text(MINIMAL)
    with pytest.raises(SpecError, match="defined twice"):
        load_paths([tmp_path])


def test_same_name_in_two_tenants_is_fine() -> None:
    other = MINIMAL.replace("  name: probe\n", "  name: probe\n  tenant: other\n")
    assert len(load_text(MINIMAL + "---\n" + other)) == 2


def test_duplicate_key_is_refused() -> None:
    error = only_problem(MINIMAL + "  image: other\n")
    assert "appears twice" in error.what
    assert error.where is not None and error.where.line == 7


def test_alias_bomb_is_refused() -> None:
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
    for level in range(1, 7):
        bomb += (
            f"{chr(97 + level)}: &{chr(97 + level)} "
            + str([f"*{chr(96 + level)}"] * 10).replace("'", "")
            + "\n"
        )
    error = only_problem(bomb)
    assert "YAML nodes" in error.what


def test_every_problem_of_a_file_is_reported_at_once() -> None:
    text = MINIMAL + "  resources:\n    cpus: -1\n    pids: lots\n  security:\n    runtime: kata\n"
    with pytest.raises(SpecError) as caught:
        load_text(text)
    fields = sorted(p.where.field for p in problems(caught.value) if p.where and p.where.field)
    assert fields == ["spec.resources.cpus", "spec.resources.pids", "spec.security.runtime"]


def test_empty_file_is_an_error() -> None:
    error = only_problem("# nothing here\n")
    assert "no document" in error.what


def test_a_list_is_not_a_document() -> None:
    error = only_problem("- a\n- b\n")
    assert "mapping" in error.what


def test_names_must_be_dns_labels() -> None:
    error = only_problem(MINIMAL.replace("name: probe", "name: Probe_1"))
    assert error.where is not None and error.where.field == "metadata.name"


def test_capabilities_are_checked_and_normalized() -> None:
    (doc,) = load_text(MINIMAL + "  security:\n    capabilities: [cap_net_bind_service]\n")
    assert doc.document.spec.security.capabilities == ("NET_BIND_SERVICE",)
    error = only_problem(MINIMAL + "  security:\n    capabilities: [ALL]\n")
    assert "privileged" in error.what


def test_runsc_is_a_valid_runtime_in_the_spec() -> None:
    (doc,) = load_text(MINIMAL + "  security:\n    runtime: runsc\n")
    assert doc.document.spec.security.runtime == "runsc"


def test_relative_seccomp_path_is_resolved_against_the_spec(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(MINIMAL + "  security:\n    seccomp: profiles/p.json\n")
    (doc,) = load_paths([path])
    assert doc.document.spec.security.seccomp == f"{tmp_path}/profiles/p.json"


def test_where_falls_back_to_the_nearest_written_parent() -> None:
    (doc,) = load_text(MINIMAL, file="a.yaml")
    location = doc.where("spec", "security", "user")
    assert (location.line, location.field) == (5, "spec.security.user")


def test_empty_spec_section_is_named() -> None:
    error = only_problem(MINIMAL.replace("  image: agentcell/sandbox:0.1.0\n", ""))
    assert error.what == "spec is empty"
    assert error.where is not None
    assert error.where.line == 5


def test_binary_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_bytes(b"apiVersion: \xff\xfe\n")
    with pytest.raises(SpecError, match="not UTF-8"):
        load_paths([path])


def test_directory_without_specs_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"no \*\.yaml"):
        load_paths([tmp_path])


def test_zero_retries_is_refused_because_docker_reads_it_as_forever() -> None:
    error = only_problem(MINIMAL + "  restart:\n    max_retries: 0\n")
    assert error.where is not None
    assert error.where.field == "spec.restart.max_retries"
