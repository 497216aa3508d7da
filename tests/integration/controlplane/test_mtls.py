"""The control plane over real TLS: what it accepts, and every way it refuses a caller."""

from __future__ import annotations

import time

import pytest
from cryptography.hazmat.primitives import serialization

from agentcell.agent.transport import TransportError
from agentcell.controlplane.client import ControlPlaneError
from agentcell.controlplane.server import init_state
from agentcell.controlplane.settings import ControlPlanePaths
from agentcell.identity.ca import CertificateAuthority
from agentcell.identity.spiffe import SpiffeId

from .cp_harness import ControlPlane, Identity, make_home, removed_on_exit, utc

pytestmark = pytest.mark.integration


def _stored(plane: ControlPlane, tenant: str, agent: str) -> list[int]:
    store = plane.store()
    try:
        sequences: list[int] = store.stored_sequences(tenant, agent)
        return sequences
    finally:
        store.close()


@pytest.mark.parametrize("via", ["tcp", "unix"])
def test_reports_over_mtls_are_stored_once_each(control_plane: ControlPlane, via: str) -> None:
    identity = control_plane.enrol("acme", "probe", via=via)
    first = control_plane.report(identity, [1, 2, 3], via=via)
    assert first.status == 200
    assert first.body == {"acknowledged": [1, 2, 3], "stored": 3, "duplicates": 0}
    again = control_plane.report(identity, [2, 3, 4], via=via)
    assert again.body == {"acknowledged": [2, 3, 4], "stored": 1, "duplicates": 2}
    assert _stored(control_plane, "acme", "probe") == [1, 2, 3, 4]
    series = control_plane.admin.metric("x", tenant="acme")
    assert [point[2] for point in series.series[0].points] == [1.0, 2.0, 3.0, 4.0]


def test_request_without_client_certificate_is_refused(control_plane: ControlPlane) -> None:
    answer = control_plane.call(
        None,
        "POST",
        "/v1/agent/reports",
        {"reports": [{"sequence": 1, "kind": "metrics", "sampled_at": 1, "metrics": {"x": 1}}]},
    )
    assert answer.status == 401
    assert answer.reason == "no_client_certificate"
    assert control_plane.call(None, "GET", "/v1/agent/config").status == 401


def test_certificate_from_another_ca_is_refused_in_the_handshake(
    control_plane: ControlPlane,
) -> None:
    with removed_on_exit(make_home()) as other_home:
        other = init_state(
            ControlPlanePaths.from_environ({"AGENTCELL_HOME": str(other_home)}),
            trust_domain="test.local",
        )
        key, key_path = control_plane.new_key("foreign")
        # Same trust domain, same tenant and agent: only the signer differs.
        issued = other.issue_agent(
            key.public_key(),
            SpiffeId("test.local", "acme", "probe"),
            not_before=utc(-60),
            not_after=utc(3600),
        )
        cert = key_path.with_suffix(".pem")
        cert.write_text(issued.pem)
        with pytest.raises(TransportError):
            control_plane.report(Identity(cert=cert, key=key_path, serial=issued.serial), [1])
    assert _stored(control_plane, "acme", "probe") == []


def test_expired_certificate_is_refused_in_the_handshake(control_plane: ControlPlane) -> None:
    ca = CertificateAuthority.load(control_plane.paths.state_dir)
    key, key_path = control_plane.new_key("expired")
    identity = SpiffeId("test.local", "acme", "probe")
    expired = ca.issue_agent(
        key.public_key(), identity, not_before=utc(-7200), not_after=utc(-3600)
    )
    cert = key_path.with_suffix(".pem")
    cert.write_text(expired.pem)
    with pytest.raises(TransportError):
        control_plane.report(Identity(cert=cert, key=key_path, serial=expired.serial), [1])
    assert _stored(control_plane, "acme", "probe") == []
    # The same key and identity with a current validity get through: only expiry differed.
    current = ca.issue_agent(key.public_key(), identity, not_before=utc(-60), not_after=utc(600))
    cert.write_text(current.pem)
    accepted = control_plane.report(Identity(cert=cert, key=key_path, serial=current.serial), [1])
    assert accepted.status == 200


