"""The route table is the one source of who may call what: every route the app serves comes
from it with an audience, and the OpenAPI document shows that audience."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web

from agentcell.controlplane.app import HANDLERS_KEY, ROUTES, build_app
from agentcell.controlplane.openapi import document
from agentcell.controlplane.service import ControlPlane
from agentcell.controlplane.settings import ControlPlanePaths, ServerSettings
from agentcell.controlplane.store import Store
from agentcell.controlplane.telemetry import Telemetry
from agentcell.identity.ca import init_ca


@pytest.fixture
def app(tmp_path: Path) -> Iterator[web.Application]:
    ca = init_ca(tmp_path, trust_domain="test.local")
    store = Store.open(f"sqlite:///{tmp_path / 'cp.db'}")
    settings = ServerSettings(paths=ControlPlanePaths(tmp_path, tmp_path / "run"))
    service = ControlPlane(store=store, ca=ca, settings=settings, telemetry=Telemetry())
    application = build_app(service, admin_token="secret")
    try:
        yield application
    finally:
        application[HANDLERS_KEY].close()
        store.close()


def test_the_app_serves_exactly_the_route_table(app: web.Application) -> None:
    served = {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None and route.method != "HEAD"  # aiohttp adds HEAD to GET
    }
    assert served == {(route.method, route.path) for route in ROUTES}
    assert len({(route.method, route.path) for route in ROUTES}) == len(ROUTES)


def test_each_area_of_the_api_has_the_audience_its_path_promises() -> None:
    for route in ROUTES:
        if route.path.startswith("/v1/admin/") or route.path == "/metrics":
            assert route.audience == "admin", route
        elif route.path == "/v1/agent/enrol":
            assert route.audience == "public" and route.body_credential, route
        elif route.path.startswith("/v1/agent/"):
            assert route.audience == "agent", route
        else:
            assert route.path in {"/openapi.json", "/healthz"}, route
            assert route.audience == "public", route


def test_openapi_shows_each_route_s_audience_and_security() -> None:
    paths = document(ROUTES)["paths"]
    security: dict[str, list[dict[str, list[str]]]] = {
        "admin": [{"adminToken": []}],
        "agent": [{"agentCertificate": []}],
        "public": [],
    }
    for route in ROUTES:
        operation = paths[route.path][route.method.lower()]
        assert operation["x-agentcell-audience"] == route.audience
        assert operation["security"] == security[route.audience]
    enrol = paths["/v1/agent/enrol"]["post"]
    assert enrol["description"] == "Authenticated by the one-time join token in the body."
