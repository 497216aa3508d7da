"""Every route's audience, enforced by the real server over real TLS: no admin route answers
a caller without the admin token (with no credentials, or with a valid agent certificate),
none is served on the agents' socket, and no agent route answers without a client certificate.

The routes come from the route table the server registers (a unit test pins the app's router to
it) and must match what the running server documents in /openapi.json.
"""

from __future__ import annotations

import json

import pytest

from agentcell.controlplane.app import ROUTES, Route

from .cp_harness import ControlPlane

ADMIN = [route for route in ROUTES if route.audience == "admin"]
AGENT = [route for route in ROUTES if route.audience == "agent"]


def _path(route: Route) -> str:
    # Placeholders get values that would be valid, so only the credentials are wrong.
    return route.path.replace("{name}", "load.1m").replace("{tenant}", "acme")


TENANT = {"apiVersion": "agentcell/v1", "kind": "Tenant", "metadata": {"name": "acme"}}


def _body(route: Route) -> object:
    if route.path == "/v1/admin/tenants/{tenant}" and route.method == "PUT":
        # A body the route would accept, so only the credentials are wrong.
        return {"document": {**TENANT, "spec": {"config": {"k": "changed"}}}, "changed_by": "x"}
    return {} if route.method in ("POST", "PUT") else None  # DELETE and GET carry none


def test_the_running_server_documents_the_same_routes_and_audiences(
    control_plane: ControlPlane,
) -> None:
    paths = control_plane.call(None, "GET", "/openapi.json").body["paths"]
    documented = {
        (method.upper(), path, operation["x-agentcell-audience"])
        for path, operations in paths.items()
        for method, operation in operations.items()
    }
    assert documented == {(route.method, route.path, route.audience) for route in ROUTES}
    assert len(ADMIN) == 12 and len(AGENT) == 5


def test_every_admin_route_refuses_callers_without_the_admin_token(
    control_plane: ControlPlane,
) -> None:
    agent = control_plane.enrol("acme", "probe")
    control_plane.admin.put_tenant(TENANT, changed_by="setup")
    token = {"Authorization": f"Bearer {control_plane.admin.token}"}
    wrong = {"Authorization": "Bearer not-the-token"}
    refused: dict[str, list[tuple[str, int, str]]] = {}
    for route in ADMIN:
        name = f"{route.method} {route.path}"
        payload = _body(route)
        answers = [
            ("none", control_plane.call(None, route.method, _path(route), payload)),
            ("agent", control_plane.call(agent, route.method, _path(route), payload)),
            ("wrong", control_plane.call(None, route.method, _path(route), payload, headers=wrong)),
            (
                "agent socket",
                control_plane.call(
                    agent, route.method, _path(route), payload, via="unix", headers=token
                ),
            ),
        ]
        refused[name] = [(who, answer.status, answer.reason) for who, answer in answers]
    expected = [
        ("none", 401, "bad_admin_token"),
        ("agent", 401, "bad_admin_token"),
        ("wrong", 401, "bad_admin_token"),
        ("agent socket", 403, "wrong_listener"),
    ]
    assert refused == {f"{route.method} {route.path}": expected for route in ADMIN}
    # The refusals came before any work: nothing was issued, revoked or changed.
    certificates = control_plane.admin.certificates().certificates
    assert [(c.serial, c.revoked_at) for c in certificates] == [(agent.serial, None)]
    assert [v.by for v in control_plane.admin.tenant_versions("acme")] == ["setup"]


@pytest.mark.parametrize("via", ["tcp", "unix"])
def test_every_agent_route_refuses_a_caller_without_a_client_certificate(
    control_plane: ControlPlane, via: str
) -> None:
    token = {"Authorization": f"Bearer {control_plane.admin.token}"}
    for route in AGENT:
        for headers in (None, token):  # the admin token is no agent credential
            answer = control_plane.call(
                None, route.method, _path(route), _body(route), via=via, headers=headers
            )
            assert (answer.status, answer.reason) == (401, "no_client_certificate"), route


def test_agent_routes_take_the_caller_from_the_certificate(control_plane: ControlPlane) -> None:
    agent = control_plane.enrol("acme", "probe")
    answer = control_plane.call(agent, "GET", "/v1/agent/cells")
    assert answer.status == 200
    assert [(c["tenant"], c["agent"]) for c in answer.body["cells"]] == [("acme", "probe")]
    assert json.dumps(control_plane.call(None, "GET", "/healthz").body) == '{"status": "ok"}'
