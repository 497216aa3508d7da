"""The control plane's certificate authority: its own key, the server certificate, agent certs.

Everything cryptographic is done by the ``cryptography`` library. The CA key is an EC P-256
key in a 0600 file in the state directory; it never leaves the control plane's host. Agent
certificates are short-lived (an hour by default) because revocation is checked by the control
plane only; expiry bounds what a stolen key is worth anywhere else.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from agentcell.cell.paths import CONTROL_PLANE_SERVER_NAME
from agentcell.identity.errors import CANotInitialised, EnrolmentRefused, IdentityError
from agentcell.identity.files import CAFiles, read_text, write_file
from agentcell.identity.spiffe import SpiffeId, validate_trust_domain

__all__ = [
    "DEFAULT_SERVER_NAMES",
    "SERVER_NAME",
    "CAFiles",
    "CertificateAuthority",
    "IssuedCertificate",
    "ca_certificate",
    "certificate_identity",
    "init_ca",
    "serial_hex",
]

# The name agents check in the server certificate; they reach the server through a socket, so
# it is a fixed name rather than a host name.
SERVER_NAME = CONTROL_PLANE_SERVER_NAME
DEFAULT_SERVER_NAMES = (SERVER_NAME, "localhost", "127.0.0.1", "::1")
CA_LIFETIME = dt.timedelta(days=3650)
SERVER_LIFETIME = dt.timedelta(days=365)
# Tolerate this much clock difference between the control plane and a freshly started cell.
CLOCK_SKEW = dt.timedelta(seconds=60)
MIN_RSA_BITS = 2048
ALLOWED_CURVES = (ec.SECP256R1, ec.SECP384R1)


@dataclass(frozen=True, kw_only=True)
class IssuedCertificate:
    """A certificate the CA signed, with what the control plane records about it."""

    pem: str
    serial: str
    identity: SpiffeId | None
    not_before: dt.datetime
    not_after: dt.datetime


def serial_hex(serial: int) -> str:
    """The upper-case hex form of a serial without leading zeros, as it is stored and shown.

    Python's ``ssl`` reports whole bytes (``0A1B...``); callers strip leading zeros from that.
    """
    return f"{serial:X}"


def _utc(now: dt.datetime | None) -> dt.datetime:
    return (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _private_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _san_entries(names: Sequence[str]) -> list[x509.GeneralName]:
    entries: list[x509.GeneralName] = []
    for name in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return entries


class CertificateAuthority:
    """A loaded CA that can sign server and agent certificates."""

    def __init__(
        self,
        *,
        key: ec.EllipticCurvePrivateKey,
        certificate: x509.Certificate,
        trust_domain: str,
        files: CAFiles,
    ) -> None:
        self._key = key
        self.certificate = certificate
        self.trust_domain = trust_domain
        self.files = files

    @property
    def certificate_pem(self) -> str:
        """The CA certificate in PEM, the bundle agents verify the server with."""
        return self.certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")

    @classmethod
    def load(cls, state_dir: Path) -> CertificateAuthority:
        """Load the CA from a state directory made by :func:`init_ca`.

        Raises:
            CANotInitialised: there is no CA there.
            IdentityError: its files are unreadable or damaged.
        """
        files = CAFiles(state_dir)
        if not files.ca_key.exists() or not files.ca_cert.exists():
            raise CANotInitialised(
                f"no CA in {state_dir}",
                fix="run `agentcell ca init` (or pass --state-dir of an initialised control plane)",
            )
        key_pem = read_text(files.ca_key, what="CA key").encode()
        cert_pem = read_text(files.ca_cert, what="CA certificate").encode()
        settings_text = read_text(files.settings, what="identity settings")
        try:
            key = serialization.load_pem_private_key(key_pem, password=None)
            certificate = x509.load_pem_x509_certificate(cert_pem)
            trust_domain = str(json.loads(settings_text)["trust_domain"])
        except (ValueError, KeyError, TypeError, UnsupportedAlgorithm) as exc:
            raise IdentityError(
                f"the CA files in {state_dir} are damaged: {exc}",
                fix="restore them from backup, or re-run `agentcell ca init --force` "
                "(every agent must then enrol again)",
            ) from exc
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise IdentityError(f"the CA key in {files.ca_key} is not an EC key")
        return cls(
            key=key,
            certificate=certificate,
            trust_domain=validate_trust_domain(trust_domain),
            files=files,
        )

    # -- signing -----------------------------------------------------------------------------

    def _builder(
        self,
        subject: x509.Name,
        public_key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey,
        not_before: dt.datetime,
        not_after: dt.datetime,
    ) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.certificate.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                critical=False,
            )
        )

    def _finish(
        self, builder: x509.CertificateBuilder, identity: SpiffeId | None
    ) -> IssuedCertificate:
        certificate = builder.sign(self._key, hashes.SHA256())
        return IssuedCertificate(
            pem=certificate.public_bytes(serialization.Encoding.PEM).decode("ascii"),
            serial=serial_hex(certificate.serial_number),
            identity=identity,
            not_before=certificate.not_valid_before_utc,
            not_after=certificate.not_valid_after_utc,
        )

    def issue_agent(
        self,
        public_key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey,
        identity: SpiffeId,
        *,
        not_before: dt.datetime,
        not_after: dt.datetime,
    ) -> IssuedCertificate:
        """Sign a client certificate for ``identity`` valid from ``not_before`` to ``not_after``.

        Callers normally go through :meth:`sign_request`; this lower step exists so tests can
        make certificates that are already expired, with the same code.

        Raises:
            IdentityError: the identity is of another trust domain.
        """
        if identity.trust_domain != self.trust_domain:
            raise IdentityError(
                f"this CA serves {self.trust_domain}, not {identity.trust_domain}",
            )
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, identity.tenant),
                x509.NameAttribute(NameOID.COMMON_NAME, identity.agent),
            ]
        )
        builder = (
            self._builder(subject, public_key, not_before, not_after)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=isinstance(public_key, rsa.RSAPublicKey),
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(identity.uri)]),
                critical=False,
            )
        )
        return self._finish(builder, identity)

    def sign_request(
        self,
        csr_pem: str,
        identity: SpiffeId,
        *,
        lifetime: dt.timedelta,
        now: dt.datetime | None = None,
    ) -> IssuedCertificate:
        """Check a CSR and sign a certificate for ``identity`` that lasts ``lifetime``.

        The identity comes from the join token or the caller's verified certificate, never
        from the CSR: the CSR only proves the caller holds the key. A CSR that names any other
        identity in its subjectAltName is refused rather than silently corrected.

        Raises:
            EnrolmentRefused: the CSR is malformed, badly signed, uses a weak key, or names
                another identity.
        """
        public_key = check_request(csr_pem, identity)
        start = _utc(now)
        return self.issue_agent(
            public_key, identity, not_before=start - CLOCK_SKEW, not_after=start + lifetime
        )

    def issue_server(
        self, names: Sequence[str], *, now: dt.datetime | None = None
    ) -> tuple[IssuedCertificate, bytes]:
        """A new server key and certificate for ``names`` (DNS names or IP addresses)."""
        key = _new_key()
        start = _utc(now)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, SERVER_NAME)])
        builder = (
            self._builder(subject, key.public_key(), start - CLOCK_SKEW, start + SERVER_LIFETIME)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName(_san_entries(names)), critical=False)
        )
        return self._finish(builder, None), _private_pem(key)


def check_request(csr_pem: str, identity: SpiffeId) -> ec.EllipticCurvePublicKey | rsa.RSAPublicKey:
    """The public key of a well-formed, self-signed CSR that names nobody but ``identity``.

    Raises:
        EnrolmentRefused: the CSR is malformed, badly signed, weak, or names someone else.
    """
    try:
        csr = x509.load_pem_x509_csr(csr_pem.encode("ascii"))
    except (ValueError, UnicodeEncodeError) as exc:
        raise EnrolmentRefused(
            "the CSR is not a PEM certificate request", reason="bad_csr"
        ) from exc
    try:
        valid = csr.is_signature_valid
    except (InvalidSignature, UnsupportedAlgorithm) as exc:
        raise EnrolmentRefused("the CSR's signature cannot be checked", reason="bad_csr") from exc
    if not valid:
        raise EnrolmentRefused(
            "the CSR is not signed by the key it carries", reason="bad_csr_signature"
        )
    public_key = csr.public_key()
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        if not isinstance(public_key.curve, ALLOWED_CURVES):
            raise EnrolmentRefused(
                f"EC curve {public_key.curve.name} is not accepted", reason="weak_key"
            )
    elif isinstance(public_key, rsa.RSAPublicKey):
        if public_key.key_size < MIN_RSA_BITS:
            raise EnrolmentRefused(f"RSA keys need at least {MIN_RSA_BITS} bits", reason="weak_key")
    else:
        raise EnrolmentRefused("only EC P-256/P-384 and RSA keys are accepted", reason="weak_key")
    try:
        requested = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return public_key
    except ValueError as exc:
        raise EnrolmentRefused("the CSR's extensions are malformed", reason="bad_csr") from exc
    names = list(requested)
    uris = requested.get_values_for_type(x509.UniformResourceIdentifier)
    if len(names) != len(uris) or any(uri != identity.uri for uri in uris):
        raise EnrolmentRefused(
            f"the CSR asks for {', '.join(str(n.value) for n in names)}; "
            f"this token or certificate grants only {identity.uri}",
            reason="identity_mismatch",
        )
    return public_key


def certificate_identity(cert_pem: str, *, trust_domain: str) -> SpiffeId:
    """The agent identity in a PEM certificate's URI SAN (exactly one is allowed).

    Raises:
        IdentityError: the certificate has no, or more than one, agent identity.
    """
    from agentcell.identity.spiffe import parse_spiffe_id

    try:
        certificate = x509.load_pem_x509_certificate(cert_pem.encode("ascii"))
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound) as exc:
        raise IdentityError("the certificate carries no subjectAltName") from exc
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    if len(uris) != 1:
        raise IdentityError(f"expected one URI SAN, found {len(uris)}")
    return parse_spiffe_id(uris[0], trust_domain=trust_domain)


def ca_certificate(
    key: ec.EllipticCurvePrivateKey, common_name: str, *, now: dt.datetime
) -> x509.Certificate:
    """A self-signed CA certificate for ``key``: signs leaf certificates only (path length 0),
    valid from ``now`` (less the clock skew allowed) for the CA's lifetime."""
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "agentcell"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + CA_LIFETIME)
        # path_length 0: this CA signs leaf certificates only, never another CA.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )


