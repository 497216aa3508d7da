"""Which public keys a host trusts, and whether images must be signed and pinned.

The trust config is one YAML document, found at ``$AGENTCELL_TRUST_CONFIG`` or
``/etc/agentcell/trust.yaml``::

    apiVersion: agentcell/v1
    kind: TrustConfig
    require_signatures: false     # every tenant: refuse images no trusted key signed
    require_digest: false         # every tenant: refuse specs that name an image by tag only
    keys:                         # trusted for every tenant
      - name: platform
        path: keys/platform.pub   # cosign.pub format; relative to this file
    tenants:
      acme:
        require_signatures: true
        keys:                     # trusted for acme only, on top of the keys above
          - name: acme-ci
            pem: |
              -----BEGIN PUBLIC KEY-----
              ...

A tenant can only tighten the host's settings: ``require_*`` is true for a tenant when it is
true globally or for the tenant. Without any config file nothing is required: images are still
pinned by digest, and signatures are checked whenever keys are listed.

Errors name the file, line and field, through the same YAML reader as spec files.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Annotated, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from agentcell.cell.fields import FieldPath
from agentcell.errors import Location, SpecError, TrustError
from agentcell.spec.load import (
    explain_validation_error,
    locate,
    parse_yaml_documents,
    read_spec_file,
)
from agentcell.spec.tenant import TenantDocument

if TYPE_CHECKING:
    from agentcell.trust.keys import PublicKey

__all__ = [
    "CONFIG_ENV",
    "DEFAULT_CONFIG_PATH",
    "TenantTrust",
    "TrustConfig",
    "load_trust_config",
    "parse_trust_config",
    "with_tenant",
]

CONFIG_ENV = "AGENTCELL_TRUST_CONFIG"
DEFAULT_CONFIG_PATH = Path("/etc/agentcell/trust.yaml")

_KeyName = Annotated[
    str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", min_length=1, max_length=63)
]
_Tenant = Annotated[
    str, StringConstraints(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=12)
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KeyEntry(_Model):
    """One trusted public key, from a file or written inline."""

    name: _KeyName = Field(description="How output and errors name the key.")
    path: str | None = Field(
        default=None, description="A cosign.pub-format PEM file, relative to the config file."
    )
    pem: str | None = Field(default=None, description="The PEM text itself.")

    @model_validator(mode="after")
    def _one_source(self) -> KeyEntry:
        if (self.path is None) == (self.pem is None):
            raise ValueError("give exactly one of 'path' or 'pem'")
        return self


class TenantEntry(_Model):
    """A tenant's additions to the host's trust settings."""

    require_signatures: bool = Field(default=False, description="Require signed images.")
    require_digest: bool = Field(default=False, description="Refuse tag-only references.")
    keys: tuple[KeyEntry, ...] = Field(default=(), description="Keys trusted for this tenant.")


class TrustDocument(_Model):
    """The ``TrustConfig`` document as written."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=False)

    api_version: Literal["agentcell/v1"] = Field(alias="apiVersion")
    kind: Literal["TrustConfig"]
    require_signatures: bool = Field(default=False, description="Require signed images.")
    require_digest: bool = Field(default=False, description="Refuse tag-only references.")
    keys: tuple[KeyEntry, ...] = Field(default=(), description="Keys trusted for every tenant.")
    tenants: dict[_Tenant, TenantEntry] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _unique_key_names(self) -> TrustDocument:
        names = [key.name for key in self.keys]
        for tenant in self.tenants.values():
            names += [key.name for key in tenant.keys]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"key names must be unique; repeated: {', '.join(duplicates)}")
        return self


@dataclass(frozen=True, kw_only=True)
class TenantTrust:
    """What admission demands of one tenant's images."""

    tenant: str
    keys: tuple[PublicKey, ...]
    require_signatures: bool
    require_digest: bool


@dataclass(frozen=True, kw_only=True)
class TrustConfig:
    """The host's trust settings, keys loaded and checked."""

    require_signatures: bool = False
    require_digest: bool = False
    keys: tuple[PublicKey, ...] = ()
    tenants: Mapping[str, TenantTrust] = field(default_factory=lambda: MappingProxyType({}))
    source: str | None = None
    """The file it came from; None for the built-in default (nothing required)."""

    def for_tenant(self, tenant: str) -> TenantTrust:
        """The settings that apply to ``tenant``'s images."""
        entry = self.tenants.get(tenant)
        if entry is None:
            return TenantTrust(
                tenant=tenant,
                keys=self.keys,
                require_signatures=self.require_signatures,
                require_digest=self.require_digest,
            )
        return TenantTrust(
            tenant=tenant,
            keys=self.keys + entry.keys,
            require_signatures=self.require_signatures or entry.require_signatures,
            require_digest=self.require_digest or entry.require_digest,
        )


