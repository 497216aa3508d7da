"""One backend-neutral view of a cell, so a spec and a running container meet the same rules.

Rules never read a spec or a ``docker inspect`` document: they read a :class:`CellView`.
:func:`view_of_spec` makes one from a spec (the cell as it *will* be) and
:mod:`agentcell.runtime.docker.facts` makes one from the engine (a container as it *is*), so
``lint``, admission in ``up`` and ``audit`` cannot disagree about what a rule means.

Each view also knows where its facts came from. ``view.where("cap_add")`` is a
:class:`~agentcell.errors.Location`: ``file:line: spec.security.capabilities`` for a spec,
``container NAME: HostConfig.CapAdd`` for a container. Facts that come in lists (mounts, tmpfs,
ports, devices, exceptions) carry their own path, so a finding points at the one item at fault.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Literal

from agentcell.cell.fields import FieldPath
from agentcell.cell.paths import (
    DOCKER_SOCKET,
    ENGINE_SOCKETS,
    PROVIDED_TARGETS,
    normalize_host_path,
)
from agentcell.cell.seccomp import blocks_io_uring as blocks_io_uring_in
from agentcell.cell.seccomp import load_profile
from agentcell.cell.units import nanos_from_cpus
from agentcell.errors import Location
from agentcell.spec.load import SpecDocument
from agentcell.spec.units import format_bytes

__all__ = [
    "SENSITIVE_HOST_PATHS",
    "SPEC_PATHS",
    "CellView",
    "DeviceFact",
    "ExceptionFact",
    "HostMountFact",
    "PortFact",
    "TmpfsFact",
    "view_of_spec",
]

ViewKind = Literal["spec", "container"]

# Host directories whose contents decide who is root on the host, or what the kernel does.
# A mount of one of them, of anything below one, or of an ancestor (``/``, ``/var``) counts.
SENSITIVE_HOST_PATHS = (
    "/",
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/lib",
    "/lib32",
    "/lib64",
    "/proc",
    "/root",
    "/run",
    "/sbin",
    "/sys",
    "/usr",
    "/var/lib/containerd",
    "/var/lib/docker",
    "/var/lib/kubelet",
    "/var/run",
)


def _is_within(path: str, directory: str) -> bool:
    return directory == "/" or path == directory or path.startswith(directory + "/")


@dataclass(frozen=True, kw_only=True)
class TmpfsFact:
    """A tmpfs mount and its size limit."""

    path: str
    size: str | None
    """The limit as written (``64m``, ``16777216``, ``50%``); None when nothing bounds it."""
    field: FieldPath


@dataclass(frozen=True, kw_only=True)
class HostMountFact:
    """A host path bind-mounted into the cell."""

    source: str
    target: str
    read_only: bool
    propagation: str
    """The mount propagation mode (``rprivate`` unless someone asked for ``shared``)."""
    field: FieldPath
    provided: bool = False
    """agentcell itself gives the cell this mount (identity files, the control plane's socket
    directory) at one of :data:`PROVIDED_TARGETS`; the spec asked for it with ``identity``."""

    @cached_property
    def host_path(self) -> str:
        """The source, normalized."""
        return normalize_host_path(self.source)

    @cached_property
    def engine_socket(self) -> str | None:
        """The engine socket this mount exposes: the socket itself, or one inside the mounted
        directory (mounting ``/var/run`` hands over ``/var/run/docker.sock`` too)."""
        source = self.host_path
        for socket in ENGINE_SOCKETS:
            if _is_within(socket, source):
                return socket
        return None

    @cached_property
    def is_socket(self) -> bool:
        """The mount is an engine socket itself, not a directory that holds one."""
        return self.host_path in ENGINE_SOCKETS

    def agentcell_state(self, state_dirs: tuple[str, ...]) -> str | None:
        """The agentcell state directory this mount is, lies in, or contains; None if none."""
        source = self.host_path
        for directory in state_dirs:
            if _is_within(source, directory) or _is_within(directory, source):
                return directory
        return None

    @cached_property
    def sensitive(self) -> str | None:
        """The sensitive host directory this mount is, lies in, or contains; None if none."""
        source = self.host_path
        for directory in SENSITIVE_HOST_PATHS:
            if directory == "/":
                if source == "/":
                    return "/"
                continue
            if _is_within(source, directory) or _is_within(directory, source):
                return directory
        return None


@dataclass(frozen=True, kw_only=True)
class PortFact:
    """A container port published on the host."""

    container_port: str
    host_ip: str
    host_port: int | None
    """None when the engine picks an ephemeral port."""
    field: FieldPath


@dataclass(frozen=True, kw_only=True)
class DeviceFact:
    """A host device node passed into the cell."""

    host_path: str
    container_path: str
    field: FieldPath


@dataclass(frozen=True, kw_only=True)
class ExceptionFact:
    """A written exception to one rule, with its reason."""

    rule: str
    reason: str
    field: FieldPath


@dataclass(frozen=True, kw_only=True)
class CellView:
    """What the rules need to know about one cell, whichever backend it came from.

    Every field is required: a translation that forgets a fact must fail to type-check rather
    than hand the rules a secure-looking default.
    """

    kind: ViewKind
    name: str
    """The agent name for a spec, the container name for a container."""
    tenant: str | None
    image: str
    """The image reference as written (``repo:tag``, ``repo@sha256:...`` or an image id)."""
    user: int | None
    """The uid the process starts as; None when only a user name is known."""
    user_text: str
    """The user as written, for messages (``1001:1001``, ``nobody``, empty for the default)."""
    user_allocated: bool
    """agentcell allocates the cell a host uid of its own (the spec pins none)."""
    privileged: bool
    cap_add: tuple[str, ...]
    """Capabilities added, upper case without ``CAP_`` (``ALL`` when all were added)."""
    cap_drop_all: bool
    """Every capability was dropped before ``cap_add`` were added back."""
    read_only_rootfs: bool
    no_new_privileges: bool
    seccomp: str
    """``default`` (the engine's), ``strict``, ``unconfined``, or ``custom:<path or inline>``."""
    seccomp_blocks_io_uring: bool | None
    """Whether the seccomp filter refuses io_uring_setup/enter/register; None if unknown."""
    apparmor: str | None
    """The AppArmor profile; None for the engine default, ``""`` when the engine applied none."""
    runtime: str
    memory: int | None
    """Memory limit in bytes; None for unlimited."""
    memory_swap: int | None
    """Memory plus swap limit in bytes; None for unlimited swap."""
    cpu_nanos: int | None
    """CPU limit in billionths of a core (quota); None when only shares or nothing is set."""
    pids_limit: int | None
    tmpfs: tuple[TmpfsFact, ...]
    host_mounts: tuple[HostMountFact, ...]
    host_pid: bool
    host_network: bool
    host_ipc: bool
    host_uts: bool
    host_userns: bool
    devices: tuple[DeviceFact, ...]
    restart_policy: str
    """``no``, ``on-failure``, ``always`` or ``unless-stopped``."""
    restart_max_retries: int | None
    """Restarts before giving up under ``on-failure``; None when unbounded."""
    healthcheck: bool | None
    """A healthcheck is configured; None when the spec leaves it to the image."""
    network: str
    """``none``, ``host``, ``bridge`` or the name of a user-defined network."""
    default_bridge: bool
    """Attached to the engine's default bridge (``docker0``), shared by every such container."""
    ports: tuple[PortFact, ...]
    exceptions: tuple[ExceptionFact, ...]
    image_agentcell_labels: tuple[str, ...]
    """``org.agentcell.*`` label keys the image itself carries (only agentcell may set them)."""
    origin: Callable[[FieldPath], Location] = field(repr=False, compare=False)
    """Turns a field path of the source (spec or inspect document) into a location."""
    paths: Mapping[str, FieldPath] = field(repr=False, compare=False)
    """Where each fact (a field name of this class) was read from in the source."""
    host_rules: str | None = None
    """What is missing or altered in the host rules of the tenant network the container is on,
    as audit read them from the kernel; None when they are in place or do not apply (a spec,
    a container without a tenant network). The one fact a translation does not give: audit's
    host reader adds it."""

    def where(self, fact: str, item: FieldPath | None = None) -> Location:
        """The location of ``fact``, or of one ``item`` of a fact that is a list."""
        return self.origin(item if item is not None else self.paths.get(fact, ()))

    @property
    def subject(self) -> str:
        """``tenant/name`` for an agentcell cell, else the container name."""
        return f"{self.tenant}/{self.name}" if self.tenant and self.kind == "spec" else self.name

    @property
    def exception_reasons(self) -> dict[str, str]:
        """Rule id -> the reason written for excepting it."""
        return {exception.rule: exception.reason for exception in self.exceptions}


# Where each fact of a spec view is written; a field left at its default points at the
# nearest ancestor the author wrote (see SpecDocument.where).
SPEC_PATHS: Mapping[str, FieldPath] = {
    "kind": (),
    "name": ("metadata", "name"),
    "tenant": ("metadata", "tenant"),
    "image": ("spec", "image"),
    "user": ("spec", "security", "user"),
    "user_text": ("spec", "security", "user"),
    "user_allocated": ("spec", "security", "user"),
    "privileged": ("spec", "security"),
    "cap_add": ("spec", "security", "capabilities"),
    "cap_drop_all": ("spec", "security", "capabilities"),
    "read_only_rootfs": ("spec", "security", "read_only_rootfs"),
    "no_new_privileges": ("spec", "security", "no_new_privileges"),
    "seccomp": ("spec", "security", "seccomp"),
    "seccomp_blocks_io_uring": ("spec", "security", "seccomp"),
    "apparmor": ("spec", "security"),
    "runtime": ("spec", "security", "runtime"),
    "memory": ("spec", "resources", "memory"),
    "memory_swap": ("spec", "resources", "memory_swap"),
    "cpu_nanos": ("spec", "resources", "cpus"),
    "pids_limit": ("spec", "resources", "pids"),
    "tmpfs": ("spec", "resources", "tmpfs"),
    "host_mounts": ("spec", "host", "mounts"),
    "host_pid": ("spec", "host", "pid"),
    "host_network": ("spec", "host", "network"),
    "host_ipc": ("spec", "host"),
    "host_uts": ("spec", "host"),
    "host_userns": ("spec", "host"),
    "devices": ("spec",),
    "restart_policy": ("spec", "restart", "policy"),
    "restart_max_retries": ("spec", "restart", "max_retries"),
    "healthcheck": ("spec", "healthcheck"),
    "network": ("spec", "network"),
    "default_bridge": ("spec", "network"),
    "ports": ("spec",),
    "exceptions": ("spec", "exceptions"),
    "image_agentcell_labels": ("spec", "image"),
}


def view_of_spec(doc: SpecDocument) -> CellView:
    """The cell a spec asks for, as the rules see it. Pure.

    The spec model cannot express some settings (privileged mode, added devices, host IPC,
    published ports): agentcell never asks the engine for them, so they are false or empty
    here. Capabilities are always dropped (``--cap-drop ALL``) before the listed ones are
    added back.
    """
    document = doc.document
    spec = document.spec
    security = spec.security
    resources = spec.resources
    host = spec.host

    mounts = [
        HostMountFact(
            source=mount.source,
            target=mount.target,
            read_only=mount.read_only,
            propagation="rprivate",
            field=("spec", "host", "mounts", index),
        )
        for index, mount in enumerate(host.mounts)
    ]
    if host.docker_socket:
        mounts.append(
            HostMountFact(
                source=DOCKER_SOCKET,
                target=DOCKER_SOCKET,
                read_only=True,
                propagation="rprivate",
                field=("spec", "host", "docker_socket"),
            )
        )

    if spec.identity:
        # What up adds for an identity cell: its token and CA, and the directory of the
        # control plane's agent socket, both read-only, both from agentcell's run directory.
        mounts.extend(
            HostMountFact(
                source=target,
                target=target,
                read_only=True,
                propagation="rprivate",
                field=("spec", "identity"),
                provided=True,
            )
            for target in PROVIDED_TARGETS
        )

    if security.seccomp in ("default", "strict", "unconfined"):
        seccomp = security.seccomp
        # The engine's own profile allows io_uring on Docker 20.10; strict is agentcell's.
        blocks_io_uring: bool | None = security.seccomp == "strict"
    else:
        seccomp = f"custom:{security.seccomp}"
        # Read with the same analysis audit applies to the profile the engine holds, so lint
        # and audit agree about a custom profile.
        blocks_io_uring = blocks_io_uring_in(load_profile(_profile_text(security.seccomp)))

    restart = spec.restart
    # Docker reads on-failure with 0 retries as "retry forever".
    retries = restart.max_retries if restart.policy == "on-failure" else None
    if restart.policy == "on-failure" and retries == 0:
        retries = None

    network = "host" if host.network else spec.network
    return CellView(
        kind="spec",
        name=document.metadata.name,
        tenant=document.metadata.tenant,
        image=spec.image,
        user=security.user,
        user_text="allocated by agentcell"
        if security.user is None
        else f"{security.user}:{security.user if security.group is None else security.group}",
        user_allocated=security.user is None,
        privileged=False,
        cap_add=security.capabilities,
        cap_drop_all=True,
        read_only_rootfs=security.read_only_rootfs,
        no_new_privileges=security.no_new_privileges,
        seccomp=seccomp,
        seccomp_blocks_io_uring=blocks_io_uring,
        apparmor=None,
        runtime=security.runtime,
        memory=resources.memory,
        memory_swap=resources.memory_swap,
        cpu_nanos=nanos_from_cpus(resources.cpus),
        pids_limit=resources.pids,
        tmpfs=tuple(
            TmpfsFact(
                path=mount.path,
                size=format_bytes(mount.size),
                field=("spec", "resources", "tmpfs", i),
            )
            for i, mount in enumerate(resources.tmpfs)
        ),
        host_mounts=tuple(mounts),
        host_pid=host.pid,
        host_network=host.network,
        host_ipc=False,
        host_uts=False,
        host_userns=False,
        devices=(),
        restart_policy=restart.policy,
        restart_max_retries=retries,
        healthcheck=True if spec.healthcheck is not None else None,
        network=network,
        default_bridge=False,
        ports=(),
        exceptions=tuple(
            ExceptionFact(
                rule=exception.rule, reason=exception.reason, field=("spec", "exceptions", i)
            )
            for i, exception in enumerate(spec.exceptions)
        ),
        # The image is read only at launch, which refuses agentcell labels in it.
        image_agentcell_labels=(),
        origin=_spec_origin(doc),
        paths=SPEC_PATHS,
    )


def _profile_text(path: str) -> str:
    """A custom profile's text; empty (unknown to the analysis) when it cannot be read."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return ""


def _spec_origin(doc: SpecDocument) -> Callable[[FieldPath], Location]:
    def origin(path: FieldPath) -> Location:
        return doc.where(*path)

    return origin
