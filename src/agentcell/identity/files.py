"""Writing secrets and public material to disk with the right modes, atomically.

A key file is created 0600 under a temporary name with ``O_EXCL`` and renamed into place, so
no reader ever sees half a file. The mode is given at creation, and ``fchmod`` on the open
descriptor restores what the umask took from it before a byte is written: no other process can
have opened the file while it was wider.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

from agentcell.identity.errors import IdentityError

__all__ = ["CAFiles", "read_text", "write_file"]


def write_file(path: Path, data: bytes, *, mode: int) -> None:
    """Write ``data`` to ``path`` with ``mode`` set at creation; replace atomically.

    Raises:
        IdentityError: the file cannot be written.
    """
    staging = path.with_name(f".{path.name}.{os.getpid()}.new")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            staging.unlink()
        fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        try:
            os.fchmod(fd, mode)  # the umask may have narrowed the mode given to open()
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(staging, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            staging.unlink()
        raise IdentityError(
            f"cannot write {path}: {exc.strerror}",
            fix="check that the state directory exists and is writable by this user",
        ) from exc


def read_text(path: Path, *, what: str) -> str:
    """Read a small text file, naming ``what`` it is when that fails.

    Raises:
        IdentityError: it cannot be read.
    """
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise IdentityError(
            f"cannot read the {what} at {path}: {exc.strerror}",
            fix="run `agentcell ca init`, or point --state-dir at the control plane's state",
        ) from exc


@dataclass(frozen=True)
class CAFiles:
    """Where the CA keeps its files inside a control-plane state directory."""

    state_dir: Path

    @property
    def ca_key(self) -> Path:
        """The CA's private key (0600)."""
        return self.state_dir / "ca" / "ca.key"

    @property
    def ca_cert(self) -> Path:
        """The CA certificate, the trust anchor every agent gets."""
        return self.state_dir / "ca" / "ca.pem"

    @property
    def server_key(self) -> Path:
        """The TLS server's private key (0600)."""
        return self.state_dir / "tls" / "server.key"

    @property
    def server_cert(self) -> Path:
        """The TLS server's certificate."""
        return self.state_dir / "tls" / "server.pem"

    @property
    def settings(self) -> Path:
        """identity.json: the trust domain this CA serves."""
        return self.state_dir / "identity.json"
