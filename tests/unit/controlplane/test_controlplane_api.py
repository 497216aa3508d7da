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
from agentcell.controlplane.settings import (
    ServerLimits,
    ServerSettings,
    SettingsError,
    parse_listen,
)


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


def _batch(sequence: str = "1", value: str = "1", sampled_at: str = "0") -> str:
    report = f'"sequence": {sequence}, "kind": "metrics", "sampled_at": {sampled_at}'
    return f'{{"reports": [{{{report}, "metrics": {{"x": {value}}}}}]}}'


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e999", "-1e999"])
def test_reports_refuse_numbers_that_are_not_finite(value: str) -> None:
    with pytest.raises(pydantic.ValidationError, match="finite"):
        api.ReportBatch.model_validate_json(_batch(value=value))
    with pytest.raises(pydantic.ValidationError, match="finite"):
        api.ReportBatch.model_validate_json(_batch(sampled_at=value))
    assert api.ReportBatch.model_validate_json(_batch(value="1e300")).reports[0].metrics


@pytest.mark.parametrize("sequence", [2**53, 2**62, 2**63 + 1, 10**30])
def test_report_sequences_stay_below_2_to_the_53(sequence: int) -> None:
    with pytest.raises(pydantic.ValidationError, match="less than or equal"):
        api.ReportBatch.model_validate_json(_batch(sequence=str(sequence)))
    accepted = api.ReportBatch.model_validate_json(_batch(sequence=str(api.MAX_SEQUENCE)))
    assert accepted.reports[0].sequence == 2**53 - 1


def _tenant_body(**spec: object) -> dict[str, object]:
    document = {"apiVersion": "agentcell/v1", "kind": "Tenant", "metadata": {"name": "acme"}}
    return {"document": {**document, "spec": spec}, "changed_by": "alice"}


def _located(error: pydantic.ValidationError) -> list[str]:
    return [".".join(str(part) for part in item["loc"]) for item in error.errors()]


def test_a_tenant_body_is_a_tenant_document_checked_field_by_field() -> None:
    body = api.TenantPutRequest.model_validate(_tenant_body(quota={"cpus": 2, "memory": "1g"}))
    body.check_for("acme")
    assert body.document.spec.quota.memory == 2**30
    for spec, where in (
        ({"quota": {"cpus": -1}}, "document.spec.quota.cpus"),
        ({"isolation": "lax"}, "document.spec.isolation"),
        ({"config": {"k": 5}}, "document.spec.config.k"),
        ({"surprise": True}, "document.spec.surprise"),
    ):
        with pytest.raises(pydantic.ValidationError) as raised:
            api.TenantPutRequest.model_validate(_tenant_body(**spec))
        assert _located(raised.value) == [where]
    # A number JSON does not have is no quota either.
    with pytest.raises(pydantic.ValidationError):
        api.TenantPutRequest.model_validate_json(
            '{"document": {"apiVersion": "agentcell/v1", "kind": "Tenant", "metadata": '
            '{"name": "acme"}, "spec": {"quota": {"cpus": NaN}}}, "changed_by": "a"}'
        )


def test_a_tenant_body_must_name_the_path_s_tenant_and_carry_keys_as_pem() -> None:
    keys = [{"name": "inline", "pem": "-----BEGIN PUBLIC KEY-----"}, {"name": "f", "path": "k.pub"}]
    body = api.TenantPutRequest.model_validate(_tenant_body(trust={"keys": keys}))
    with pytest.raises(pydantic.ValidationError) as raised:
        body.check_for("other")
    assert _located(raised.value) == ["document.metadata.name", "document.spec.trust.keys.1.path"]
    assert "names tenant acme but the path names other" in str(raised.value)


def test_tenant_answers_use_the_document_s_own_field_names() -> None:
    body = api.TenantPutRequest.model_validate(_tenant_body())
    record = api.TenantRecord(
        name="acme",
        version=1,
        config_version=0,
        document=body.document,
        updated_at=1.0,
        updated_by="alice",
    )
    dumped = record.model_dump(mode="json", by_alias=True)
    assert dumped["document"]["apiVersion"] == "agentcell/v1"
    assert api.TenantRecord.model_validate(dumped) == record


def test_limits_from_environ() -> None:
    limits = ServerLimits.from_environ(
        {
            "AGENTCELL_MAX_CONNECTIONS": "500",
            "AGENTCELL_MAX_CONNECTIONS_PER_PEER": "8",
            "AGENTCELL_TLS_HANDSHAKE_TIMEOUT": "500ms",
            "AGENTCELL_REQUEST_HEAD_TIMEOUT": "2s",
            "AGENTCELL_REQUEST_BODY_TIMEOUT": "1m",
            "AGENTCELL_IDLE_TIMEOUT": "90s",
            "AGENTCELL_ENROL_BURST": "4",
            "AGENTCELL_ENROL_RATE": "12",
            "AGENTCELL_ENROL_REFUSAL_WINDOW": "5m",
            "AGENTCELL_LOG_RATE": "3",
        }
    )
    assert limits == ServerLimits(
        max_connections=500,
        max_connections_per_peer=8,
        tls_handshake_timeout=0.5,
        request_head_timeout=2.0,
        request_body_timeout=60.0,
        idle_timeout=90.0,
        enrol_burst=4,
        enrol_per_minute=12,
        enrol_refusal_window=300.0,
        log_lines_per_second=3,
    )
    assert ServerSettings.from_environ({}).limits == ServerLimits()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("AGENTCELL_MAX_CONNECTIONS", "0"),
        ("AGENTCELL_MAX_CONNECTIONS_PER_PEER", "many"),
        ("AGENTCELL_REQUEST_HEAD_TIMEOUT", "0s"),
        ("AGENTCELL_TLS_HANDSHAKE_TIMEOUT", "soon"),
    ],
)
def test_bad_limits_are_refused_with_their_name(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        ServerLimits.from_environ({name: value})
