"""From an admitted spec to the exact settings Docker gets. Pure: no engine needed.

One :class:`ContainerSettings` value renders both the docker SDK's ``containers.create``
arguments and the equivalent ``docker run`` command line, so what ``render`` prints is what
``up`` does.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker.types

from agentcell.cell.labels import (
    LABEL_AGENT,
    LABEL_EXCEPTIONS,
    LABEL_IMAGE_REQUESTED,
    LABEL_IMAGE_TRUST,
    LABEL_MANAGED,
    LABEL_RUNTIME,
    LABEL_SOURCE,
    LABEL_SPEC,
    LABEL_SPEC_HASH,
    LABEL_TENANT,
    LABEL_UID,
)
from agentcell.cell.names import cgroup_parent, container_name
from agentcell.cell.network import PROXY_PORT, TENANT_NETWORK, tenant_network
from agentcell.cell.paths import DOCKER_SOCKET
from agentcell.cell.seccomp import strict_profile_json, strict_profile_path
from agentcell.cell.units import NANO, nanos_from_cpus
from agentcell.errors import Location, SpecError
from agentcell.policy.admission import AdmittedSpec
from agentcell.runtime.uids import cell_ids
from agentcell.spec.model import AgentDocument, TmpfsMount
from agentcell.spec.units import format_bytes

__all__ = [
    "LOG_OPTIONS",
    "RESOLV_CONF",
    "BindMount",
    "ContainerSettings",
    "TenantAttachment",
    "settings_for",
    "spec_hash",
    "spec_json",
]


def spec_json(document: AgentDocument) -> str:
    """The normalized document as compact, key-sorted JSON."""
    return json.dumps(
        document.model_dump(mode="json", by_alias=True), sort_keys=True, separators=(",", ":")
    )


def spec_hash(document: AgentDocument) -> str:
    """A stable digest of everything that shapes the cell; a changed hash means replace."""
    return hashlib.sha256(spec_json(document).encode()).hexdigest()[:16]


LOG_OPTIONS: Mapping[str, str] = {
    "max-size": "10m",
    "max-file": "3",
    "labels": f"{LABEL_TENANT},{LABEL_AGENT}",
}
"""The engine's json-file log options for every cell: 30 MiB at most, tenant and agent on each
line."""


@dataclass(frozen=True, kw_only=True)
class BindMount:
    """A host path mounted into the cell, without the mounts beneath it.

    Docker binds recursively by default and makes only the top mount read-only, so a
    read-only ``/sys`` would bring the host's writable ``/sys/fs/cgroup/*`` along. A
    non-recursive bind shows the cell the one filesystem it asked for. Propagation is
    ``private``, not Docker's default ``rprivate``: crun 1.8 reads the recursive flag of
    ``rprivate`` as a recursive bind and brings the submounts back (``verify`` caught it).
    """

    source: str
    target: str
    read_only: bool

    def engine_mount(self) -> dict[str, Any]:
        """The engine API's ``HostConfig.Mounts`` entry."""
        return {
            "Type": "bind",
            "Source": self.source,
            "Target": self.target,
            "ReadOnly": self.read_only,
            "BindOptions": {"Propagation": "private", "NonRecursive": True},
        }

    def mount_flag(self) -> str:
        """The same mount as ``docker run --mount``'s value."""
        access = ",readonly" if self.read_only else ""
        return (
            f"type=bind,src={self.source},dst={self.target}{access},"
            "bind-propagation=private,bind-nonrecursive"
        )


RESOLV_CONF = "/etc/resolv.conf"
"""Where a networked cell finds its resolver: agentcell's file, bound read-only over the
engine's."""


@dataclass(frozen=True, kw_only=True)
class TenantAttachment:
    """What a cell on its tenant's network gets besides the network: known only once the
    network exists (its gateway address), so the backend passes it in."""

    gateway: str
    """The bridge's gateway address, where agentcell serves the tenant's resolver and gateway."""
    resolv_conf: str
    """The host file naming only the gateway as nameserver (``<run>/net/<tenant>/resolv.conf``)."""
    no_proxy: tuple[str, ...] = ()
    """The tenant's cell names, reached directly rather than through the egress gateway."""

    def environment(self) -> dict[str, str]:
        """The proxy variables: HTTP(S) through the tenant's egress gateway."""
        proxy = f"http://{self.gateway}:{PROXY_PORT}"
        no_proxy = ",".join(self.no_proxy)
        return {
            "HTTPS_PROXY": proxy,
            "HTTP_PROXY": proxy,
            "https_proxy": proxy,
            "http_proxy": proxy,
            "NO_PROXY": no_proxy,
            "no_proxy": no_proxy,
        }


