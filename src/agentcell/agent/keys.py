"""The agent's key pair and certificate signing request, made by the OpenSSL already in the cell.

The private key must be born inside the cell and never leave it, and the agent is standard
library only. Python's ``ssl`` module can use keys but cannot make them, so this module calls
the ``libcrypto`` that ``ssl`` itself is linked against, through ``ctypes``. Every cryptographic
step (EC P-256 key generation, the CSR's signature, PEM encoding) is OpenSSL's own; this module
only sequences a dozen documented OpenSSL 3 calls and frees what they allocate. The alternatives
were an ``openssl`` binary or the ``cryptography`` wheel in the image, each several MB that the
image would carry for one call per hour.
"""

from __future__ import annotations

import ctypes
import os
import ssl
from pathlib import Path

__all__ = ["KeygenError", "NewKey", "generate_key_and_csr"]

_MBSTRING_ASC = 0x1001
_BIO_CTRL_INFO = 3
_CURVE = b"P-256"


class KeygenError(RuntimeError):
    """OpenSSL could not make the key or the CSR."""


class NewKey:
    """A fresh key written to ``key_path`` (mode 0600) and the CSR that proves we hold it."""

    __slots__ = ("csr_pem", "key_path")

    def __init__(self, key_path: Path, csr_pem: str) -> None:
        self.key_path = key_path
        self.csr_pem = csr_pem


def _libcrypto() -> ctypes.CDLL:
    """The libcrypto that the ``ssl`` module uses (OpenSSL 3), with the signatures we call."""
    if ssl.OPENSSL_VERSION_INFO[0] < 3:
        raise KeygenError(f"OpenSSL 3 is needed, this Python has {ssl.OPENSSL_VERSION}")
    try:
        lib = ctypes.CDLL("libcrypto.so.3")
    except OSError:
        # Only off the usual path: ctypes.util pulls in subprocess and threading (about 1 MB).
        from ctypes.util import find_library

        found = find_library("crypto")
        try:
            lib = ctypes.CDLL(found or "libcrypto.so.3")
        except OSError as exc:
            raise KeygenError(
                "cannot load libcrypto.so.3, which the ssl module needs anyway"
            ) from exc
    vp, cp, ci = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int
    signatures: dict[str, tuple[list[type], type | None]] = {
        "EVP_PKEY_CTX_new_from_name": ([vp, cp, cp], vp),
        "EVP_PKEY_keygen_init": ([vp], ci),
        "EVP_PKEY_CTX_set_group_name": ([vp, cp], ci),
        "EVP_PKEY_generate": ([vp, ctypes.POINTER(vp)], ci),
        "EVP_PKEY_CTX_free": ([vp], None),
        "EVP_PKEY_free": ([vp], None),
        "EVP_sha256": ([], vp),
        "X509_REQ_new": ([], vp),
        "X509_REQ_free": ([vp], None),
        "X509_REQ_set_version": ([vp, ctypes.c_long], ci),
        "X509_REQ_set_pubkey": ([vp, vp], ci),
        "X509_REQ_get_subject_name": ([vp], vp),
        "X509_NAME_add_entry_by_txt": ([vp, cp, ci, cp, ci, ci, ci], ci),
        "X509_REQ_sign": ([vp, vp, vp], ci),
        "BIO_s_mem": ([], vp),
        "BIO_new": ([vp], vp),
        "BIO_free": ([vp], ci),
        "BIO_ctrl": ([vp, ci, ctypes.c_long, vp], ctypes.c_long),
        "PEM_write_bio_X509_REQ": ([vp, vp], ci),
        "PEM_write_bio_PrivateKey": ([vp, vp, vp, vp, ci, vp, vp], ci),
    }
    for name, (argtypes, restype) in signatures.items():
        function = getattr(lib, name)
        function.argtypes = argtypes
        function.restype = restype
    return lib


def _bio_text(lib: ctypes.CDLL, bio: int) -> bytes:
    data = ctypes.c_void_p()
    length = lib.BIO_ctrl(bio, _BIO_CTRL_INFO, 0, ctypes.byref(data))
    if length <= 0 or not data.value:
        raise KeygenError("OpenSSL wrote nothing")
    return ctypes.string_at(data.value, length)


def _check(ok: int | None, step: str) -> None:
    if not ok or ok < 0:
        raise KeygenError(f"OpenSSL failed at {step}")


def generate_key_and_csr(key_path: Path, *, common_name: str) -> NewKey:
    """Make an EC P-256 key, write it to ``key_path`` (0600) and return a CSR signed by it.

    The key file is created with ``O_EXCL`` under a temporary name and renamed into place, so
    a reader never sees half a key and no other process can have opened it first.

    Raises:
        KeygenError: libcrypto is missing or refused a step.
        OSError: the key file cannot be written.
    """
    lib = _libcrypto()
    ctx = pkey = req = bio_req = bio_key = None
    try:
        ctx = lib.EVP_PKEY_CTX_new_from_name(None, b"EC", None)
        _check(1 if ctx else 0, "EVP_PKEY_CTX_new_from_name")
        _check(lib.EVP_PKEY_keygen_init(ctx), "EVP_PKEY_keygen_init")
        _check(lib.EVP_PKEY_CTX_set_group_name(ctx, _CURVE), "EVP_PKEY_CTX_set_group_name")
        out = ctypes.c_void_p()
        _check(lib.EVP_PKEY_generate(ctx, ctypes.byref(out)), "EVP_PKEY_generate")
        pkey = out.value

        req = lib.X509_REQ_new()
        _check(1 if req else 0, "X509_REQ_new")
        _check(lib.X509_REQ_set_version(req, 0), "X509_REQ_set_version")
        _check(lib.X509_REQ_set_pubkey(req, pkey), "X509_REQ_set_pubkey")
        subject = lib.X509_REQ_get_subject_name(req)
        _check(
            lib.X509_NAME_add_entry_by_txt(
                subject, b"CN", _MBSTRING_ASC, common_name.encode(), -1, -1, 0
            ),
            "X509_NAME_add_entry_by_txt",
        )
        _check(lib.X509_REQ_sign(req, pkey, lib.EVP_sha256()), "X509_REQ_sign")

        bio_req = lib.BIO_new(lib.BIO_s_mem())
        _check(lib.PEM_write_bio_X509_REQ(bio_req, req), "PEM_write_bio_X509_REQ")
        csr_pem = _bio_text(lib, bio_req).decode("ascii")

        bio_key = lib.BIO_new(lib.BIO_s_mem())
        _check(
            lib.PEM_write_bio_PrivateKey(bio_key, pkey, None, None, 0, None, None),
            "PEM_write_bio_PrivateKey",
        )
        key_pem = _bio_text(lib, bio_key)
    finally:
        for free, handle in (
            (lib.BIO_free, bio_key),
            (lib.BIO_free, bio_req),
            (lib.X509_REQ_free, req),
            (lib.EVP_PKEY_free, pkey),
            (lib.EVP_PKEY_CTX_free, ctx),
        ):
            if handle:
                free(handle)
    _write_private(key_path, key_pem)
    return NewKey(key_path=key_path, csr_pem=csr_pem)


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` readable by its owner only, atomically."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.{os.getpid()}.new")
    staging.unlink(missing_ok=True)
    fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(staging, path)
