"""The agent's key and CSR come from OpenSSL via ctypes; checked with `cryptography`."""

from __future__ import annotations

from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from agentcell.agent.keys import generate_key_and_csr


def test_key_is_private_and_the_csr_proves_it(tmp_path: Path) -> None:
    made = generate_key_and_csr(tmp_path / "state" / "key.pem", common_name="agent")
    assert made.key_path.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "state").stat().st_mode & 0o777 == 0o700
    key = load_pem_private_key(made.key_path.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert key.curve.name == "secp256r1"
    csr = x509.load_pem_x509_csr(made.csr_pem.encode())
    assert csr.is_signature_valid
    assert csr.public_key() == key.public_key()
    assert [a.value for a in csr.subject] == ["agent"]


def test_every_call_makes_a_new_key(tmp_path: Path) -> None:
    first = generate_key_and_csr(tmp_path / "a.pem", common_name="agent")
    second = generate_key_and_csr(tmp_path / "a.pem", common_name="agent")
    assert first.csr_pem != second.csr_pem
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pem"]  # no staging file left
