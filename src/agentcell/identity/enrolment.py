"""Giving a cell what it needs to enrol: a join token, the CA bundle and the agents' socket.

``up`` calls :func:`prepare_cell` for a spec with ``identity: true`` before it launches the
cell. The control plane issues a one-time token bound to the spec's tenant and name; it is
written into the cell's own directory under the run directory (a tmpfs on a normal host),
readable only by the cell's uid, next to a copy of the CA certificate. The cell gets two
read-only mounts and no others from this module:

- ``/run/agentcell/identity``: its token and ``ca.pem`` (nothing of the state directory);
- ``/run/agentcell/controlplane``: the directory that holds only the agents' Unix socket.

The directory is mounted rather than the socket file, so a restarted control plane's new socket
appears in running cells. The key is made by the agent in its own tmpfs and never crosses.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from agentcell.identity.errors import IdentityError
from agentcell.identity.files import write_file
from agentcell.runtime.docker.translate import BindMount

if TYPE_CHECKING:
    from agentcell.controlplane.client import AdminClient
    from agentcell.policy.admission import AdmittedSpec

__all__ = ["CELL_IDENTITY_DIR", "CELL_SOCKET_DIR", "CellIdentity", "prepare_cell"]

CELL_IDENTITY_DIR = "/run/agentcell/identity"
CELL_SOCKET_DIR = "/run/agentcell/controlplane"
SERVER_NAME = "agentcell-controlplane"


@dataclass(frozen=True, kw_only=True)
class CellIdentity:
    """What ``up`` adds to an identity cell: read-only mounts and environment variables."""

    mounts: tuple[BindMount, ...]
    env: dict[str, str]
    spiffe_id: str
    token_expires_at: float
    identity_dir: Path


def prepare_cell(
    admitted: AdmittedSpec, client: AdminClient, *, uid: tuple[int, int]
) -> CellIdentity:
    """Ask the control plane for a join token and lay out the cell's identity directory,
    owned by the cell's (uid, gid) alone.

    Raises:
        ControlPlaneUnavailable: the control plane does not answer.
        ControlPlaneError: it refused to issue a token.
        IdentityError: it does not serve the agents' socket, or the files cannot be written.
    """
    paths = client.settings.paths
    tenant, name = admitted.doc.tenant, admitted.doc.name
    if not paths.agent_socket.exists():
        raise IdentityError(
            f"the control plane's agent socket {paths.agent_socket} does not exist",
            fix="start `agentcell server` on this host (with the same AGENTCELL_HOME), "
            "without --no-agent-socket",
        )
    token = client.join_token(tenant, name)
    identity_dir = paths.cell_identity_dir(tenant, name)
    _write_identity_dir(
        identity_dir,
        token=token.token,
        ca_pem=paths.ca_bundle.read_bytes(),
        uid=uid[0],
        gid=uid[1],
    )
    return CellIdentity(
        mounts=(
            BindMount(source=str(identity_dir), target=CELL_IDENTITY_DIR, read_only=True),
            BindMount(source=str(paths.agent_socket_dir), target=CELL_SOCKET_DIR, read_only=True),
        ),
        env={
            "AGENTCELL_CONTROL_PLANE": f"unix://{CELL_SOCKET_DIR}/{paths.agent_socket.name}",
            "AGENTCELL_IDENTITY_DIR": CELL_IDENTITY_DIR,
            "AGENTCELL_SERVER_NAME": SERVER_NAME,
        },
        spiffe_id=token.spiffe_id,
        token_expires_at=token.expires_at,
        identity_dir=identity_dir,
    )


def _write_identity_dir(directory: Path, *, token: str, ca_pem: bytes, uid: int, gid: int) -> None:
    """Token 0400 and CA 0444 in a 0500 directory owned by the cell's uid (when we are root,
    which can give it away); otherwise readable by all, which a non-root test run needs."""
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