def test_revoked_certificate_is_refused(control_plane: ControlPlane) -> None:
    identity = control_plane.enrol("acme", "probe")
    assert control_plane.report(identity, [1]).status == 200
    from agentcell.controlplane.api import RevokeRequest

    revoked = control_plane.admin.revoke(RevokeRequest(serial=identity.serial, reason="test"))
    assert revoked.revoked == [identity.serial]
    answer = control_plane.report(identity, [2])
    assert answer.status == 403
    assert answer.reason == "certificate_revoked"
    assert control_plane.call(identity, "POST", "/v1/agent/renew", {"csr": "x"}).status == 403
    assert _stored(control_plane, "acme", "probe") == [1]


def test_join_token_works_once(control_plane: ControlPlane) -> None:
    token = control_plane.admin.join_token("acme", "probe").token
    key, _ = control_plane.new_key("once")
    body = {"token": token, "csr": control_plane.csr(key)}
    assert control_plane.call(None, "POST", "/v1/agent/enrol", body).status == 200
    again = control_plane.call(None, "POST", "/v1/agent/enrol", body)
    assert again.status == 403
    assert again.reason == "used_token"


def test_expired_join_token_is_refused(control_plane: ControlPlane) -> None:
    token = control_plane.admin.join_token("acme", "probe", ttl_seconds=0.5).token
    time.sleep(1.0)
    key, _ = control_plane.new_key("late")
    answer = control_plane.call(
        None, "POST", "/v1/agent/enrol", {"token": token, "csr": control_plane.csr(key)}
    )
    assert answer.status == 403
    assert answer.reason == "expired_token"


def test_unknown_join_token_is_refused(control_plane: ControlPlane) -> None:
    key, _ = control_plane.new_key("guess")
    answer = control_plane.call(
        None, "POST", "/v1/agent/enrol", {"token": "acjt_guess", "csr": control_plane.csr(key)}
    )
    assert answer.status == 403
    assert answer.reason == "unknown_token"


def test_token_for_tenant_a_cannot_enrol_into_tenant_b(control_plane: ControlPlane) -> None:
    token = control_plane.admin.join_token("tenant-a", "probe").token
    key, _ = control_plane.new_key("cross")
    wrong = control_plane.csr(key, san="spiffe://test.local/tenant/tenant-b/agent/probe")
    refused = control_plane.call(None, "POST", "/v1/agent/enrol", {"token": token, "csr": wrong})
    assert refused.status == 403
    assert refused.reason == "identity_mismatch"
    # Naming the tenant in the body is not a way in either: unknown fields are refused.
    smuggled = {"token": token, "csr": control_plane.csr(key), "tenant": "tenant-b"}
    assert control_plane.call(None, "POST", "/v1/agent/enrol", smuggled).status == 422
    # The refused attempts did not burn the token; a proper CSR gets tenant A's identity.
    granted = control_plane.call(
        None, "POST", "/v1/agent/enrol", {"token": token, "csr": control_plane.csr(key)}
    )
    assert granted.status == 200
    assert granted.body["spiffe_id"] == "spiffe://test.local/tenant/tenant-a/agent/probe"


def test_tenant_a_cannot_read_tenant_b(control_plane: ControlPlane) -> None:
    for tenant in ("tenant-a", "tenant-b"):
        control_plane.admin.put_tenant(
            {
                "apiVersion": "agentcell/v1",
                "kind": "Tenant",
                "metadata": {"name": tenant},
                "spec": {"config": {"owner": tenant}},
            },
            changed_by="test",
        )
    alice = control_plane.enrol("tenant-a", "probe")
    control_plane.enrol("tenant-b", "secret-agent")

    own = control_plane.call(alice, "GET", "/v1/agent/config")
    assert own.status == 200
    assert own.body["config"] == {"owner": "tenant-a"}
    cells = control_plane.call(alice, "GET", "/v1/agent/cells")
    assert [cell["tenant"] for cell in cells.body["cells"]] == ["tenant-a"]

    for path in ("/v1/agent/config?tenant=tenant-b", "/v1/agent/cells?tenant=tenant-b"):
        answer = control_plane.call(alice, "GET", path)
        assert answer.status == 400
        assert answer.reason == "identity_from_certificate_only"
    spoofed = control_plane.call(
        alice, "GET", "/v1/agent/config", headers={"X-Agentcell-Tenant": "tenant-b"}
    )
    assert spoofed.status == 400
    # An agent certificate is no admin credential, on either listener.
    assert control_plane.call(alice, "GET", "/v1/admin/cells?tenant=tenant-b").status == 401
    on_socket = control_plane.call(alice, "GET", "/v1/admin/cells", via="unix")
    assert on_socket.status == 403


