"""Enrolment and renewal rules, on a real CA and a real SQLite store (no HTTP)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from agentcell.controlplane import api
from agentcell.controlplane.service import Caller, ControlPlane
from agentcell.controlplane.settings import ControlPlanePaths, ServerSettings
from agentcell.controlplane.store import Store
from agentcell.controlplane.telemetry import Telemetry
from agentcell.identity.ca import init_ca
from agentcell.identity.errors import EnrolmentRefused
from agentcell.identity.spiffe import SpiffeId


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def plane(tmp_path: Path, clock: Clock) -> Iterator[ControlPlane]:
    ca = init_ca(tmp_path, trust_domain="test.local")
    store = Store.open(f"sqlite:///{tmp_path / 'cp.db'}")
    settings = ServerSettings(paths=ControlPlanePaths(tmp_path, tmp_path / "run"))
    yield ControlPlane(store=store, ca=ca, settings=settings, telemetry=Telemetry(), clock=clock)
    store.close()


def _csr(san: str | None = None) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "agent")])
    )
    if san:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(san)]), critical=False
        )
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()


def _token(plane: ControlPlane, tenant: str = "acme", agent: str = "probe", **kw: float) -> str:
    return plane.issue_token(api.JoinTokenRequest(tenant=tenant, agent=agent, **kw)).token


def test_enrolment_binds_the_token_s_identity(plane: ControlPlane) -> None:
    answer = plane.enrol(api.EnrolRequest(token=_token(plane), csr=_csr()))
    assert answer.spiffe_id == "spiffe://test.local/tenant/acme/agent/probe"
    assert answer.next_sequence == 1
    assert answer.not_after - answer.not_before == pytest.approx(3600 + 60)


def test_token_cannot_be_used_twice(plane: ControlPlane) -> None:
    token = _token(plane)
    plane.enrol(api.EnrolRequest(token=token, csr=_csr()))
    with pytest.raises(EnrolmentRefused) as refused:
        plane.enrol(api.EnrolRequest(token=token, csr=_csr()))
    assert refused.value.reason == "used_token"


def test_expired_token_is_refused(plane: ControlPlane, clock: Clock) -> None:
    token = _token(plane, ttl_seconds=60)
    clock.now += 61
    with pytest.raises(EnrolmentRefused) as refused:
        plane.enrol(api.EnrolRequest(token=token, csr=_csr()))
    assert refused.value.reason == "expired_token"


def test_bad_csr_does_not_burn_the_token(plane: ControlPlane) -> None:
    token = _token(plane, "tenant-a")
    with pytest.raises(EnrolmentRefused) as refused:
        plane.enrol(
            api.EnrolRequest(
                token=token, csr=_csr("spiffe://test.local/tenant/tenant-b/agent/probe")
            )
        )
    assert refused.value.reason == "identity_mismatch"
    assert plane.enrol(api.EnrolRequest(token=token, csr=_csr())).spiffe_id.endswith(
        "/tenant/tenant-a/agent/probe"
    )


def test_re_enrolment_supersedes_the_old_certificate(plane: ControlPlane) -> None:
    first = plane.enrol(api.EnrolRequest(token=_token(plane), csr=_csr()))
    second = plane.enrol(api.EnrolRequest(token=_token(plane), csr=_csr()))
    assert plane.is_revoked(first.serial)
    assert not plane.is_revoked(second.serial)
    records = {c.serial: c for c in plane.certificates("acme", "probe").certificates}
    assert records[first.serial].revoke_reason == "superseded by a new enrolment"


def test_renewal_keeps_the_identity_and_records_the_kind(plane: ControlPlane) -> None:
    first = plane.enrol(api.EnrolRequest(token=_token(plane), csr=_csr()))
    caller = Caller(identity=SpiffeId("test.local", "acme", "probe"), serial=first.serial)
    renewed = plane.renew(caller, api.RenewRequest(csr=_csr()))
    assert renewed.spiffe_id == first.spiffe_id
    assert renewed.serial != first.serial
    kinds = sorted(c.kind for c in plane.certificates("acme", None).certificates)
    assert kinds == ["enrol", "renew"]
    with pytest.raises(EnrolmentRefused):
        plane.renew(
            caller, api.RenewRequest(csr=_csr("spiffe://test.local/tenant/acme/agent/other"))
        )


def test_refusals_are_counted_and_recorded_as_one_event_per_window(
    plane: ControlPlane, clock: Clock
) -> None:
    token = _token(plane)
    plane.enrol(api.EnrolRequest(token=token, csr=_csr()))
    for _ in range(50):
        with pytest.raises(EnrolmentRefused):
            plane.enrol(api.EnrolRequest(token=token, csr=_csr()), peer="uid 1001")
    text = plane.metrics_text().decode()
    assert 'agentcell_enrol_failures_total{reason="used_token"} 50.0' in text

    def events() -> list[tuple[str, str]]:
        found = plane.events(tenant="acme", agent=None, limit=10).events
        return [(e.kind, e.message) for e in found]

    # Nothing is written while the window is open, however many attempts come.
    assert plane.flush_refusals() == 0
    assert [kind for kind, _ in events()] == ["agent.enrolled"]
    clock.now += 60
    assert plane.flush_refusals() == 1
    assert events()[-1] == (
        "enrolment.refused",
        "50 refused enrolments from uid 1001 in the last 60 s (used_token: 50)",
    )
    assert plane.flush_refusals() == 0  # recorded once
    with pytest.raises(EnrolmentRefused):
        plane.enrol(api.EnrolRequest(token=token, csr=_csr()), peer="uid 1001")
    assert plane.flush_refusals(final=True) == 1  # at shutdown, open windows are written too
    assert len(events()) == 3


def test_renewal_revokes_the_certificate_it_replaces(plane: ControlPlane) -> None:
    first = plane.enrol(api.EnrolRequest(token=_token(plane), csr=_csr()))
    caller = Caller(identity=SpiffeId("test.local", "acme", "probe"), serial=first.serial)
    renewed = plane.renew(caller, api.RenewRequest(csr=_csr()))
    assert plane.is_revoked(first.serial)
    assert not plane.is_revoked(renewed.serial)
    records = {c.serial: c for c in plane.certificates("acme", "probe").certificates}
    assert records[first.serial].revoke_reason == f"superseded by renewal ({renewed.serial})"
    assert records[renewed.serial].revoked_at is None


def _token_file(plane: ControlPlane, token: str) -> Path:
    directory = plane.settings.paths.cell_identity_dir("acme", "probe")
    directory.mkdir(parents=True)
    (directory / "token").write_text(token + "\n")
    return directory / "token"


def test_enrolment_removes_the_spent_token_file(plane: ControlPlane) -> None:
    token = _token(plane)
    path = _token_file(plane, token)
    plane.enrol(api.EnrolRequest(token=token, csr=_csr()))
    assert not path.exists()
    assert (path.parent).is_dir()


def test_enrolment_keeps_a_newer_token_file(plane: ControlPlane) -> None:
    """`up` may have written the next token already; only the spent one is removed."""
    token = _token(plane)
    path = _token_file(plane, "acjt_a-newer-token")
    plane.enrol(api.EnrolRequest(token=token, csr=_csr()))
    assert path.read_text() == "acjt_a-newer-token\n"


def test_a_token_file_that_cannot_be_removed_does_not_fail_enrolment(
    plane: ControlPlane,
) -> None:
    token = _token(plane)
    path = _token_file(plane, "unused")
    path.unlink()
    path.mkdir()  # a directory where the file should be: it cannot be read as a token
    (path / "x").write_text("x")
    answer = plane.enrol(api.EnrolRequest(token=token, csr=_csr()))
    assert answer.spiffe_id.endswith("/agent/probe")
    assert path.is_dir()


def test_cells_mark_agents_up_within_the_window(plane: ControlPlane, clock: Clock) -> None:
    plane.enrol(api.EnrolRequest(token=_token(plane), csr=_csr()))
    assert [c.up for c in plane.cells("acme").cells] == [True]
    clock.now += dt.timedelta(minutes=5).total_seconds()
    assert [c.up for c in plane.cells("acme").cells] == [False]
    assert plane.cells("other").cells == []


def test_revocation_matches_serials_written_with_leading_zeros(plane: ControlPlane) -> None:
    """OpenSSL (getpeercert) prints whole bytes, "0A1B..."; the store keeps "A1B..."."""
    answer = plane.enrol(api.EnrolRequest(token=_token(plane), csr=_csr()))
    plane.revoke(api.RevokeRequest(serial="00" + answer.serial.lower()))
    assert plane.is_revoked(answer.serial)
    assert plane.is_revoked("0" + answer.serial)


def _tenant_request(config: dict[str, str], by: str = "alice") -> api.TenantPutRequest:
    return api.TenantPutRequest.model_validate(
        {
            "document": {
                "apiVersion": "agentcell/v1",
                "kind": "Tenant",
                "metadata": {"name": "acme"},
                "spec": {"config": config},
            },
            "changed_by": by,
        }
    )


def test_agents_read_their_tenant_document_s_config(plane: ControlPlane) -> None:
    caller = Caller(identity=SpiffeId("test.local", "acme", "probe"), serial="1")
    assert plane.tenant_config("acme") == api.TenantConfig(tenant="acme", version=0, config={})
    first = plane.put_tenant(_tenant_request({"level": "info"}))
    assert (first.version, first.changed) == (1, True)
    assert plane.tenant_config("acme").config == {"level": "info"}
    assert plane.heartbeat(caller).config_version == 1
    assert plane.put_tenant(_tenant_request({"level": "info"}, by="bob")).changed is False
    deleted = plane.delete_tenant("acme", by="bob")
    assert deleted == api.TenantDeleted(name="acme", version=2)
    assert plane.tenant_config("acme") == api.TenantConfig(tenant="acme", version=2, config={})
    assert plane.delete_tenant("acme", by="bob") is None
    assert [v.change for v in plane.tenant_versions("acme").versions] == ["put", "delete"]
