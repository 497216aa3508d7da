"""The identity directory a cell enrols with: its join token and the CA bundle.

The launch path (:func:`agentcell.launch.prepare_cell`) asks the control plane for a token
for a spec with ``identity: true`` before it launches the cell, and lays the directory out
with :func:`write_identity_dir`. The control plane issues a one-time token bound to the spec's
tenant and name; it is written into the cell's own directory under the run directory (a tmpfs
on a normal host), readable only by the cell's uid, next to a copy of the CA certificate. The
cell gets two read-only mounts and no others for its identity:

- ``/run/agentcell/identity``: its token and ``ca.pem`` (nothing of the state directory);
- ``/run/agentcell/controlplane``: the directory that holds only the agents' Unix socket.

The directory is mounted rather than the socket file, so a restarted control plane's new socket
appears in running cells. The key is made by the agent in its own tmpfs and never crosses.
"""

from __future__ import annotations

import os
from pathlib import Path

from agentcell.identity.errors import IdentityError
from agentcell.identity.files import write_file

__all__ = ["write_identity_dir"]


def write_identity_dir(directory: Path, *, token: str, ca_pem: bytes, uid: int, gid: int) -> None:
    """Token 0400 and CA 0444 in a 0500 directory owned by the cell's uid (when we are root,
    which can give it away); otherwise readable by all, which a non-root test run needs.

    Raises:
        IdentityError: the files cannot be written.
    """
    as_root = os.geteuid() == 0
    try:
        for parent in (directory.parent.parent, directory.parent):
            parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        directory.mkdir(mode=0o700, exist_ok=True)
        if as_root:
            # Own it first, write, then close it down to read-only for the cell's uid.
            os.chown(directory, 0, 0)
            directory.chmod(0o700)
        write_file(directory / "token", token.encode() + b"\n", mode=0o400 if as_root else 0o444)
        write_file(directory / "ca.pem", ca_pem, mode=0o444)
        if as_root:
            os.chown(directory / "token", uid, gid)
            os.chown(directory, uid, gid)
            directory.chmod(0o500)
        else:
            directory.chmod(0o755)
    except OSError as exc:
        raise IdentityError(
            f"cannot write the cell's identity files in {directory}: {exc.strerror}",
            fix="run `agentcell up` as root, or set AGENTCELL_HOME to a writable place",
        ) from exc
