"""Signing keys in the formats cosign reads and writes.

Signatures are ECDSA over P-256 with SHA-256, the one scheme cosign's signature spec requires.

Public keys are PEM ``PUBLIC KEY`` blocks (PKIX SubjectPublicKeyInfo), byte for byte what
``cosign generate-key-pair`` writes to ``cosign.pub``, so a key made by either tool is trusted by
the other.

Private keys are read in three forms:

- cosign's own ``ENCRYPTED SIGSTORE PRIVATE KEY`` (and the older ``ENCRYPTED COSIGN PRIVATE
  KEY``): a JSON envelope holding a PKCS#8 key sealed with NaCl secretbox under a key derived by
  scrypt from the password (the format of go-securesystemslib's ``encrypted`` package). This is
  what :func:`generate_key_pair` writes by default, so ``cosign sign --key`` accepts our keys;
- a PKCS#8 ``PRIVATE KEY`` or password-protected ``ENCRYPTED PRIVATE KEY`` (openssl's forms);
- a SEC 1 ``EC PRIVATE KEY``.

The primitives come from ``cryptography`` (ECDSA, scrypt) and PyNaCl (secretbox); this module
only frames them as cosign does.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, NewType

import nacl.exceptions
import nacl.secret
import nacl.utils
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from agentcell.errors import TrustError

__all__ = [
    "COSIGN_PRIVATE_KEY_TYPES",
    "PASSWORD_ENV",
    "KeyFingerprint",
    "PrivateKeyFormat",
    "PublicKey",
    "SigningKey",
    "encode_private_key",
    "generate_key_pair",
    "load_private_key",
    "load_public_key",
    "password_from_env",
    "read_private_key",
    "read_public_key",
]

KeyFingerprint = NewType("KeyFingerprint", str)
"""``sha256:`` of the DER public key: how output and errors name a key."""

PrivateKeyFormat = Literal["cosign", "pkcs8"]

SIGSTORE_PRIVATE_KEY = "ENCRYPTED SIGSTORE PRIVATE KEY"
COSIGN_PRIVATE_KEY = "ENCRYPTED COSIGN PRIVATE KEY"
COSIGN_PRIVATE_KEY_TYPES = (SIGSTORE_PRIVATE_KEY, COSIGN_PRIVATE_KEY)
PASSWORD_ENV = "COSIGN_PASSWORD"  # noqa: S105  (the variable's name, not a password)
"""cosign reads a key's password from this variable; so do we, so one setting serves both."""

# go-securesystemslib writes N=32768 ("legacy") in older releases and 65536 ("standard") in
# newer ones and accepts these three sets; anything else in a file could be a memory bomb.
_SCRYPT_ACCEPTED = frozenset({(32768, 8, 1), (65536, 8, 1), (131072, 8, 1)})
# Every cosign release reads the legacy set, so keys written with it work with old and new cosign.
_SCRYPT_WRITTEN = (32768, 8, 1)
_SALT_BYTES = 32
_MAX_KEY_FILE = 64 * 1024
_NEW_KEY_FIX = "generate a P-256 key (`agentcell keys generate` or `cosign generate-key-pair`)"
_PEM_BLOCK = re.compile(
    rb"-----BEGIN (?P<type>[A-Z0-9 ]+)-----\r?\n(?P<body>.*?)-----END (?P=type)-----", re.DOTALL
)


