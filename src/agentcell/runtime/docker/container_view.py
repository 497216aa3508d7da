"""A container's ``docker inspect`` document, as the policy rules see it. Pure: no engine.

The document is parsed through small pydantic models that ignore what the rules do not need,
then translated into a :class:`~agentcell.policy.view.CellView`, so a container agentcell
never saw is judged by exactly the rules that admit a spec. Findings point at the inspect
field they came from (``container web: HostConfig.CapAdd``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pydantic
from pydantic import BaseModel, ConfigDict, Field

from agentcell.cell.fields import FieldPath, dotted
from agentcell.cell.labels import (
    LABEL_EXCEPTIONS,
    LABEL_SOURCE,
    LABEL_SPEC,
    LABEL_TENANT,
    agentcell_labels,
    trusted_labels,
)
from agentcell.cell.paths import PROVIDED_TARGETS, normalize_host_path
from agentcell.cell.seccomp import (
    blocks_io_uring,
    is_strict_profile,
    load_profile,
)
from agentcell.cell.units import NANO
from agentcell.errors import BackendError, Location
from agentcell.policy.audit import ObservedContainer
from agentcell.policy.view import (
    CellView,
    DeviceFact,
    ExceptionFact,
    HostMountFact,
    PortFact,
    TmpfsFact,
)
from agentcell.runtime.docker.networks import tenant_net_dir
from agentcell.runtime.docker.translate import RESOLV_CONF

__all__ = ["INSPECT_PATHS", "view_of_container"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)


class _RestartPolicy(_Model):
    name: str | None = Field(default=None, alias="Name")
    maximum_retry_count: int | None = Field(default=None, alias="MaximumRetryCount")


class _PortBinding(_Model):
    host_ip: str | None = Field(default=None, alias="HostIp")
    host_port: str | None = Field(default=None, alias="HostPort")


class _Device(_Model):
    path_on_host: str = Field(default="", alias="PathOnHost")
    path_in_container: str = Field(default="", alias="PathInContainer")


class _TmpfsOptions(_Model):
    size_bytes: int | None = Field(default=None, alias="SizeBytes")


class _HostConfigMount(_Model):
    type: str = Field(default="", alias="Type")
    target: str = Field(default="", alias="Target")
    tmpfs_options: _TmpfsOptions | None = Field(default=None, alias="TmpfsOptions")


class _HostConfig(_Model):
    privileged: bool | None = Field(default=None, alias="Privileged")
    cap_add: list[str] | None = Field(default=None, alias="CapAdd")
    cap_drop: list[str] | None = Field(default=None, alias="CapDrop")
    readonly_rootfs: bool | None = Field(default=None, alias="ReadonlyRootfs")
    security_opt: list[str] | None = Field(default=None, alias="SecurityOpt")
    runtime: str | None = Field(default=None, alias="Runtime")
    memory: int | None = Field(default=None, alias="Memory")
    memory_swap: int | None = Field(default=None, alias="MemorySwap")
    nano_cpus: int | None = Field(default=None, alias="NanoCpus")
    cpu_quota: int | None = Field(default=None, alias="CpuQuota")
    cpu_period: int | None = Field(default=None, alias="CpuPeriod")
    pids_limit: int | None = Field(default=None, alias="PidsLimit")
    tmpfs: dict[str, str] | None = Field(default=None, alias="Tmpfs")
    mounts: list[_HostConfigMount] | None = Field(default=None, alias="Mounts")
    pid_mode: str | None = Field(default=None, alias="PidMode")
    network_mode: str | None = Field(default=None, alias="NetworkMode")
    ipc_mode: str | None = Field(default=None, alias="IpcMode")
    uts_mode: str | None = Field(default=None, alias="UTSMode")
    userns_mode: str | None = Field(default=None, alias="UsernsMode")
    devices: list[_Device] | None = Field(default=None, alias="Devices")
    restart_policy: _RestartPolicy | None = Field(default=None, alias="RestartPolicy")
    port_bindings: dict[str, list[_PortBinding] | None] | None = Field(
        default=None, alias="PortBindings"
    )


class _Mount(_Model):
    type: str = Field(default="", alias="Type")
    source: str = Field(default="", alias="Source")
    destination: str = Field(default="", alias="Destination")
    rw: bool = Field(default=True, alias="RW")
    propagation: str = Field(default="", alias="Propagation")


class _Healthcheck(_Model):
    test: list[str] | None = Field(default=None, alias="Test")


class _Config(_Model):
    user: str | None = Field(default=None, alias="User")
    image: str | None = Field(default=None, alias="Image")
    labels: dict[str, str] | None = Field(default=None, alias="Labels")
    healthcheck: _Healthcheck | None = Field(default=None, alias="Healthcheck")


class _State(_Model):
    status: str | None = Field(default=None, alias="Status")


class _Inspect(_Model):
    id: str = Field(alias="Id")
    name: str = Field(alias="Name")
    image_id: str | None = Field(default=None, alias="Image")
    state: _State | None = Field(default=None, alias="State")
    apparmor_profile: str | None = Field(default=None, alias="AppArmorProfile")
    host_config: _HostConfig = Field(alias="HostConfig")
    config: _Config = Field(default_factory=_Config, alias="Config")
    mounts: list[_Mount] | None = Field(default=None, alias="Mounts")


# Where each fact of a container view is read from in its inspect document.
INSPECT_PATHS: Mapping[str, FieldPath] = {
    "kind": (),
    "name": ("Name",),
    "tenant": ("Config", "Labels", LABEL_TENANT),
    "image": ("Config", "Image"),
    "user": ("Config", "User"),
    "user_text": ("Config", "User"),
    "privileged": ("HostConfig", "Privileged"),
    "cap_add": ("HostConfig", "CapAdd"),
    "cap_drop_all": ("HostConfig", "CapDrop"),
    "read_only_rootfs": ("HostConfig", "ReadonlyRootfs"),
    "no_new_privileges": ("HostConfig", "SecurityOpt"),
    "seccomp": ("HostConfig", "SecurityOpt"),
    "seccomp_blocks_io_uring": ("HostConfig", "SecurityOpt"),
    "apparmor": ("AppArmorProfile",),
    "runtime": ("HostConfig", "Runtime"),
    "memory": ("HostConfig", "Memory"),
    "memory_swap": ("HostConfig", "MemorySwap"),
    "cpu_nanos": ("HostConfig", "NanoCpus"),
    "pids_limit": ("HostConfig", "PidsLimit"),
    "tmpfs": ("HostConfig", "Tmpfs"),
    "host_mounts": ("Mounts",),
    "host_pid": ("HostConfig", "PidMode"),
    "host_network": ("HostConfig", "NetworkMode"),
    "host_ipc": ("HostConfig", "IpcMode"),
    "host_uts": ("HostConfig", "UTSMode"),
    "host_userns": ("HostConfig", "UsernsMode"),
    "devices": ("HostConfig", "Devices"),
    "restart_policy": ("HostConfig", "RestartPolicy", "Name"),
    "restart_max_retries": ("HostConfig", "RestartPolicy", "MaximumRetryCount"),
    "healthcheck": ("Config", "Healthcheck"),
    "network": ("HostConfig", "NetworkMode"),
    "default_bridge": ("HostConfig", "NetworkMode"),
    "ports": ("HostConfig", "PortBindings"),
    "exceptions": ("Config", "Labels", LABEL_EXCEPTIONS),
    "image_agentcell_labels": ("Image",),
    "user_allocated": ("Config", "User"),
}


def view_of_container(
    attrs: Mapping[str, Any], *, image_labels: Mapping[str, str] | None = None
) -> ObservedContainer:
    """Translate one ``docker inspect`` document. Pure.

    ``image_labels`` are the labels of the container's image: the engine copies them into the
    container's, so an agentcell label the image carries proves nothing, and a container whose
    image has any is not treated as an agentcell cell (see
    :func:`~agentcell.cell.labels.trusted_labels`).

    Raises:
        BackendError: the document lacks what every engine returns (Id, Name, HostConfig).
    """
    try:
        inspect = _Inspect.model_validate(attrs)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        raise BackendError(
            "the engine returned an inspect document agentcell cannot read: "
            f"{dotted(tuple(first['loc']))}: {first['msg']}",
            fix="check the engine version (Docker 20.10 or later)",
        ) from exc

    host = inspect.host_config
    config = inspect.config
    labels = config.labels or {}
    name = inspect.name.lstrip("/") or inspect.id[:12]
    from_image = tuple(sorted(agentcell_labels(image_labels or {})))
    managed = trusted_labels(labels, image_labels or {}) is not None
    privileged = bool(host.privileged)
    options = _SecurityOptions.parse(host.security_opt or [])
    uid, user_text = _user(config.user or "")

    memory = host.memory if host.memory and host.memory > 0 else None
    view = CellView(
        kind="container",
        name=name,
        tenant=labels.get(LABEL_TENANT) if managed else None,
        image=config.image or inspect.image_id or "",
        user=uid,
        user_text=user_text,
        user_allocated=False,
        privileged=privileged,
        cap_add=tuple(_capability(cap) for cap in host.cap_add or []),
        cap_drop_all=not privileged and "ALL" in {_capability(c) for c in host.cap_drop or []},
        read_only_rootfs=bool(host.readonly_rootfs),
        no_new_privileges=options.no_new_privileges,
        seccomp="unconfined" if privileged else options.seccomp,
        seccomp_blocks_io_uring=False if privileged else options.seccomp_blocks_io_uring,
        apparmor=_apparmor(inspect.apparmor_profile, options.apparmor),
        runtime=host.runtime or "runc",
        memory=memory,
        memory_swap=_memory_swap(memory, host.memory_swap),
        cpu_nanos=_cpu_nanos(host),
        pids_limit=host.pids_limit if host.pids_limit and host.pids_limit > 0 else None,
        tmpfs=_tmpfs(host),
        host_mounts=tuple(
            HostMountFact(
                source=mount.source,
                target=mount.destination,
                read_only=not mount.rw,
                propagation=mount.propagation or "rprivate",
                field=("Mounts", index),
                # Only agentcell's cells, and only at the exact places agentcell mounts to.
                provided=managed
                and _provided(mount.source, mount.destination, labels.get(LABEL_TENANT, "")),
            )
            for index, mount in enumerate(inspect.mounts or [])
            if mount.type == "bind"
        ),
        host_pid=host.pid_mode == "host",
        host_network=host.network_mode == "host",
        host_ipc=host.ipc_mode == "host",
        host_uts=host.uts_mode == "host",
        host_userns=host.userns_mode == "host",
        devices=tuple(
            DeviceFact(
                host_path=device.path_on_host,
                container_path=device.path_in_container or device.path_on_host,
                field=("HostConfig", "Devices", index),
            )
            for index, device in enumerate(host.devices or [])
        ),
        restart_policy=_restart_name(host.restart_policy),
        restart_max_retries=_restart_retries(host.restart_policy),
        healthcheck=_healthcheck(config.healthcheck),
        network="bridge" if host.network_mode in (None, "", "default") else host.network_mode,
        default_bridge=host.network_mode in (None, "", "default", "bridge"),
        ports=_ports(host),
        exceptions=_exceptions(labels) if managed else (),
        image_agentcell_labels=from_image,
        origin=_container_origin(name),
        paths=INSPECT_PATHS,
    )
    return ObservedContainer(
        view=view,
        container_id=inspect.id,
        state=(inspect.state.status if inspect.state else None) or "unknown",
        managed=managed,
    )


class _SecurityOptions:
    """What ``HostConfig.SecurityOpt`` says about no-new-privileges, seccomp and AppArmor."""

    def __init__(self) -> None:
        self.no_new_privileges = False
        self.seccomp = "default"
        self.seccomp_blocks_io_uring: bool | None = False  # the engine default allows it
        self.apparmor: str | None = None

    @classmethod
    def parse(cls, options: list[str]) -> _SecurityOptions:
        parsed = cls()
        for option in options:
            # The engine accepts both key=value and the older key:value spelling.
            key, sep, value = option.partition("=")
            if not sep:
                key, _, value = option.partition(":")
            if key == "no-new-privileges":
                parsed.no_new_privileges = value.lower() in ("", "true")
            elif key == "seccomp":
                parsed._seccomp(value)
            elif key == "apparmor":
                parsed.apparmor = value
        return parsed

    def _seccomp(self, value: str) -> None:
        if value == "unconfined":
            self.seccomp, self.seccomp_blocks_io_uring = "unconfined", False
        elif value in ("", "builtin", "default"):
            self.seccomp, self.seccomp_blocks_io_uring = "default", False
        else:
            # The docker CLI reads a profile file and sends its content inline.
            profile = load_profile(value)
            self.seccomp = "strict" if is_strict_profile(profile) else "custom:inline profile"
            self.seccomp_blocks_io_uring = blocks_io_uring(profile)


def _user(text: str) -> tuple[int | None, str]:
    """(uid, as written). An empty user is the image default, and the image default is root
    unless the image says otherwise, which the engine has already merged into ``Config``."""
    user = text.partition(":")[0]
    if user in ("", "root"):
        return 0, text
    if user.isdigit():
        return int(user), text
    return None, text


def _capability(name: str) -> str:
    return name.upper().removeprefix("CAP_")


def _apparmor(profile: str | None, requested: str | None) -> str | None:
    if requested == "unconfined" or profile == "unconfined":
        return "unconfined"
    if profile:
        return profile
    return ""


def _memory_swap(memory: int | None, swap: int | None) -> int | None:
    if memory is None or swap is None or swap < 0:
        return None
    if swap == 0:
        # The engine doubles the memory limit for swap when none is given.
        return memory * 2
    return swap


def _cpu_nanos(host: _HostConfig) -> int | None:
    if host.nano_cpus and host.nano_cpus > 0:
        return host.nano_cpus
    if host.cpu_quota and host.cpu_quota > 0:
        period = host.cpu_period if host.cpu_period and host.cpu_period > 0 else 100_000
        return host.cpu_quota * NANO // period
    return None


def _tmpfs(host: _HostConfig) -> tuple[TmpfsFact, ...]:
    mounts = []
    for path, options in (host.tmpfs or {}).items():
        size = None
        for option in options.split(","):
            key, _, value = option.partition("=")
            if key.strip() == "size" and value.strip() not in ("", "0"):
                size = value.strip()
        mounts.append(TmpfsFact(path=path, size=size, field=("HostConfig", "Tmpfs", path)))
    for index, mount in enumerate(host.mounts or []):
        if mount.type != "tmpfs":
            continue
        limit = mount.tmpfs_options.size_bytes if mount.tmpfs_options else None
        mounts.append(
            TmpfsFact(
                path=mount.target,
                size=str(limit) if limit else None,
                field=("HostConfig", "Mounts", index),
            )
        )
    return tuple(mounts)


def _restart_name(policy: _RestartPolicy | None) -> str:
    name = policy.name if policy else None
    return name or "no"


def _restart_retries(policy: _RestartPolicy | None) -> int | None:
    if policy is None or policy.name != "on-failure":
        return None
    # on-failure with 0 retries restarts forever.
    return policy.maximum_retry_count or None


def _healthcheck(check: _Healthcheck | None) -> bool:
    return bool(check and check.test and check.test[0] != "NONE")


def _ports(host: _HostConfig) -> tuple[PortFact, ...]:
    ports = []
    for container_port, bindings in (host.port_bindings or {}).items():
        for index, binding in enumerate(bindings or []):
            host_port = (binding.host_port or "").split("-")[0]
            ports.append(
                PortFact(
                    container_port=container_port,
                    host_ip=binding.host_ip or "",
                    host_port=int(host_port) if host_port.isdigit() else None,
                    field=("HostConfig", "PortBindings", container_port, index),
                )
            )
    return tuple(ports)


class _WrittenException(_Model):
    rule: str
    reason: str


class _LabelledSpecBody(_Model):
    exceptions: list[_WrittenException] = Field(default_factory=list)


class _LabelledSpec(_Model):
    spec: _LabelledSpecBody


def _exceptions(labels: Mapping[str, str]) -> tuple[ExceptionFact, ...]:
    """The exceptions an agentcell cell was admitted with, and their written reasons.

    Reasons come from the normalized spec the cell carries (``org.agentcell.spec``); a rule id
    listed only in ``org.agentcell.exceptions`` points at the spec file instead.
    """
    found: dict[str, ExceptionFact] = {}
    try:
        written = _LabelledSpec.model_validate_json(labels.get(LABEL_SPEC, "")).spec.exceptions
    except pydantic.ValidationError:
        written = []  # an older cell without the label, or one that was tampered with
    for exception in written:
        found.setdefault(
            exception.rule,
            ExceptionFact(
                rule=exception.rule,
                reason=exception.reason,
                field=("Config", "Labels", LABEL_SPEC),
            ),
        )
    source = labels.get(LABEL_SOURCE, "the spec")
    for rule in filter(None, (r.strip() for r in labels.get(LABEL_EXCEPTIONS, "").split(","))):
        found.setdefault(
            rule,
            ExceptionFact(
                rule=rule,
                reason=f"excepted in {source}",
                field=("Config", "Labels", LABEL_EXCEPTIONS),
            ),
        )
    return tuple(found[rule] for rule in sorted(found))


def _container_origin(name: str) -> Callable[[FieldPath], Location]:
    def origin(path: FieldPath) -> Location:
        return Location(file=f"container {name}", field=dotted(path) or None)

    return origin


def _provided(source: str, destination: str, tenant: str) -> bool:
    """Whether agentcell itself mounts ``source`` at ``destination`` in a cell of ``tenant``:
    its identity and the agents' socket directory, or its tenant network's resolv.conf."""
    target = normalize_host_path(destination)
    if target in PROVIDED_TARGETS:
        return True
    return (
        bool(tenant)
        and target == RESOLV_CONF
        and normalize_host_path(source) == str(tenant_net_dir(tenant) / "resolv.conf")
    )
