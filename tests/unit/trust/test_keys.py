"""Key files in cosign's formats: what `cosign generate-key-pair` writes and reads."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from agentcell.errors import TrustError
from agentcell.trust.keys import (
    encode_private_key,
    generate_key_pair,
    load_private_key,
    load_public_key,
    password_from_env,
    read_public_key,
)

# DER prefix of every P-256 SubjectPublicKeyInfo: SEQUENCE { SEQUENCE { id-ecPublicKey,
# prime256v1 }, BIT STRING (0 unused bits) } followed by the 65-byte uncompressed point.
P256_SPKI_PREFIX = bytes.fromhex("3059301306072a8648ce3d020106082a8648ce3d030107034200")


def _go_pem(block_type: str, der: bytes) -> bytes:
    """PEM as Go's encoding/pem writes it (cosign's output): 64-column lines, LF endings."""
    text = base64.b64encode(der).decode()
    body = "\n".join(text[i : i + 64] for i in range(0, len(text), 64))
    return f"-----BEGIN {block_type}-----\n{body}\n-----END {block_type}-----\n".encode()


def _pem_body(pem: bytes) -> bytes:
    return base64.b64decode(b"".join(pem.strip().splitlines()[1:-1]))


def test_public_key_pem_is_byte_for_byte_cosigns() -> None:
    key = generate_key_pair()
    point = key.public.key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    assert key.public.pem() == _go_pem("PUBLIC KEY", P256_SPKI_PREFIX + point)


def test_a_cosign_format_public_key_is_accepted() -> None:
    # Built independently of the code under test: the DER cosign's MarshalPublicKeyToPEM emits.
    private = ec.generate_private_key(ec.SECP256R1())
    point = private.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    loaded = load_public_key(_go_pem("PUBLIC KEY", P256_SPKI_PREFIX + point), name="release")
    assert loaded.name == "release"
    assert loaded.key.public_numbers() == private.public_key().public_numbers()
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", loaded.fingerprint)


def test_cosign_private_key_round_trips_with_its_password() -> None:
    key = generate_key_pair()
    pem = encode_private_key(key, b"correct horse")
    assert pem.startswith(b"-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n")
    assert max(len(line) for line in pem.splitlines()) == 64
    opened = load_private_key(pem, b"correct horse")
    assert opened.public.fingerprint == key.public.fingerprint
    assert opened.public.verify(key.sign(b"payload"), b"payload")


def test_cosign_private_key_envelope_has_cosigns_fields() -> None:
    envelope = json.loads(_pem_body(encode_private_key(generate_key_pair(), b"pw")))
    assert list(envelope) == ["kdf", "cipher", "ciphertext"]
    assert envelope["kdf"]["name"] == "scrypt"
    # The parameters every cosign release accepts (go-securesystemslib's "legacy" set).
    assert envelope["kdf"]["params"] == {"N": 32768, "r": 8, "p": 1}
    assert len(base64.b64decode(envelope["kdf"]["salt"])) == 32
    assert envelope["cipher"]["name"] == "nacl/secretbox"
    assert len(base64.b64decode(envelope["cipher"]["nonce"])) == 24
    # secretbox adds a 16-byte tag to the PKCS#8 DER of a P-256 key (138 bytes).
    assert len(base64.b64decode(envelope["ciphertext"])) == 138 + 16


def test_the_older_cosign_block_name_is_read_too() -> None:
    key = generate_key_pair()
    pem = encode_private_key(key, b"pw").replace(b"SIGSTORE", b"COSIGN")
    assert load_private_key(pem, b"pw").public.fingerprint == key.public.fingerprint


def test_wrong_password_is_a_clear_refusal() -> None:
    pem = encode_private_key(generate_key_pair(), b"right")
    with pytest.raises(TrustError, match="wrong password") as caught:
        load_private_key(pem, b"wrong")
    assert caught.value.reason == "bad-key"


def test_scrypt_parameters_cosign_never_writes_are_refused() -> None:
    pem = encode_private_key(generate_key_pair(), b"pw")
    envelope = json.loads(_pem_body(pem))
    envelope["kdf"]["params"]["N"] = 2**24  # 16 GiB of memory to derive the key
    tampered = _go_pem("ENCRYPTED SIGSTORE PRIVATE KEY", json.dumps(envelope).encode())
    with pytest.raises(TrustError, match="scrypt parameters"):
        load_private_key(tampered, b"pw")


def test_pkcs8_private_keys_round_trip() -> None:
    key = generate_key_pair()
    encrypted = encode_private_key(key, b"pw", key_format="pkcs8")
    assert encrypted.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert load_private_key(encrypted, b"pw").public.fingerprint == key.public.fingerprint
    plain = encode_private_key(key, b"", key_format="pkcs8")
    assert plain.startswith(b"-----BEGIN PRIVATE KEY-----")
    assert load_private_key(plain, None).public.fingerprint == key.public.fingerprint


def test_a_private_key_is_never_taken_for_a_public_one() -> None:
    pem = encode_private_key(generate_key_pair(), b"pw")
    with pytest.raises(TrustError, match="not a public key"):
        load_public_key(pem, name="oops")


def test_keys_other_than_p256_are_refused() -> None:
    rsa_pem = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(TrustError, match="only ECDSA P-256"):
        load_public_key(rsa_pem, name="rsa")
    p384 = (
        ec.generate_private_key(ec.SECP384R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(TrustError, match="P-256"):
        load_public_key(p384, name="p384")


def test_a_signature_checks_only_against_its_own_payload_and_key() -> None:
    key, other = generate_key_pair(), generate_key_pair()
    signature = key.sign(b"payload")
    assert key.public.verify(signature, b"payload")
    assert not key.public.verify(signature, b"payload!")
    assert not other.public.verify(signature, b"payload")


def test_key_files_are_named_after_the_file(tmp_path: Path) -> None:
    path = tmp_path / "release.pub"
    path.write_bytes(generate_key_pair().public.pem())
    assert read_public_key(path).name == "release"
    with pytest.raises(TrustError, match="cannot read key file"):
        read_public_key(tmp_path / "absent.pub")
    (tmp_path / "junk.pub").write_text("not a key")
    with pytest.raises(TrustError, match="no PEM block"):
        read_public_key(tmp_path / "junk.pub")


def test_password_comes_from_cosigns_variable() -> None:
    assert password_from_env({"COSIGN_PASSWORD": "s3cret"}) == b"s3cret"
    assert password_from_env({"COSIGN_PASSWORD": ""}) == b""
    assert password_from_env({}) is None