def init_ca(
    state_dir: Path,
    *,
    trust_domain: str,
    server_names: Sequence[str] = DEFAULT_SERVER_NAMES,
    force: bool = False,
    now: dt.datetime | None = None,
) -> CertificateAuthority:
    """Create the CA key and certificate and the server's key and certificate.

    Refuses to replace an existing CA unless ``force``: a new CA invalidates every agent's
    certificate and every copy of the CA bundle.

    Raises:
        IdentityError: a CA exists and ``force`` is false, or the files cannot be written.
    """
    validate_trust_domain(trust_domain)
    files = CAFiles(state_dir)
    if files.ca_key.exists() and not force:
        raise IdentityError(
            f"a CA already exists in {state_dir}",
            fix="keep it, or pass --force to replace it (every agent must then enrol again)",
        )
    start = _utc(now)
    key = _new_key()
    certificate = ca_certificate(key, f"agentcell control plane CA ({trust_domain})", now=start)
    for directory in (files.ca_key.parent, files.server_key.parent):
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_file(files.ca_key, _private_pem(key), mode=0o600)
    write_file(files.ca_cert, certificate.public_bytes(serialization.Encoding.PEM), mode=0o644)
    write_file(
        files.settings,
        json.dumps({"trust_domain": trust_domain}, indent=2).encode() + b"\n",
        mode=0o644,
    )
    ca = CertificateAuthority(
        key=key, certificate=certificate, trust_domain=trust_domain, files=files
    )
    server, server_key = ca.issue_server(server_names, now=start)
    write_file(files.server_key, server_key, mode=0o600)
    write_file(files.server_cert, server.pem.encode("ascii"), mode=0o644)
    return ca
