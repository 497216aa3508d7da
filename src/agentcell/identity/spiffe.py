"""SPIFFE-style identities of agents: ``spiffe://<trust-domain>/tenant/<tenant>/agent/<name>``.

The control plane takes a caller's tenant and agent from this URI in its verified client
certificate and from nowhere else, so parsing is strict: one exact shape, DNS-label parts, and
the trust domain this control plane serves.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from agentcell.identity.errors import IdentityError

__all__ = ["SpiffeId", "parse_spiffe_id", "validate_trust_domain"]

_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
# Same limits as the spec's tenant and agent names (spec/model.py), so every admitted agent
# has an identity and no identity names something a spec could not.
_MAX_TENANT = 12
_MAX_AGENT = 40
_TRUST_DOMAIN = re.compile(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?")
_MAX_TRUST_DOMAIN = 255


def validate_trust_domain(domain: str) -> str:
    """Return ``domain`` when it is a valid trust domain (lower-case DNS-like name).

    Raises:
        IdentityError: it is not.
    """
    if len(domain) > _MAX_TRUST_DOMAIN or not _TRUST_DOMAIN.fullmatch(domain):
        raise IdentityError(
            f"{domain!r} is not a trust domain",
            fix="use a lower-case DNS-like name such as agentcell.local",
        )
    return domain


def _label(value: str, what: str, limit: int) -> str:
    if len(value) > limit or not _LABEL.fullmatch(value):
        raise IdentityError(
            f"{what} {value!r} is not a DNS label of at most {limit} characters",
            fix=f"use lower-case letters, digits and '-' for the {what}",
        )
    return value


@dataclass(frozen=True, order=True)
class SpiffeId:
    """One agent's identity within one trust domain."""

    trust_domain: str
    tenant: str
    agent: str

    def __post_init__(self) -> None:
        validate_trust_domain(self.trust_domain)
        _label(self.tenant, "tenant", _MAX_TENANT)
        _label(self.agent, "agent name", _MAX_AGENT)

    @property
    def uri(self) -> str:
        """The URI that goes into the certificate's subjectAltName."""
        return f"spiffe://{self.trust_domain}/tenant/{self.tenant}/agent/{self.agent}"

    @property
    def key(self) -> str:
        """``tenant/agent``, the name the CLI shows."""
        return f"{self.tenant}/{self.agent}"

    def __str__(self) -> str:
        return self.uri


def parse_spiffe_id(uri: str, *, trust_domain: str | None = None) -> SpiffeId:
    """Parse an agent URI; with ``trust_domain`` given, refuse any other domain.

    Raises:
        IdentityError: the URI is not exactly an agentcell agent identity (of that domain).
    """
    prefix = "spiffe://"
    if not uri.startswith(prefix):
        raise IdentityError(f"{uri!r} is not a spiffe:// URI")
    domain, slash, path = uri[len(prefix) :].partition("/")
    parts = path.split("/") if slash else []
    if len(parts) != 4 or parts[0] != "tenant" or parts[2] != "agent":
        raise IdentityError(
            f"{uri!r} is not of the form spiffe://<domain>/tenant/<tenant>/agent/<name>"
        )
    identity = SpiffeId(trust_domain=domain, tenant=parts[1], agent=parts[3])
    if trust_domain is not None and identity.trust_domain != trust_domain:
        raise IdentityError(
            f"{uri!r} belongs to trust domain {identity.trust_domain!r}, not {trust_domain!r}"
        )
    return identity
