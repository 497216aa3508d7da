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


def test_refusals_are_counted_and_recorded_as_events(plane: ControlPlane) -> None:
    token = _token(plane)
    plane.enrol(api.EnrolRequest(token=token, csr=_csr()))
    with pytest.raises(EnrolmentRefused):
        plane.enrol(api.EnrolRequest(token=token, csr=_csr()))
    text = plane.metrics_text().decode()
    assert 'agentcell_enrol_failures_total{reason="used_token"} 1.0' in text
    kinds = [e.kind for e in plane.events(tenant="acme", agent=None, limit=10).events]
    assert kinds == ["agent.enrolled", "enrolment.refused"]


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