@dataclass(frozen=True, kw_only=True)
class PublicKey:
    """A trusted ECDSA P-256 public key, with the name a person gave it."""

    name: str
    key: ec.EllipticCurvePublicKey = field(repr=False, compare=False)
    fingerprint: KeyFingerprint

    @classmethod
    def of(cls, key: ec.EllipticCurvePublicKey, *, name: str) -> PublicKey:
        """Wrap ``key``, computing its fingerprint.

        Raises:
            TrustError: the key is not on P-256.
        """
        if not isinstance(key.curve, ec.SECP256R1):
            raise TrustError(
                f"key {name} is on curve {key.curve.name}; cosign signatures use P-256",
                reason="bad-key",
                fix=_NEW_KEY_FIX,
            )
        der = key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return cls(
            name=name,
            key=key,
            fingerprint=KeyFingerprint(f"sha256:{hashlib.sha256(der).hexdigest()}"),
        )

    def verify(self, signature: bytes, payload: bytes) -> bool:
        """Whether ``signature`` (ASN.1 DER) is this key's ECDSA-SHA256 signature of ``payload``."""
        try:
            self.key.verify(signature, payload, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            return False
        return True

    def pem(self) -> bytes:
        """The key as cosign writes ``cosign.pub``."""
        return self.key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def describe(self) -> str:
        """``name (sha256:0123456789ab…)`` for output."""
        return f"{self.name} ({self.fingerprint[:19]}…)"


@dataclass(frozen=True, kw_only=True)
class SigningKey:
    """A private key that signs payloads, and the public key that checks them."""

    private: ec.EllipticCurvePrivateKey = field(repr=False)
    public: PublicKey

    def sign(self, payload: bytes) -> bytes:
        """ECDSA-SHA256 signature of ``payload``, ASN.1 DER encoded (what cosign stores)."""
        return self.private.sign(payload, ec.ECDSA(hashes.SHA256()))


def generate_key_pair(*, name: str = "generated") -> SigningKey:
    """A fresh P-256 key pair."""
    private = ec.generate_private_key(ec.SECP256R1())
    return SigningKey(private=private, public=PublicKey.of(private.public_key(), name=name))


def encode_private_key(
    key: SigningKey, password: bytes, *, key_format: PrivateKeyFormat = "cosign"
) -> bytes:
    """``key`` as a PEM file protected by ``password``.

    ``cosign`` writes cosign's ``ENCRYPTED SIGSTORE PRIVATE KEY``; ``pkcs8`` writes an
    ``ENCRYPTED PRIVATE KEY`` (or a plain ``PRIVATE KEY`` when the password is empty).
    """
    pkcs8 = key.private.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    if key_format == "pkcs8":
        encryption: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(password)
            if password
            else serialization.NoEncryption()
        )
        return key.private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
        )
    n, r, p = _SCRYPT_WRITTEN
    salt = os.urandom(_SALT_BYTES)
    nonce = nacl.utils.random(nacl.secret.SecretBox.NONCE_SIZE)
    box = nacl.secret.SecretBox(_scrypt(password, salt, n, r, p))
    sealed = box.encrypt(pkcs8, nonce).ciphertext
    envelope = {
        "kdf": {"name": "scrypt", "params": {"N": n, "r": r, "p": p}, "salt": _b64(salt)},
        "cipher": {"name": "nacl/secretbox", "nonce": _b64(nonce)},
        "ciphertext": _b64(sealed),
    }
    return _pem(SIGSTORE_PRIVATE_KEY, json.dumps(envelope, separators=(",", ":")).encode())


def load_public_key(pem: bytes, *, name: str) -> PublicKey:
    """A public key from a PEM ``PUBLIC KEY`` block (cosign.pub).

    Raises:
        TrustError: the text holds no such block, or the key is not ECDSA P-256.
    """
    block_type, _ = _pem_block(pem, name)
    if block_type != "PUBLIC KEY":
        raise TrustError(
            f"key {name} is a PEM {block_type!r} block, not a public key",
            reason="bad-key",
            fix="give the PUBLIC KEY file (cosign.pub), never the private key",
        )
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise TrustError(f"key {name} cannot be parsed: {exc}", reason="bad-key") from exc
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise TrustError(
            f"key {name} is a {type(key).__name__}; only ECDSA P-256 keys are supported",
            reason="bad-key",
            fix=_NEW_KEY_FIX,
        )
    return PublicKey.of(key, name=name)


def load_private_key(pem: bytes, password: bytes | None, *, name: str = "key") -> SigningKey:
    """A signing key from any of the PEM forms in the module docstring.

    Raises:
        TrustError: the file is not a supported private key, the password is wrong or missing,
            or the key is not ECDSA P-256.
    """
    block_type, body = _pem_block(pem, name)
    if block_type in COSIGN_PRIVATE_KEY_TYPES:
        der = _open_cosign_envelope(body, password or b"", name)
        private = _load_der_private(der, name)
    elif block_type in ("PRIVATE KEY", "ENCRYPTED PRIVATE KEY", "EC PRIVATE KEY"):
        try:
            loaded = serialization.load_pem_private_key(
                pem, password=password if block_type == "ENCRYPTED PRIVATE KEY" else None
            )
        except TypeError as exc:
            raise TrustError(
                f"private key {name} needs a password",
                reason="bad-key",
                fix=f"set {PASSWORD_ENV}",
            ) from exc
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise TrustError(
                f"private key {name} cannot be opened (wrong password or damaged file): {exc}",
                reason="bad-key",
                fix=f"check {PASSWORD_ENV} and the file",
            ) from exc
        private = _ec_private(loaded, name)
    else:
        raise TrustError(
            f"{name} is a PEM {block_type!r} block, not a private key",
            reason="bad-key",
            fix="give the private key file (cosign.key or a PKCS#8 PEM)",
        )
    return SigningKey(private=private, public=PublicKey.of(private.public_key(), name=name))


def read_public_key(path: Path, *, name: str | None = None) -> PublicKey:
    """:func:`load_public_key` of a file; the key is named after the file unless ``name``.

    Raises:
        TrustError: the file is unreadable or not a P-256 public key.
    """
    return load_public_key(_read_key_file(path), name=name or path.stem)


