"""Where things are: engine sockets, what agentcell mounts into a cell, agentcell's own
state on the host, and the files shipped in the package."""

from __future__ import annotations

import os
import posixpath
from collections.abc import Mapping
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

__all__ = [
    "CELL_IDENTITY_DIR",
    "CELL_RUN_DIR",
    "CELL_SOCKET_DIR",
    "CONTROL_PLANE_SERVER_NAME",
    "DOCKER_SOCKET",
    "ENGINE_SOCKETS",
    "ENGINE_SOCKET_NAMES",
    "PROVIDED_TARGETS",
    "SYSTEM_RUN_DIR",
    "SYSTEM_STATE_DIR",
    "agentcell_state_dirs",
    "asset",
    "normalize_host_path",
    "run_dir",
    "state_dir",
]

DOCKER_SOCKET = "/var/run/docker.sock"
"""The engine socket ``host.docker_socket: true`` mounts (read-only, and still high risk)."""
# Sockets that hand out control of a container engine, and so of the host, to whoever can
# connect(2) to them. A read-only bind mount does not stop connect(2).
ENGINE_SOCKETS = (
    DOCKER_SOCKET,
    "/run/docker.sock",
    "/run/containerd/containerd.sock",
    "/var/run/containerd/containerd.sock",
    "/run/crio/crio.sock",
    "/var/run/crio/crio.sock",
    "/run/podman/podman.sock",
    "/var/run/cri-dockerd.sock",
)
ENGINE_SOCKET_NAMES = ("docker.sock", "containerd.sock", "crio.sock", "podman.sock")
"""File names that are engine sockets wherever they are mounted from."""

# Inside a cell: what agentcell itself mounts for a cell with ``identity: true``.
CELL_RUN_DIR = "/run/agentcell"
CELL_IDENTITY_DIR = f"{CELL_RUN_DIR}/identity"
"""The cell's join token and the CA certificate (read-only)."""
CELL_SOCKET_DIR = f"{CELL_RUN_DIR}/controlplane"
"""The directory holding only the control plane's agent socket (read-only)."""
PROVIDED_TARGETS = (CELL_IDENTITY_DIR, CELL_SOCKET_DIR)
CONTROL_PLANE_SERVER_NAME = "agentcell-controlplane"
"""The name in the control plane's TLS certificate, which an agent in a cell checks."""

# On the host: agentcell's own state (CA key, admin token, database) and run directory (the
# agents' socket, every cell's identity directory). AGENTCELL_HOME moves both under one root.
SYSTEM_STATE_DIR = Path("/var/lib/agentcell/controlplane")
SYSTEM_RUN_DIR = Path("/run/agentcell")


def state_dir(environ: Mapping[str, str] | None = None) -> Path:
    """The control plane's state directory: ``$AGENTCELL_HOME/controlplane`` or the system's."""
    home = (os.environ if environ is None else environ).get("AGENTCELL_HOME")
    return Path(home) / "controlplane" if home else SYSTEM_STATE_DIR


def run_dir(environ: Mapping[str, str] | None = None) -> Path:
    """The run directory: ``$AGENTCELL_HOME/run`` or ``/run/agentcell``."""
    home = (os.environ if environ is None else environ).get("AGENTCELL_HOME")
    return Path(home) / "run" if home else SYSTEM_RUN_DIR


def normalize_host_path(path: str) -> str:
    """``/var//run/`` and ``//var/run`` -> ``/var/run``: one spelling per host path, so a
    trailing slash or a doubled one cannot hide a sensitive mount from a prefix test."""
    normalized = posixpath.normpath("/" + path.lstrip("/"))
    return "/" + normalized.lstrip("/")


def agentcell_state_dirs(environ: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """Host directories holding agentcell's own state: keys, tokens, the database, sockets.

    ``AGENTCELL_HOME`` (tests and non-root users put everything there), the system state and
    run directories, ``/etc/agentcell`` (trust config, keys), and ``AGENTCELL_TRUST_CONFIG``'s
    directory. Read when asked, so a check judges against the host it runs on.
    """
    env = os.environ if environ is None else environ
    dirs = ["/var/lib/agentcell", str(SYSTEM_RUN_DIR), "/var/run/agentcell", "/etc/agentcell"]
    if env.get("AGENTCELL_HOME"):
        dirs.append(env["AGENTCELL_HOME"])
    if env.get("AGENTCELL_TRUST_CONFIG"):
        dirs.append(posixpath.dirname(env["AGENTCELL_TRUST_CONFIG"]) or "/")
    return tuple(dict.fromkeys(normalize_host_path(d) for d in dirs))


def asset(*parts: str) -> Traversable:
    """A file or folder shipped in ``agentcell/assets`` (Dockerfiles, programs, profiles)."""
    found = files("agentcell") / "assets"
    for part in parts:
        found = found / part
    return found
