"""The ``agentcell/v1`` ``Tenant`` document: who shares a host, within what bounds.

A tenant owns a namespace of cell names, a quota (each limit optional, each enforced when
given: at admission, and as a kernel limit on the tenant's cgroup parent), an isolation level,
the keys that may sign its images, and string config its agents read from the control plane.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Literal

from pydantic import Field, StringConstraints, field_validator, model_validator

from agentcell.spec.model import (
    MEMORY_MAX,
    ByteSize,
    LabelKey,
    Name,
    TenantName,
    _Model,
)

__all__ = [
    "ConfigKey",
    "Egress",
    "EgressRule",
    "IsolationLevel",
    "TenantDocument",
    "TenantKey",
    "TenantMetadata",
    "TenantNetwork",
    "TenantQuota",
    "TenantSpec",
    "TenantTrust",
]

IsolationLevel = Literal["standard", "strict"]
ConfigKey = Annotated[
    str, StringConstraints(pattern=r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$", max_length=128)
]
MAX_CONFIG_VALUE = 4096
MAX_CONFIG_KEYS = 256


class TenantMetadata(_Model):
    """The tenant's name (a DNS label, at most 12 characters) and free-form labels."""

    name: TenantName = Field(description="Tenant name; cells refer to it as metadata.tenant.")
    labels: dict[LabelKey, str] = Field(default_factory=dict, description="Free-form labels.")


class TenantQuota(_Model):
    """Upper bounds on the sum over the tenant's cells. A limit left out is not enforced."""

    cpus: float | None = Field(default=None, gt=0, le=4096, description="Cores, summed.")
    memory: ByteSize | None = Field(
        default=None, gt=0, le=MEMORY_MAX * 64, description="Memory, summed (e.g. 8g)."
    )
    pids: int | None = Field(default=None, ge=1, le=4_194_304, description="Processes, summed.")
    cells: int | None = Field(default=None, ge=0, le=10_000, description="Number of cells.")


class TenantKey(_Model):
    """A public key (cosign.pub format) trusted to sign this tenant's images."""

    name: Name = Field(description="A name for the key, shown when a signature verifies.")
    path: str | None = Field(default=None, description="Key file, relative to this file.")
    pem: str | None = Field(default=None, max_length=8192, description="The key itself.")

    @model_validator(mode="after")
    def _one_source(self) -> TenantKey:
        if (self.path is None) == (self.pem is None):
            raise ValueError("give the key as exactly one of path or pem")
        return self


class TenantTrust(_Model):
    """Image trust for this tenant; it can only tighten the host's trust config."""

    require_signatures: bool = Field(default=False, description="Refuse unsigned images.")
    require_digest: bool = Field(default=False, description="Refuse tag-only image references.")
    keys: tuple[TenantKey, ...] = Field(default=(), description="Keys trusted for this tenant.")


MAX_EGRESS_RULES = 256
MAX_RULE_PORTS = 16
DEFAULT_EGRESS_PORTS = (443,)
# A DNS name, lowercase, optionally starting with one "*." wildcard label (matches one or more
# labels); "*" alone is accepted so that policy can flag it rather than the loader hide it.
_EGRESS_NAME = (
    r"^(\*|(\*\.)?([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\.)*[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)$"
)
EgressName = Annotated[str, StringConstraints(pattern=_EGRESS_NAME, min_length=1, max_length=253)]
Port = Annotated[int, Field(ge=1, le=65535)]


class EgressRule(_Model):
    """One destination: a DNS name (``*.pypi.org`` matches any name below pypi.org) or an
    address range, and the TCP ports allowed to it."""

    name: EgressName | None = Field(default=None, description="DNS name, '*.' wildcard allowed.")
    cidr: str | None = Field(default=None, description="Address range, e.g. 10.0.0.0/8.")
    ports: tuple[Port, ...] = Field(
        default=DEFAULT_EGRESS_PORTS, min_length=1, max_length=MAX_RULE_PORTS,
        description="TCP ports (default 443).",
    )  # fmt: skip

    @field_validator("cidr")
    @classmethod
    def _network(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return str(ipaddress.ip_network(value, strict=True))
        except ValueError as exc:
            raise ValueError(f"{value!r} is not an address range like 10.0.0.0/8 ({exc})") from None

    @model_validator(mode="after")
    def _one_destination(self) -> EgressRule:
        if (self.name is None) == (self.cidr is None):
            raise ValueError("give exactly one of name or cidr")
        return self

    def describe(self) -> str:
        """``name:port,port`` or ``cidr:port``, for logs and findings."""
        return f"{self.name or self.cidr}:{','.join(str(port) for port in self.ports)}"


class Egress(_Model):
    """Where the tenant's cells may connect outside their network, through the tenant's
    egress gateway. ``deny`` wins over ``allow``."""

    allow: tuple[EgressRule, ...] = Field(
        default=(), max_length=MAX_EGRESS_RULES, description="Destinations allowed."
    )
    deny: tuple[EgressRule, ...] = Field(
        default=(), max_length=MAX_EGRESS_RULES, description="Destinations refused even if allowed."
    )


class TenantNetwork(_Model):
    """The tenant's network: one internal network for all its networked cells, reachable only
    by each other (if ``intra_tenant``), the tenant's resolver and its egress gateway."""

    intra_tenant: bool = Field(
        default=True, description="Cells of this tenant may reach each other."
    )
    egress: Egress = Field(
        default_factory=lambda: Egress(),
        description="'none' (default: nothing outside the tenant) or an allow-list.",
    )

    @field_validator("egress", mode="before")
    @classmethod
    def _none(cls, value: object) -> object:
        if value == "none":
            return {}
        if isinstance(value, str):
            raise ValueError(f"egress is 'none' or a mapping with allow and deny, not {value!r}")
        return value

    @property
    def allow(self) -> tuple[EgressRule, ...]:
        """The allowed destinations (none for ``egress: none``)."""
        return self.egress.allow

    @property
    def deny(self) -> tuple[EgressRule, ...]:
        """The refused destinations."""
        return self.egress.deny


class TenantSpec(_Model):
    """What the tenant may use and how strictly its cells are isolated."""

    isolation: IsolationLevel = Field(
        default="standard",
        description="'strict': every cell runs on gVisor (runsc) with the strict seccomp "
        "profile and no host mounts.",
    )
    quota: TenantQuota = Field(default_factory=TenantQuota, description="Bounds on the sum.")
    trust: TenantTrust = Field(default_factory=TenantTrust, description="Image trust.")
    config: dict[ConfigKey, Annotated[str, StringConstraints(max_length=MAX_CONFIG_VALUE)]] = Field(
        default_factory=dict, description="Key/values the tenant's agents read."
    )
    network: TenantNetwork = Field(default_factory=TenantNetwork, description="Networking.")

    @model_validator(mode="after")
    def _bounded_config(self) -> TenantSpec:
        if len(self.config) > MAX_CONFIG_KEYS:
            raise ValueError(f"config holds more than {MAX_CONFIG_KEYS} keys")
        return self


class TenantDocument(_Model):
    """One YAML document: ``apiVersion: agentcell/v1``, ``kind: Tenant``, metadata, spec."""

    api_version: Literal["agentcell/v1"] = Field(alias="apiVersion")
    kind: Literal["Tenant"]
    metadata: TenantMetadata
    spec: TenantSpec = Field(default_factory=TenantSpec)

    @property
    def name(self) -> str:
        """The tenant's name."""
        return self.metadata.name
