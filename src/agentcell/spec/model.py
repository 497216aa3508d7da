"""The ``agentcell/v1`` ``Agent`` document.

Every default here is the secure one; anything weaker must be written in the spec, where the
policy layer sees it and reports it. Models are frozen and refuse unknown fields, so a typo is an
error rather than a silently ignored setting.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    StringConstraints,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from agentcell.cell.labels import LABEL_PREFIX
from agentcell.cell.names import DNS_LABEL, NAME_MAX, TENANT_MAX
from agentcell.cell.network import TENANT_NETWORK
from agentcell.cell.paths import DOCKER_SOCKET
from agentcell.spec.units import format_bytes, parse_bytes, parse_duration_ns

__all__ = [
    "API_VERSION",
    "CAPABILITIES",
    "CAPABILITY_BITS",
    "KIND",
    "NETWORK_CHOICES",
    "TENANT_NETWORK_ERROR",
    "TENANT_NETWORK_FIX",
    "AgentDocument",
    "AgentSpec",
    "Healthcheck",
    "HostAccess",
    "HostMount",
    "Metadata",
    "NetworkChoice",
    "PolicyException",
    "Resources",
    "RestartPolicy",
    "RuntimeName",
    "SeccompMode",
    "Security",
    "TmpfsMount",
]

API_VERSION = "agentcell/v1"
KIND = "Agent"
MiB = 1024**2
GiB = 1024**3
MEMORY_MIN = 6 * MiB  # the engine refuses less
MEMORY_MAX = 4096 * GiB

RuntimeName = Literal["runc", "crun", "runsc"]
SeccompMode = Literal["strict", "default", "unconfined"]

# Every capability a current kernel knows, without the CAP_ prefix, in bit order
# (capabilities(7)): the order /proc/<pid>/status's Cap* masks use.
CAPABILITY_BITS = (
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID",
    "SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW",
    "IPC_LOCK", "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT",
    "SYS_ADMIN", "SYS_BOOT", "SYS_NICE", "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD",
    "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG",
    "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF", "CHECKPOINT_RESTORE",
)  # fmt: skip
CAPABILITIES = frozenset(CAPABILITY_BITS)

_DNS_LABEL = DNS_LABEL
# agentcell names containers agentcell_<tenant>_<name> (agentcell.cell.names); these lengths
# keep tenant and name within one DNS label (63) together, so the same names work on
# Kubernetes.
Name = Annotated[str, StringConstraints(pattern=_DNS_LABEL, min_length=1, max_length=NAME_MAX)]
TenantName = Annotated[
    str, StringConstraints(pattern=_DNS_LABEL, min_length=1, max_length=TENANT_MAX)
]
AbsolutePath = Annotated[str, StringConstraints(pattern=r"^/[^\x00]*$", max_length=4096)]
EnvName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=256)]
LabelKey = Annotated[
    str, StringConstraints(pattern=r"^[A-Za-z0-9]([A-Za-z0-9._/-]*[A-Za-z0-9])?$", max_length=253)
]
RESERVED_LABEL_PREFIX = LABEL_PREFIX


def _size(value: Any) -> Any:
    return parse_bytes(value) if isinstance(value, str | int) else value


def _duration(value: Any) -> Any:
    return parse_duration_ns(value) if isinstance(value, str | int | float) else value


# Sizes are stored as bytes and written back the way people write them.
ByteSize = Annotated[
    int,
    BeforeValidator(_size),
    PlainSerializer(format_bytes, return_type=str, when_used="json"),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 0},
                {"type": "string", "pattern": r"^\d+(\.\d+)?\s*([kKmMgGtT]([iI]?[bB])?|[bB])?$"},
            ],
            "description": "bytes, or a size with a binary unit: 64m, 256MiB, 1g",
        }
    ),
]
DurationNs = Annotated[
    int,
    BeforeValidator(_duration),
    PlainSerializer(lambda ns: f"{ns / 10**9:g}s", return_type=str, when_used="json"),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": 0},
                {"type": "string", "pattern": r"^\d+(\.\d+)?(ms|s|m|h)$"},
            ],
            "description": "seconds, or a duration such as 500ms, 30s, 2m",
        }
    ),
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=False)


class Metadata(_Model):
    """Who the agent is: its name, the tenant that owns it, and free-form labels."""

    name: Name = Field(description="Agent name, a DNS label unique within its tenant.")
    tenant: TenantName = Field(default="default", description="Owning tenant, a DNS label.")
    labels: dict[LabelKey, str] = Field(default_factory=dict, description="Free-form labels.")

    @field_validator("labels")
    @classmethod
    def _no_reserved_labels(cls, labels: dict[str, str]) -> dict[str, str]:
        reserved = sorted(key for key in labels if key.startswith(RESERVED_LABEL_PREFIX))
        if reserved:
            raise ValueError(f"labels under {RESERVED_LABEL_PREFIX!r} are set by agentcell")
        return labels


class TmpfsMount(_Model):
    """A size-limited in-memory filesystem: the only writable place in a read-only cell."""

    path: AbsolutePath = Field(description="Where the tmpfs is mounted in the cell.")
    size: ByteSize = Field(gt=0, le=64 * GiB, description="Size limit of the tmpfs.")
    exec: bool = Field(
        default=False, description="Allow executing files from it (mounted noexec by default)."
    )


class Resources(_Model):
    """Limits the engine applies through cgroups; verified by reading the cgroup files back."""

    cpus: float = Field(default=0.5, gt=0, le=1024, description="CPU time in cores (quota).")
    memory: ByteSize = Field(
        default=256 * MiB, ge=MEMORY_MIN, le=MEMORY_MAX, description="Memory limit."
    )
    memory_swap: ByteSize = Field(
        default=256 * MiB,
        ge=0,
        le=8192 * GiB,
        description="Memory plus swap limit; defaults to memory, meaning no swap.",
    )
    pids: int = Field(default=128, ge=1, le=4_194_304, description="Maximum processes/threads.")
    tmpfs: tuple[TmpfsMount, ...] = Field(
        default=(TmpfsMount(path="/tmp", size=64 * MiB),),
        description="Sized tmpfs mounts; the default gives a 64 MiB /tmp.",
    )

    @model_validator(mode="before")
    @classmethod
    def _swap_defaults_to_memory(cls, data: Any) -> Any:
        if isinstance(data, dict) and "memory" in data and "memory_swap" not in data:
            # Copy only a valid memory value: a bad one is reported once, by the memory field.
            try:
                memory = _size(data["memory"])
            except ValueError:
                return data
            if isinstance(memory, int) and MEMORY_MIN <= memory <= MEMORY_MAX:
                return {**data, "memory_swap": memory}
        return data

    @model_validator(mode="after")
    def _swap_at_least_memory(self) -> Resources:
        if self.memory_swap < self.memory:
            raise ValueError(
                f"memory_swap ({format_bytes(self.memory_swap)}) is below memory "
                f"({format_bytes(self.memory)}); it counts memory plus swap, so set it >= memory"
            )
        paths = [mount.path for mount in self.tmpfs]
        if len(paths) != len(set(paths)):
            raise ValueError("two tmpfs mounts share a path")
        return self

    @property
    def swap_bytes(self) -> int:
        """Swap the cell may use on top of memory (0 unless memory_swap says otherwise)."""
        return self.memory_swap - self.memory


class Security(_Model):
    """Least privilege: who the process runs as and what the kernel lets it do."""

    user: int | None = Field(
        default=None,
        ge=0,
        le=2**31 - 1,
        description="Host uid; 0 is root. Omit it: agentcell gives each cell a uid of its own "
        "(a pinned uid is a policy finding, and refused when another tenant's cell has it).",
    )
    group: int | None = Field(
        default=None, ge=0, le=2**31 - 1, description="Host gid; omitted: the same as the uid."
    )
    capabilities: tuple[str, ...] = Field(
        default=(),
        description="Capabilities to add back after dropping ALL, e.g. NET_BIND_SERVICE.",
    )
    read_only_rootfs: bool = Field(default=True, description="Mount the image read-only.")
    no_new_privileges: bool = Field(default=True, description="Block setuid/file-cap gains.")
    seccomp: str = Field(
        default="strict",
        description=(
            "Syscall filter: 'strict' (agentcell's profile: the engine's default without "
            "io_uring, keyctl, bpf, perf_event_open, userfaultfd, namespaces, mounts, ptrace, "
            "kexec and modules), 'default' (the engine's own profile, a relaxation), "
            "'unconfined', or the path of a profile JSON file (relative to the spec file)."
        ),
    )
    runtime: RuntimeName = Field(default="runc", description="OCI runtime: runc, crun, runsc.")

    @field_validator("capabilities", mode="before")
    @classmethod
    def _known_capabilities(cls, value: Any) -> Any:
        if not isinstance(value, list | tuple):
            return value
        names = []
        for raw in value:
            if not isinstance(raw, str):
                raise ValueError("capability names are strings such as NET_BIND_SERVICE")
            name = raw.upper().removeprefix("CAP_")
            if name == "ALL":
                raise ValueError("adding ALL capabilities is privileged mode; list each one")
            if name not in CAPABILITIES:
                raise ValueError(f"unknown capability {raw!r}; see capabilities(7)")
            names.append(name)
        return tuple(sorted(set(names)))

    @field_validator("seccomp")
    @classmethod
    def _seccomp_profile(cls, value: str, info: ValidationInfo) -> str:
        if value in ("strict", "default", "unconfined"):
            return value
        if not value.endswith(".json"):
            raise ValueError(
                "seccomp is 'default', 'strict', 'unconfined' or a path to a .json profile"
            )
        base = (info.context or {}).get("base_dir")
        if base is not None and not value.startswith("/"):
            return f"{base}/{value}"
        return value


class HostMount(_Model):
    """A host path bind-mounted into the cell, read-only unless the spec says otherwise."""

    source: AbsolutePath = Field(description="Path on the host.")
    target: AbsolutePath = Field(description="Path in the cell, e.g. /host/proc.")
    read_only: bool = Field(default=True, description="Mount read-only (the default).")


class HostAccess(_Model):
    """What a monitoring agent may see of its host. Nothing by default."""

    mounts: tuple[HostMount, ...] = Field(
        default=(), description="Host paths to mount, e.g. /proc -> /host/proc."
    )
    docker_socket: bool = Field(
        default=False,
        description="Mount /var/run/docker.sock read-only (high risk: prefer a filtering proxy).",
    )
    pid: bool = Field(default=False, description="Share the host's PID namespace.")
    network: bool = Field(default=False, description="Share the host's network namespace.")

    @model_validator(mode="after")
    def _distinct_targets(self) -> HostAccess:
        targets = [mount.target for mount in self.mounts]
        if len(targets) != len(set(targets)):
            raise ValueError("two host mounts share a target path")
        return self


class RestartPolicy(_Model):
    """When the engine restarts a cell; retries are bounded by default (CIS 5.15)."""

    policy: Literal["no", "on-failure", "always", "unless-stopped"] = Field(
        default="on-failure", description="Engine restart policy."
    )
    # Docker reads 0 retries as "restart forever"; for no restarts, write policy: "no".
    max_retries: int = Field(
        default=5, ge=1, le=1000, description="Restarts before giving up (on-failure only)."
    )

    @model_validator(mode="after")
    def _retries_only_on_failure(self) -> RestartPolicy:
        if "max_retries" in self.model_fields_set and self.policy != "on-failure":
            raise ValueError("max_retries applies only to policy 'on-failure'")
        return self


class Healthcheck(_Model):
    """A command the engine runs inside the cell to judge it healthy (CIS 5.27)."""

    command: tuple[str, ...] = Field(
        min_length=1, description="Command in exec form, e.g. [python3, /opt/health.py]."
    )
    interval: DurationNs = Field(default=30 * 10**9, ge=10**6, description="Time between checks.")
    timeout: DurationNs = Field(default=5 * 10**9, ge=10**6, description="Time one check may take.")
    retries: int = Field(default=3, ge=1, le=100, description="Failures before unhealthy.")
    start_period: DurationNs = Field(
        default=5 * 10**9, ge=0, description="Grace period after start."
    )


class PolicyException(_Model):
    """A written, reasoned exception to one policy rule for this agent."""

    rule: str = Field(pattern=r"^[A-Z]+-\d{3}$", description="Rule id, e.g. AC-012.")
    reason: str = Field(min_length=10, max_length=1000, description="Why the exception is safe.")


NetworkChoice = Literal["none", "tenant"]
"""A cell has no network (``none``) or joins its tenant's one network (``tenant``)."""
NETWORK_CHOICES: tuple[str, ...] = ("none", TENANT_NETWORK)
TENANT_NETWORK_ERROR = "tenant_network"
"""The error type of a ``network:`` value other than :data:`NETWORK_CHOICES`."""
TENANT_NETWORK_FIX = f"tenants have one network: write network: {TENANT_NETWORK}"


