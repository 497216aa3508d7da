"""The ``agentcell/v1`` ``Tenant`` document: who shares a host, within what bounds.

A tenant owns a namespace of cell names, a quota (each limit optional, each enforced when
given: at admission, and as a kernel limit on the tenant's cgroup parent), an isolation level,
the keys that may sign its images, and string config its agents read from the control plane.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints, model_validator

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


class TenantNetwork(_Model):
    """The tenant's network. More (egress allow-lists, DNS) comes with tenant networks."""

    intra_tenant: bool = Field(
        default=True, description="Cells of this tenant may reach each other."
    )


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
