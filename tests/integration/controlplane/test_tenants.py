"""Tenants in the control plane over real TLS: versioned documents, refused bad input, and
the reference agent (a real process on the agents' socket) following its tenant's config."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentcell.controlplane.client import ControlPlaneError

from .cp_harness import ControlPlane

pytestmark = pytest.mark.integration

CHANGE_SEEN_WITHIN_S = 10.0


def _document(name: str = "acme", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "agentcell/v1",
        "kind": "Tenant",
        "metadata": {"name": name},
        "spec": spec,
    }


def test_put_get_list_delete_and_the_history(control_plane: ControlPlane) -> None:
    admin = control_plane.admin
    assert admin.tenant("acme") is None and admin.tenants() == []
    created = admin.put_tenant(
        _document(quota={"cpus": 2, "memory": "1g"}, config={"level": "info"}),
        changed_by="alice",
    )
    assert (created.name, created.version, created.changed, created.updated_by) == (
        "acme",
        1,
        True,
        "alice",
    )
    assert created.document.spec.quota.memory == 2**30
    same = admin.put_tenant(
        _document(quota={"cpus": 2, "memory": "1g"}, config={"level": "info"}), changed_by="bob"
    )
    assert (same.version, same.changed, same.updated_by) == (1, False, "alice")
    admin.put_tenant(_document(isolation="strict", config={"level": "info"}), changed_by="bob")
    admin.put_tenant(_document("other"), changed_by="carol")

    current = admin.tenant("acme")
    assert current is not None
    assert (current.version, current.config_version, current.document.spec.isolation) == (
        2,
        1,
        "strict",
    )
    assert [record.name for record in admin.tenants()] == ["acme", "other"]

    assert admin.delete_tenant("acme", changed_by="dave") is True
    assert admin.delete_tenant("acme") is False
    assert admin.tenant("acme") is None
    assert [record.name for record in admin.tenants()] == ["other"]
    history = admin.tenant_versions("acme")
    assert [(v.version, v.change, v.by) for v in history] == [
        (1, "put", "alice"),
        (2, "put", "bob"),
        (3, "delete", "dave"),
    ]
    assert history[0].document is not None and history[-1].document is None
    kinds = [event.kind for event in admin.events(tenant="acme").events]
    assert kinds == ["tenant.updated", "tenant.updated", "tenant.deleted"]


@pytest.mark.parametrize(
    ("document", "field"),
    [
        (_document(quota={"cpus": 0}), "document.spec.quota.cpus"),
        (_document(isolation="lax"), "document.spec.isolation"),
        (_document(config={"k": 1}), "document.spec.config.k"),
        ({**_document(), "kind": "Agent"}, "document.kind"),
        (_document("other"), "document.metadata.name"),
        (
            _document(trust={"keys": [{"name": "k", "path": "cosign.pub"}]}),
            "document.spec.trust.keys.0.path",
        ),
    ],
)
def test_a_bad_document_is_refused_naming_the_field(
    control_plane: ControlPlane, document: dict[str, Any], field: str
) -> None:
    token = {"Authorization": f"Bearer {control_plane.admin.token}"}
    answer = control_plane.call(
        None,
        "PUT",
        "/v1/admin/tenants/acme",
        {"document": document, "changed_by": "alice"},
        headers=token,
    )
    assert (answer.status, answer.reason) == (422, "invalid_body")
    assert answer.body["error"].startswith(f"invalid body: {field}: ")
    # The client says the same before sending (it cannot know the path for a wrong name).
    if field != "document.metadata.name":
        with pytest.raises(ControlPlaneError, match=rf"{field}: ") as refused:
            control_plane.admin.put_tenant(document, changed_by="alice")
        assert refused.value.reason == "invalid_body"
    assert control_plane.admin.tenant_versions("acme") == []


def test_a_tenant_path_that_is_no_tenant_name_is_refused(control_plane: ControlPlane) -> None:
    with pytest.raises(ControlPlaneError) as refused:
        control_plane.admin.tenant("Not/A Tenant")
    assert (refused.value.status, refused.value.reason) == (400, "bad_parameter")


@pytest.fixture
def agent_process(control_plane: ControlPlane) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """The reference agent as a host process, enrolled as acme/reporter through the agents'
    socket, reporting only once a minute; stopped at teardown (its files go with the home)."""
    identity = control_plane.home / "agent-identity"
    identity.mkdir()
    (identity / "ca.pem").write_bytes(control_plane.paths.ca_bundle.read_bytes())
    (identity / "token").write_text(control_plane.admin.join_token("acme", "reporter").token)
    state = control_plane.home / "agent-state"
    log = control_plane.home / "agent.log"
    env = {
        **os.environ,
        "AGENTCELL_CONTROL_PLANE": f"unix://{control_plane.paths.agent_socket}",
        "AGENTCELL_IDENTITY_DIR": str(identity),
        "AGENTCELL_STATE_DIR": str(state),
        "AGENTCELL_HOST_ROOT": "/",
        "AGENTCELL_INTERVAL": "60",
    }
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "agentcell.agent"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        yield process, state / "config.json"
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def _wait_for(what: str, check: Any, *, within: float, process: subprocess.Popen[bytes]) -> Any:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        assert process.poll() is None, f"the agent exited ({process.returncode}) before {what}"
        time.sleep(0.2)
    raise AssertionError(f"not within {within:g} s: {what}")


def _file_version(path: Path) -> int | None:
    try:
        return int(json.loads(path.read_text())["version"])
    except (OSError, ValueError, KeyError):
        return None


def test_the_agent_sees_a_config_change_within_ten_seconds(
    control_plane: ControlPlane, agent_process: tuple[subprocess.Popen[bytes], Path]
) -> None:
    process, config_file = agent_process
    admin = control_plane.admin
    first = admin.put_tenant(_document(config={"level": "info"}), changed_by="alice")
    _wait_for(
        "the agent read its first config",
        lambda: _file_version(config_file) == first.config_version,
        within=30.0,  # includes making a key and enrolling
        process=process,
    )

    changed = admin.put_tenant(_document(config={"level": "debug"}), changed_by="bob")
    assert changed.config_version == 2
    _wait_for(
        "config.json holds version 2",
        lambda: _file_version(config_file) == 2,
        within=CHANGE_SEEN_WITHIN_S,
        process=process,
    )
    assert json.loads(config_file.read_text()) == {
        "tenant": "acme",
        "version": 2,
        "config": {"level": "debug"},
    }
    # The event travels at once, not with the next report a minute away.
    messages = _wait_for(
        "the agent's event for version 2",
        lambda: (
            [
                event.message
                for event in admin.events(tenant="acme", agent="reporter").events
                if event.kind == "config.changed" and event.source == "agent"
            ][-1:]
            == ["config version 2"]
        ),
        within=CHANGE_SEEN_WITHIN_S,
        process=process,
    )
    assert messages


def test_a_certificate_reads_only_its_own_tenant_s_config(control_plane: ControlPlane) -> None:
    admin = control_plane.admin
    admin.put_tenant(_document("tenant-a", config={"owner": "a"}), changed_by="alice")
    admin.put_tenant(_document("tenant-b", config={"secret": "b"}), changed_by="alice")
    alice = control_plane.enrol("tenant-a", "probe")
    own = control_plane.call(alice, "GET", "/v1/agent/config", via="unix")
    assert own.body == {"tenant": "tenant-a", "version": 1, "config": {"owner": "a"}}
    # Naming another tenant is refused rather than ignored, in the query or in a header.
    asked = control_plane.call(alice, "GET", "/v1/agent/config?tenant=tenant-b", via="unix")
    spoofed = control_plane.call(
        alice, "GET", "/v1/agent/config", via="unix", headers={"X-Agentcell-Tenant": "tenant-b"}
    )
    for answer in (asked, spoofed):
        assert (answer.status, answer.reason) == (400, "identity_from_certificate_only")
        assert "secret" not in json.dumps(answer.body)
    for route in ("/v1/admin/tenants/tenant-b", "/v1/admin/tenants"):
        assert control_plane.call(alice, "GET", route).status == 401
        assert control_plane.call(alice, "GET", route, via="unix").status == 403
