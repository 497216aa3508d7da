"""Request bodies, settings and the OpenAPI document."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pydantic
import pytest

from agentcell.controlplane import api
from agentcell.controlplane.app import ROUTES
from agentcell.controlplane.openapi import document
from agentcell.controlplane.settings import ServerSettings, SettingsError, parse_listen


def test_reports_must_match_their_kind() -> None:
    api.Report(sequence=1, kind="metrics", sampled_at=0, metrics={"cpu.utilization": 0.5})
    with pytest.raises(pydantic.ValidationError):
        api.Report(sequence=1, kind="metrics", sampled_at=0)
    with pytest.raises(pydantic.ValidationError):
        api.Report(
            sequence=1,
            kind="event",
            sampled_at=0,
            metrics={"x": 1},
            event=api.AgentEvent(kind="a", message="b"),
        )
    with pytest.raises(pydantic.ValidationError):
        api.Report(sequence=0, kind="metrics", sampled_at=0, metrics={})


def test_bodies_refuse_identity_fields() -> None:
    with pytest.raises(pydantic.ValidationError):
        api.ReportBatch.model_validate(
            {
                "tenant": "b",
                "reports": [{"sequence": 1, "kind": "metrics", "sampled_at": 0, "metrics": {}}],
            }
        )
    with pytest.raises(pydantic.ValidationError):
        api.EnrolRequest.model_validate({"token": "t", "csr": "c", "agent": "other"})


def test_batches_are_bounded() -> None:
    report = {"sequence": 1, "kind": "metrics", "sampled_at": 0, "metrics": {}}
    with pytest.raises(pydantic.ValidationError):
        api.ReportBatch.model_validate({"reports": []})
    with pytest.raises(pydantic.ValidationError):
        api.ReportBatch.model_validate({"reports": [report] * (api.MAX_BATCH + 1)})


def test_revoke_names_exactly_one_target() -> None:
    api.RevokeRequest(serial="ABC")
    api.RevokeRequest(tenant="acme", agent="probe")
    for bad in ({}, {"serial": "ABC", "tenant": "a", "agent": "b"}, {"tenant": "acme"}):
        with pytest.raises(pydantic.ValidationError):
            api.RevokeRequest.model_validate(bad)


def test_openapi_documents_every_route_and_resolves_every_reference() -> None:
    doc = document(ROUTES)
    for route in ROUTES:
        assert route.method.lower() in doc["paths"][route.path]
    text = repr(doc)
    for ref in re.findall(r"#/components/schemas/(\w+)", text):
        assert ref in doc["components"]["schemas"], ref
    agent_ops = [
        op
        for path, ops in doc["paths"].items()
        if path.startswith("/v1/agent/")
        for op in ops.values()
    ]
    assert all(op["security"] in ([{"agentCertificate": []}], []) for op in agent_ops)


def test_settings_from_environ(tmp_path: Path) -> None:
    settings = ServerSettings.from_environ(
        {
            "AGENTCELL_HOME": str(tmp_path),
            "AGENTCELL_LISTEN": "[::1]:9443",
            "AGENTCELL_CERT_TTL": "15m",
            "AGENTCELL_TOKEN_TTL": "90s",
        }
    )
    assert settings.paths.state_dir == tmp_path / "controlplane"
    assert settings.paths.agent_socket == tmp_path / "run" / "controlplane" / "agent.sock"
    assert (settings.host, settings.port) == ("::1", 9443)
    assert settings.cert_lifetime == dt.timedelta(minutes=15)
    assert settings.token_lifetime == dt.timedelta(seconds=90)
    assert settings.effective_database_url == f"sqlite:///{tmp_path}/controlplane/controlplane.db"
    defaults = ServerSettings.from_environ({})
    assert str(defaults.paths.state_dir) == "/var/lib/agentcell/controlplane"
    assert defaults.cert_lifetime == dt.timedelta(hours=1)


@pytest.mark.parametrize("value", ["8443", "host:", ":8443", "h:0", "h:99999", "h:x"])
def test_bad_listen_addresses(value: str) -> None:
    with pytest.raises(SettingsError):
        parse_listen(value)


def test_certificate_lifetime_has_a_floor() -> None:
    with pytest.raises(SettingsError, match="30s"):
        ServerSettings.from_environ({"AGENTCELL_CERT_TTL": "5s"})
    with pytest.raises(SettingsError):
        ServerSettings.from_environ({"AGENTCELL_CERT_TTL": "soon"})