_IMAGE_REF = re.compile(r"^[a-z0-9][a-z0-9._:/@-]*$", re.IGNORECASE)


class AgentSpec(_Model):
    """The ``spec`` of an Agent: what runs, and the cell it runs in."""

    image: str = Field(
        min_length=1, max_length=512, description="Image reference; a digest pin is best."
    )
    command: tuple[str, ...] | None = Field(
        default=None, description="Replaces the image entrypoint (like Kubernetes command)."
    )
    args: tuple[str, ...] | None = Field(
        default=None, description="Replaces the image command (like Kubernetes args)."
    )
    env: dict[EnvName, str] = Field(default_factory=dict, description="Environment variables.")
    resources: Resources = Field(default_factory=Resources)
    security: Security = Field(default_factory=Security)
    host: HostAccess = Field(default_factory=HostAccess)
    network: NetworkChoice = Field(
        default="none",
        description=(
            "'none' (no interface but loopback) or 'tenant': the tenant's one internal network, "
            "where its cells reach each other (if the tenant allows it), the tenant's resolver "
            "and its egress gateway, and nothing else."
        ),
    )
    identity: bool = Field(
        default=False,
        description=(
            "Give the cell an identity: `up` issues a one-time join token, mounts it read-only "
            "with the control plane's CA and socket, and the agent enrols for a short-lived "
            "mTLS certificate (spiffe://<domain>/tenant/<tenant>/agent/<name>)."
        ),
    )
    restart: RestartPolicy = Field(default_factory=RestartPolicy)
    healthcheck: Healthcheck | None = Field(default=None)
    labels: dict[LabelKey, str] = Field(default_factory=dict, description="Container labels.")
    exceptions: tuple[PolicyException, ...] = Field(
        default=(), description="Reasoned exceptions to named policy rules."
    )

    @field_validator("network", mode="before")
    @classmethod
    def _one_network(cls, value: object) -> object:
        if value not in NETWORK_CHOICES:
            # The loader turns this error type into the fix below.
            raise PydanticCustomError(
                TENANT_NETWORK_ERROR,
                "{value} is not a network a cell can join",
                {"value": repr(value)},
            )
        return value

    @field_validator("image")
    @classmethod
    def _image_reference(cls, value: str) -> str:
        if not _IMAGE_REF.match(value):
            raise ValueError(f"{value!r} is not an image reference such as repo/name:tag")
        return value

    @field_validator("labels")
    @classmethod
    def _no_reserved_labels(cls, labels: dict[str, str]) -> dict[str, str]:
        if any(key.startswith(RESERVED_LABEL_PREFIX) for key in labels):
            raise ValueError(f"labels under {RESERVED_LABEL_PREFIX!r} are set by agentcell")
        return labels

    @model_validator(mode="after")
    def _consistent(self) -> AgentSpec:
        if self.host.network and self.network != "none":
            raise ValueError(
                "host.network shares the host's network; drop 'network' or set host.network false"
            )
        targets = {mount.target for mount in self.host.mounts}
        clash = targets & {mount.path for mount in self.resources.tmpfs}
        if clash:
            raise ValueError(f"{sorted(clash)[0]} is both a host mount and a tmpfs")
        if self.host.docker_socket and DOCKER_SOCKET in targets:
            raise ValueError(f"docker_socket already mounts {DOCKER_SOCKET}")
        return self


class AgentDocument(_Model):
    """One YAML document: ``apiVersion: agentcell/v1``, ``kind: Agent``, metadata and spec."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        title="agentcell Agent",
        json_schema_extra={"$id": "https://agentcell.dev/schema/agentcell-v1-agent.json"},
    )

    api_version: Literal["agentcell/v1"] = Field(alias="apiVersion")
    kind: Literal["Agent"]
    metadata: Metadata
    spec: AgentSpec

    @property
    def key(self) -> tuple[str, str]:
        """(tenant, name): unique across every cell on a host."""
        return (self.metadata.tenant, self.metadata.name)