def test_admin_api_needs_its_token(control_plane: ControlPlane) -> None:
    assert control_plane.call(None, "GET", "/v1/admin/cells").status == 401
    assert control_plane.call(None, "GET", "/metrics").status == 401
    with pytest.raises(ControlPlaneError, match=r"DNS label|pattern"):
        control_plane.admin.join_token("acme", "Not A Label")
    # The server checks too, whatever the client sends.
    import http.client
    import json
    import ssl

    context = ssl.create_default_context(cafile=str(control_plane.paths.ca_bundle))
    connection = http.client.HTTPSConnection(
        "127.0.0.1", control_plane.server.port, context=context
    )
    try:
        connection.request(
            "POST",
            "/v1/admin/join-tokens",
            body=json.dumps({"tenant": "acme", "agent": "Not A Label"}),
            headers={"Authorization": f"Bearer {control_plane.admin.token}"},
        )
        assert connection.getresponse().status == 422
    finally:
        connection.close()


def test_renewal_gives_a_new_certificate_for_a_new_key(control_plane: ControlPlane) -> None:
    identity = control_plane.enrol("acme", "probe")
    key, key_path = control_plane.new_key("renewed")
    answer = control_plane.call(
        identity, "POST", "/v1/agent/renew", {"csr": control_plane.csr(key)}
    )
    assert answer.status == 200
    cert = key_path.with_suffix(".pem")
    cert.write_text(answer.body["certificate"])
    renewed = Identity(cert=cert, key=key_path, serial=answer.body["serial"])
    assert renewed.serial != identity.serial
    assert control_plane.report(renewed, [1]).status == 200
    kinds = sorted(c.kind for c in control_plane.admin.certificates(tenant="acme").certificates)
    assert kinds == ["enrol", "renew"]


def test_openapi_and_prometheus_metrics(control_plane: ControlPlane) -> None:
    identity = control_plane.enrol("acme", "probe")
    control_plane.report(identity, [1, 2])
    key, _ = control_plane.new_key("bad")
    control_plane.call(
        None, "POST", "/v1/agent/enrol", {"token": "nope", "csr": control_plane.csr(key)}
    )

    document = control_plane.call(None, "GET", "/openapi.json").body
    assert document["openapi"].startswith("3.")
    assert {"/v1/agent/enrol", "/v1/agent/reports", "/v1/admin/cells", "/metrics"} <= set(
        document["paths"]
    )
    text = _prometheus(control_plane)
    assert 'agentcell_reports_total{kind="metrics"} 2.0' in text
    assert "agentcell_agents_up 1.0" in text
    assert 'agentcell_enrol_failures_total{reason="unknown_token"} 1.0' in text
    assert 'agentcell_certificate_expiry_timestamp_seconds{agent="probe",tenant="acme"}' in text


def _prometheus(plane: ControlPlane) -> str:
    import http.client
    import ssl

    context = ssl.create_default_context(cafile=str(plane.paths.ca_bundle))
    connection = http.client.HTTPSConnection("127.0.0.1", plane.server.port, context=context)
    try:
        connection.request(
            "GET", "/metrics", headers={"Authorization": f"Bearer {plane.admin.token}"}
        )
        response = connection.getresponse()
        assert response.status == 200
        return response.read().decode()
    finally:
        connection.close()


def test_ca_key_and_admin_token_are_private(control_plane: ControlPlane) -> None:
    state = control_plane.paths.state_dir
    for secret in (state / "ca" / "ca.key", state / "tls" / "server.key", state / "admin.token"):
        assert secret.stat().st_mode & 0o777 == 0o600, secret
    key = serialization.load_pem_private_key((state / "ca" / "ca.key").read_bytes(), None)
    assert key.key_size >= 256  # type: ignore[union-attr]