@dataclass(frozen=True, kw_only=True)
class ContainerSettings:
    """Everything agentcell asks the engine for one cell."""

    name: str
    image: str
    entrypoint: tuple[str, ...] | None
    command: tuple[str, ...] | None
    environment: Mapping[str, str]
    user: str
    cap_add: tuple[str, ...]
    security_opt: tuple[str, ...]
    seccomp_file: str | None
    read_only: bool
    tmpfs: Mapping[str, str]
    nano_cpus: int
    mem_limit: int
    memswap_limit: int
    pids_limit: int
    network_mode: str
    internal_network: str | None
    pid_mode: str | None
    mounts: tuple[BindMount, ...]
    restart_policy: str
    restart_retries: int
    healthcheck: Mapping[str, Any] | None
    runtime: str
    cgroup_parent: str
    """The tenant's cgroup parent (``/agentcell/<tenant>``), which bounds the sum of its cells."""
    labels: Mapping[str, str] = field(default_factory=dict)
    dns: tuple[str, ...] = ()
    """Where the engine's embedded DNS (127.0.0.11) forwards: only the tenant's resolver."""
    network_aliases: tuple[str, ...] = ()
    """Names the cell has on its tenant network (its agent name)."""

    def sdk_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``DockerClient.containers.create`` (and ``run``)."""
        kwargs: dict[str, Any] = {
            "image": self.image,
            "name": self.name,
            "entrypoint": list(self.entrypoint) if self.entrypoint is not None else None,
            "command": list(self.command) if self.command is not None else None,
            "environment": dict(self.environment),
            "user": self.user,
            "cap_drop": ["ALL"],
            "cap_add": list(self.cap_add) or None,
            "security_opt": list(self.security_opt),
            "read_only": self.read_only,
            "tmpfs": dict(self.tmpfs),
            "nano_cpus": self.nano_cpus,
            "mem_limit": self.mem_limit,
            "memswap_limit": self.memswap_limit,
            "pids_limit": self.pids_limit,
            "network_mode": self.network_mode,
            "dns": list(self.dns) or None,
            "pid_mode": self.pid_mode,
            "mounts": [mount.engine_mount() for mount in self.mounts],
            "restart_policy": {"Name": self.restart_policy}
            | (
                {"MaximumRetryCount": self.restart_retries}
                if self.restart_policy == "on-failure"
                else {}
            ),
            "healthcheck": dict(self.healthcheck) if self.healthcheck else None,
            "runtime": self.runtime,
            # Its own cgroup namespace: the cell sees its cgroup as the root, not the host's
            # hierarchy (Docker 20.10 shares the host's on cgroup v1 by default).
            "cgroupns": "private",
            # Bounded (a cell must not fill the host's disk with output) and tagged: each line
            # the engine stores carries the cell's tenant and agent labels.
            "log_config": {"Type": "json-file", "Config": dict(LOG_OPTIONS)},
            "cgroup_parent": self.cgroup_parent,
            "labels": dict(self.labels),
            "detach": True,
        }
        if self.internal_network is not None:
            # Joined at creation with the agent name as alias (network_mode cannot carry one).
            del kwargs["network_mode"]
            kwargs["network"] = self.internal_network
            kwargs["networking_config"] = {
                self.internal_network: docker.types.EndpointConfig(
                    "1.41", aliases=list(self.network_aliases) or None
                )
            }
        return {key: value for key, value in kwargs.items() if value is not None}

    def docker_run_argv(self) -> list[str]:
        """The equivalent ``docker run -d`` command line (without the ``org.agentcell.spec``
        bookkeeping label).

        ``docker run`` can only give a healthcheck in shell form, so ``--health-cmd`` needs a
        shell in the image where agentcell's exec form does not.
        """
        argv = ["docker", "run", "-d", "--name", self.name, "--user", self.user]
        argv += ["--cap-drop", "ALL"]
        for cap in self.cap_add:
            argv += ["--cap-add", cap]
        for option in self.security_opt:
            if option.startswith("seccomp=") and self.seccomp_file is not None:
                option = f"seccomp={self.seccomp_file}"
            argv += ["--security-opt", option]
        if self.read_only:
            argv.append("--read-only")
        for path, options in self.tmpfs.items():
            argv += ["--tmpfs", f"{path}:{_human_size(options)}"]
        argv += ["--cpus", _cpus_text(self.nano_cpus)]
        argv += ["--memory", format_bytes(self.mem_limit)]
        argv += ["--memory-swap", format_bytes(self.memswap_limit)]
        argv += ["--pids-limit", str(self.pids_limit)]
        argv += ["--network", self.network_mode]
        for alias in self.network_aliases:
            argv += ["--network-alias", alias]
        for server in self.dns:
            argv += ["--dns", server]
        if self.pid_mode:
            argv += ["--pid", self.pid_mode]
        for mount in self.mounts:
            argv += ["--mount", mount.mount_flag()]
        restart = self.restart_policy
        if restart == "on-failure":
            restart += f":{self.restart_retries}"
        argv += ["--restart", restart]
        if self.healthcheck:
            check = self.healthcheck
            argv += ["--health-cmd", shlex.join(check["test"][1:])]
            argv += ["--health-interval", _duration_text(check["interval"])]
            argv += ["--health-timeout", _duration_text(check["timeout"])]
            argv += ["--health-retries", str(check["retries"])]
            argv += ["--health-start-period", _duration_text(check["start_period"])]
        argv += ["--runtime", self.runtime]
        argv += ["--cgroupns", "private", "--cgroup-parent", self.cgroup_parent]
        argv += ["--log-driver", "json-file"]
        for key, value in LOG_OPTIONS.items():
            argv += ["--log-opt", f"{key}={value}"]
        for key, value in sorted(self.environment.items()):
            argv += ["-e", f"{key}={value}"]
        for key, value in sorted(self.labels.items()):
            # The spec label is agentcell's own record for `verify`; it shapes no isolation
            # and would drown the command in JSON.
            if key != LABEL_SPEC:
                argv += ["--label", f"{key}={value}"]
        if self.entrypoint is not None:
            # docker run takes one word for --entrypoint; the rest goes before the args.
            argv += ["--entrypoint", self.entrypoint[0] if self.entrypoint else ""]
        argv.append(self.image)
        if self.entrypoint:
            argv += list(self.entrypoint[1:])
        if self.command is not None:
            argv += list(self.command)
        return argv

    def docker_run_command(self) -> str:
        """``docker_run_argv`` as one shell-quoted line."""
        return shlex.join(self.docker_run_argv())


def _cpus_text(nano_cpus: int) -> str:
    return f"{nano_cpus / NANO:g}"


def _duration_text(nanoseconds: int) -> str:
    return f"{nanoseconds // 1_000_000}ms" if nanoseconds % NANO else f"{nanoseconds // NANO}s"


def _human_size(tmpfs_options: str) -> str:
    """``size=16777216,...`` -> ``size=16m,...`` for a readable command line."""
    size, _, rest = tmpfs_options.partition(",")
    return f"size={format_bytes(int(size.removeprefix('size=')))},{rest}"


def _tmpfs_options(mount: TmpfsMount, uid: int, gid: int) -> str:
    flags = "" if mount.exec else ",noexec"
    # Owned by the cell's own uid, so an image works under whatever uid it was given.
    return f"size={mount.size},mode=1777,uid={uid},gid={gid}{flags},nosuid,nodev"


def settings_for(
    admitted: AdmittedSpec,
    *,
    image: str | None = None,
    extra_mounts: Sequence[BindMount] = (),
    extra_env: Mapping[str, str] | None = None,
    image_trust: str | None = None,
    uid: int | None = None,
    extra_labels: Mapping[str, str] | None = None,
    attachment: TenantAttachment | None = None,
) -> ContainerSettings:
    """Docker settings for an admitted spec.

    ``image`` overrides the reference (e.g. with a digest). ``extra_mounts`` and ``extra_env``
    carry what agentcell itself gives a cell (identity files, a control-plane socket); they
    are not part of the spec and so do not change its hash. ``image_trust`` says how the
    image was checked (e.g. "signature verified: ..."), for ``ps`` and ``inspect``. ``uid`` is
    the host uid (and gid) allocated to the cell when its spec pins none; without one the
    settings show :data:`~agentcell.runtime.uids.UNALLOCATED` (for ``render`` and host checks).
    ``attachment`` is what a cell on its tenant's network gets once the network exists (DNS
    only through the tenant's resolver, its resolv.conf, the proxy variables); like the
    identity mounts it is agentcell's, not the spec's, and does not change the hash.

    Raises:
        SpecError: a seccomp profile file named by the spec cannot be read.
    """
    doc = admitted.doc
    spec = doc.document.spec
    security = spec.security
    tenant, name = doc.document.key
    cell_uid, cell_gid = cell_ids(security, uid)

    seccomp_file, seccomp_opt = _seccomp(security.seccomp, doc.where("spec", "security", "seccomp"))
    security_opt: list[str] = []
    if security.no_new_privileges:
        security_opt.append("no-new-privileges:true")
    if seccomp_opt is not None:
        security_opt.append(seccomp_opt)

    mounts = [
        BindMount(source=m.source, target=m.target, read_only=m.read_only) for m in spec.host.mounts
    ]
    if spec.host.docker_socket:
        mounts.append(BindMount(source=DOCKER_SOCKET, target=DOCKER_SOCKET, read_only=True))
    mounts.extend(extra_mounts)

    dns: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    network_env: dict[str, str] = {}
    if spec.host.network:
        network_mode, internal = "host", None
    elif spec.network == TENANT_NETWORK:
        network_mode = internal = tenant_network(tenant)
        aliases = (name,)
        if attachment is not None:
            dns = (attachment.gateway,)
            mounts.append(
                BindMount(source=attachment.resolv_conf, target=RESOLV_CONF, read_only=True)
            )
            network_env = attachment.environment()
    else:
        network_mode, internal = "none", None

    healthcheck: dict[str, Any] | None = None
    if spec.healthcheck is not None:
        check = spec.healthcheck
        healthcheck = {
            "test": ["CMD", *check.command],
            "interval": check.interval,
            "timeout": check.timeout,
            "retries": check.retries,
            "start_period": check.start_period,
        }

    labels = {
        **doc.document.metadata.labels,
        **spec.labels,
        LABEL_MANAGED: "true",
        LABEL_TENANT: tenant,
        LABEL_AGENT: name,
        LABEL_SPEC_HASH: spec_hash(doc.document),
        LABEL_RUNTIME: security.runtime,
        LABEL_SOURCE: f"{doc.file}:{doc.line}",
        # The normalized spec travels with the cell so `verify` can compare against it later.
        LABEL_SPEC: spec_json(doc.document),
        LABEL_IMAGE_REQUESTED: spec.image,
        LABEL_UID: str(cell_uid),
        # agentcell's own marks (apply's), never the spec's: those cannot use the prefix.
        **(extra_labels or {}),
    }
    if image_trust is not None:
        labels[LABEL_IMAGE_TRUST] = image_trust
    excepted = sorted({finding.rule for finding in admitted.findings if finding.excepted})
    if excepted:
        labels[LABEL_EXCEPTIONS] = ",".join(excepted)

    return ContainerSettings(
        name=container_name(tenant, name),
        image=image or spec.image,
        entrypoint=spec.command,
        command=spec.args,
        environment={**spec.env, **network_env, **(extra_env or {})},
        user=f"{cell_uid}:{cell_gid}",
        cap_add=security.capabilities,
        security_opt=tuple(security_opt),
        seccomp_file=seccomp_file,
        read_only=security.read_only_rootfs,
        tmpfs={
            mount.path: _tmpfs_options(mount, cell_uid, cell_gid) for mount in spec.resources.tmpfs
        },
        nano_cpus=nanos_from_cpus(spec.resources.cpus),
        mem_limit=spec.resources.memory,
        memswap_limit=spec.resources.memory_swap,
        pids_limit=spec.resources.pids,
        network_mode=network_mode,
        internal_network=internal,
        pid_mode="host" if spec.host.pid else None,
        mounts=tuple(mounts),
        restart_policy=spec.restart.policy,
        restart_retries=spec.restart.max_retries,
        healthcheck=healthcheck,
        runtime=security.runtime,
        cgroup_parent=cgroup_parent(tenant),
        labels=labels,
        dns=dns,
        network_aliases=aliases,
    )


def _seccomp(mode: str, where: Location) -> tuple[str | None, str | None]:
    """(profile file for ``docker run``, the ``security_opt`` entry) for a spec's seccomp mode."""
    if mode == "default":
        return None, None
    if mode == "unconfined":
        return None, "seccomp=unconfined"
    if mode == "strict":
        return str(strict_profile_path()), "seccomp=" + strict_profile_json()
    return mode, _profile_option(Path(mode), where)


def _profile_option(path: Path, where: Location) -> str:
    """``seccomp=<profile JSON>``: the engine wants the profile's content, not its path (the
    docker CLI does this read for its users)."""
    try:
        profile = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SpecError(
            f"cannot read seccomp profile {path}: {exc.strerror}",
            where=where,
            fix="point security.seccomp at a readable JSON profile",
        ) from exc
    except json.JSONDecodeError as exc:
        raise SpecError(
            f"seccomp profile {path} is not JSON: {exc.msg} at line {exc.lineno}",
            where=where,
            fix="fix the profile file",
        ) from exc
    return "seccomp=" + json.dumps(profile, separators=(",", ":"))