def with_tenant(
    config: TrustConfig, tenant: TenantDocument, *, base_dir: Path | None = None
) -> TrustConfig:
    """``config`` with a Tenant document's own trust added: its keys beside the host's, its
    requirements or'ed in, so a tenant can only tighten what the host demands.

    Raises:
        SpecError: a key of the tenant cannot be read or is not a public key.
    """
    from agentcell.trust.keys import load_public_key, read_public_key

    trust = tenant.spec.trust
    keys = []
    for index, key in enumerate(trust.keys):
        where = Location(field=f"spec.trust.keys[{index}]")
        try:
            if key.pem is not None:
                keys.append(load_public_key(key.pem.encode(), name=key.name))
            else:
                path = Path(str(key.path))
                keys.append(read_public_key((base_dir or Path()) / path, name=key.name))
        except TrustError as exc:
            raise SpecError(
                f"tenant {tenant.name}'s key {key.name}: {exc.what}", where=where, fix=exc.fix
            ) from exc
    existing = config.tenants.get(tenant.name)
    merged = TenantTrust(
        tenant=tenant.name,
        keys=(existing.keys if existing else ()) + tuple(keys),
        require_signatures=trust.require_signatures
        or (existing.require_signatures if existing else False),
        require_digest=trust.require_digest or (existing.require_digest if existing else False),
    )
    return dataclasses.replace(
        config, tenants=MappingProxyType({**config.tenants, tenant.name: merged})
    )


def load_trust_config(
    path: Path | None = None, *, environ: Mapping[str, str] | None = None
) -> TrustConfig:
    """The trust config from ``path``, ``$AGENTCELL_TRUST_CONFIG`` or the default location.

    A missing file at the default location means the built-in default; a file named by the
    argument or the variable must exist.

    Raises:
        SpecError: the file is unreadable, not YAML, or not a valid TrustConfig (file:line:field).
    """
    env = os.environ if environ is None else environ
    if path is None and env.get(CONFIG_ENV):
        path = Path(env[CONFIG_ENV])
    if path is None:
        if not DEFAULT_CONFIG_PATH.exists():
            return TrustConfig()
        path = DEFAULT_CONFIG_PATH
    return parse_trust_config(read_spec_file(path), file=str(path))


def parse_trust_config(text: str, *, file: str = "<input>") -> TrustConfig:
    """Parse and check one TrustConfig document; key paths are relative to ``file``.

    Raises:
        SpecError: the text is not a valid TrustConfig, or a key cannot be loaded.
    """
    documents = list(parse_yaml_documents(text, file))
    if len(documents) != 1:
        raise SpecError(
            f"a trust config holds exactly one document, not {len(documents)}",
            where=Location(file=file, line=1),
            fix="write one TrustConfig document: apiVersion, kind, keys, tenants",
        )
    data, lines, start = documents[0]
    try:
        document = TrustDocument.model_validate(data)
    except pydantic.ValidationError as exc:
        problems = tuple(
            explain_validation_error(
                error,
                root=TrustDocument,
                file=file,
                lines=lines,
                start=start,
                reference="the TrustConfig format in agentcell.trust.config",
            )
            for error in exc.errors()
        )
        if len(problems) == 1:
            raise problems[0] from exc
        raise SpecError(
            f"{len(problems)} problems in the trust config:", problems=problems
        ) from exc
    base = Path(file).resolve().parent if file != "<input>" else Path.cwd()

    def keys_of(entries: tuple[KeyEntry, ...], *prefix: str | int) -> tuple[PublicKey, ...]:
        loaded = []
        for index, entry in enumerate(entries):
            field_path: FieldPath = (*prefix, "keys", index, "path" if entry.path else "pem")
            loaded.append(
                _load_key(entry, base, locate(field_path, file=file, lines=lines, start=start))
            )
        return tuple(loaded)

    tenants = {
        name: TenantTrust(
            tenant=name,
            keys=keys_of(entry.keys, "tenants", name),
            require_signatures=entry.require_signatures,
            require_digest=entry.require_digest,
        )
        for name, entry in document.tenants.items()
    }
    return TrustConfig(
        require_signatures=document.require_signatures,
        require_digest=document.require_digest,
        keys=keys_of(document.keys),
        tenants=MappingProxyType(tenants),
        source=file,
    )


def _load_key(entry: KeyEntry, base: Path, where: Location) -> PublicKey:
    # cryptography is imported only when a config names keys: most launches need none.
    from agentcell.trust.keys import load_public_key, read_public_key

    try:
        if entry.path is not None:
            return read_public_key(base / entry.path, name=entry.name)
        assert entry.pem is not None
        return load_public_key(entry.pem.encode(), name=entry.name)
    except TrustError as exc:
        raise SpecError(exc.what, where=where, fix=exc.fix) from exc