def read_private_key(path: Path, password: bytes | None) -> SigningKey:
    """:func:`load_private_key` of a file.

    Raises:
        TrustError: the file is unreadable or not a usable private key.
    """
    return load_private_key(_read_key_file(path), password, name=path.stem)


def password_from_env(environ: Mapping[str, str] | None = None) -> bytes | None:
    """The key password from ``COSIGN_PASSWORD`` (set but empty means an empty password)."""
    env = os.environ if environ is None else environ
    value = env.get(PASSWORD_ENV)
    return None if value is None else value.encode()


def _read_key_file(path: Path) -> bytes:
    try:
        with path.open("rb") as handle:
            data = handle.read(_MAX_KEY_FILE + 1)
    except OSError as exc:
        raise TrustError(
            f"cannot read key file {path}: {exc.strerror}",
            reason="bad-key",
            fix="check the path and its permissions",
        ) from exc
    if len(data) > _MAX_KEY_FILE:
        raise TrustError(f"{path} is too large to be a key file", reason="bad-key")
    return data


def _pem_block(pem: bytes, name: str) -> tuple[str, bytes]:
    match = _PEM_BLOCK.search(pem)
    if match is None:
        raise TrustError(
            f"{name} holds no PEM block (-----BEGIN ...-----)",
            reason="bad-key",
            fix="give a PEM key file such as cosign.pub or cosign.key",
        )
    try:
        body = base64.b64decode(b"".join(match["body"].split()), validate=True)
    except binascii.Error as exc:
        raise TrustError(f"{name}: the PEM body is not base64", reason="bad-key") from exc
    return match["type"].decode(), body


def _open_cosign_envelope(envelope: bytes, password: bytes, name: str) -> bytes:
    """Decrypt go-securesystemslib's scrypt + secretbox JSON envelope to PKCS#8 DER."""
    try:
        data = json.loads(envelope)
        kdf, cipher = data["kdf"], data["cipher"]
        params = (int(kdf["params"]["N"]), int(kdf["params"]["r"]), int(kdf["params"]["p"]))
        salt = base64.b64decode(kdf["salt"], validate=True)
        nonce = base64.b64decode(cipher["nonce"], validate=True)
        sealed = base64.b64decode(data["ciphertext"], validate=True)
        names = (kdf["name"], cipher["name"])
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise TrustError(
            f"{name} is not a valid cosign private key envelope", reason="bad-key"
        ) from exc
    if names != ("scrypt", "nacl/secretbox"):
        raise TrustError(f"{name} uses {names[0]}/{names[1]}, not scrypt/nacl", reason="bad-key")
    if params not in _SCRYPT_ACCEPTED:
        raise TrustError(
            f"{name} asks for scrypt parameters N={params[0]} r={params[1]} p={params[2]}, "
            "which cosign never writes",
            reason="bad-key",
            fix="regenerate the key with cosign or `agentcell keys generate`",
        )
    if len(nonce) != nacl.secret.SecretBox.NONCE_SIZE:
        raise TrustError(f"{name}: the nonce has the wrong length", reason="bad-key")
    box = nacl.secret.SecretBox(_scrypt(password, salt, *params))
    try:
        return box.decrypt(sealed, nonce)
    except nacl.exceptions.CryptoError as exc:
        raise TrustError(
            f"cannot decrypt {name}: wrong password (or a damaged key file)",
            reason="bad-key",
            fix=f"set {PASSWORD_ENV} to the password the key was made with",
        ) from exc


def _load_der_private(der: bytes, name: str) -> ec.EllipticCurvePrivateKey:
    try:
        loaded = serialization.load_der_private_key(der, password=None)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise TrustError(f"{name} does not hold a PKCS#8 key: {exc}", reason="bad-key") from exc
    return _ec_private(loaded, name)


def _ec_private(loaded: object, name: str) -> ec.EllipticCurvePrivateKey:
    if not isinstance(loaded, ec.EllipticCurvePrivateKey):
        raise TrustError(
            f"{name} is a {type(loaded).__name__}; only ECDSA P-256 keys are supported",
            reason="bad-key",
        )
    return loaded


def _scrypt(password: bytes, salt: bytes, n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=nacl.secret.SecretBox.KEY_SIZE, n=n, r=r, p=p).derive(password)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _pem(block_type: str, body: bytes) -> bytes:
    """A PEM block as Go's encoding/pem writes it: 64-column base64 lines."""
    text = base64.b64encode(body).decode()
    lines = [text[i : i + 64] for i in range(0, len(text), 64)]
    return (
        f"-----BEGIN {block_type}-----\n" + "\n".join(lines) + f"\n-----END {block_type}-----\n"
    ).encode()
