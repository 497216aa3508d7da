"""The CA: files and modes, and what it signs and refuses. Real keys, real signatures."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from agentcell.identity.ca import CertificateAuthority, certificate_identity, init_ca
from agentcell.identity.errors import CANotInitialised, EnrolmentRefused, IdentityError
from agentcell.identity.spiffe import SpiffeId

IDENTITY = SpiffeId("test.local", "acme", "probe")


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return init_ca(tmp_path_factory.mktemp("state"), trust_domain="test.local")


def _csr(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, san: list[str] | None = None) -> str:
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "whatever")])
    )
    if san is not None:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(u) for u in san]),
            critical=False,
        )
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()


def test_init_writes_private_files_0600_and_loads_back(tmp_path: Path) -> None:
    created = init_ca(tmp_path, trust_domain="test.local")
    for secret in (created.files.ca_key, created.files.server_key):
        assert secret.stat().st_mode & 0o777 == 0o600
    loaded = CertificateAuthority.load(tmp_path)
    assert loaded.trust_domain == "test.local"
    assert loaded.certificate == created.certificate
    constraints = loaded.certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.value.ca and constraints.value.path_length == 0


def test_init_refuses_to_replace_a_ca_without_force(tmp_path: Path) -> None:
    first = init_ca(tmp_path, trust_domain="test.local")
    with pytest.raises(IdentityError, match="already exists"):
        init_ca(tmp_path, trust_domain="test.local")
    replaced = init_ca(tmp_path, trust_domain="test.local", force=True)
    assert replaced.certificate != first.certificate


def test_load_without_a_ca_says_to_run_ca_init(tmp_path: Path) -> None:
    with pytest.raises(CANotInitialised) as missing:
        CertificateAuthority.load(tmp_path)
    assert missing.value.fix is not None and "ca init" in missing.value.fix


def test_server_certificate_names_the_fixed_server_name(ca: CertificateAuthority) -> None:
    cert = x509.load_pem_x509_certificate(ca.files.server_cert.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "agentcell-controlplane" in names.get_values_for_type(x509.DNSName)
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku


def test_agent_certificate_is_short_lived_client_only_with_one_uri(
    ca: CertificateAuthority,
) -> None:
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    issued = ca.sign_request(
        _csr(ec.generate_private_key(ec.SECP256R1())),
        IDENTITY,
        lifetime=dt.timedelta(hours=1),
        now=now,
    )
    cert = x509.load_pem_x509_certificate(issued.pem.encode())
    assert cert.not_valid_after_utc == now + dt.timedelta(hours=1)
    assert cert.not_valid_before_utc < now  # backdated a little for clock skew
    assert certificate_identity(issued.pem, trust_domain="test.local") == IDENTITY
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert issued.serial == f"{cert.serial_number:X}"
    cert.verify_directly_issued_by(ca.certificate)


def test_csr_naming_its_own_identity_is_accepted(ca: CertificateAuthority) -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    ca.sign_request(_csr(key, [IDENTITY.uri]), IDENTITY, lifetime=dt.timedelta(minutes=5))


@pytest.mark.parametrize(
    "san",
    [
        ["spiffe://test.local/tenant/other/agent/probe"],
        [IDENTITY.uri, "spiffe://test.local/tenant/other/agent/probe"],
        ["spiffe://test.local/tenant/acme/agent/someone-else"],
    ],
)
def test_csr_naming_anyone_else_is_refused(ca: CertificateAuthority, san: list[str]) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(EnrolmentRefused) as refused:
        ca.sign_request(_csr(key, san), IDENTITY, lifetime=dt.timedelta(minutes=5))
    assert refused.value.reason == "identity_mismatch"


def test_weak_keys_are_refused(ca: CertificateAuthority) -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(EnrolmentRefused) as refused:
        ca.sign_request(_csr(weak), IDENTITY, lifetime=dt.timedelta(minutes=5))
    assert refused.value.reason == "weak_key"
    curve = ec.generate_private_key(ec.SECP256K1())
    with pytest.raises(EnrolmentRefused):
        ca.sign_request(_csr(curve), IDENTITY, lifetime=dt.timedelta(minutes=5))


def test_garbage_and_tampered_csrs_are_refused(ca: CertificateAuthority) -> None:
    with pytest.raises(EnrolmentRefused):
        ca.sign_request("not a csr", IDENTITY, lifetime=dt.timedelta(minutes=5))
    csr = x509.load_pem_x509_csr(_csr(ec.generate_private_key(ec.SECP256R1())).encode())
    der = bytearray(csr.public_bytes(serialization.Encoding.DER))
    der[-10] ^= 0xFF  # flip bits inside the signature: it no longer matches the key
    tampered = x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM)
    with pytest.raises(EnrolmentRefused) as refused:
        ca.sign_request(tampered.decode(), IDENTITY, lifetime=dt.timedelta(minutes=5))
    assert refused.value.reason in ("bad_csr_signature", "bad_csr")


def test_identity_of_another_domain_is_not_signed(ca: CertificateAuthority) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(IdentityError, match=r"serves test\.local"):
        ca.issue_agent(
            key.public_key(),
            SpiffeId("evil.example", "acme", "probe"),
            not_before=dt.datetime.now(dt.UTC),
            not_after=dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1),
        )
