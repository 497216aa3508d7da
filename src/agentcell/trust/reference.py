"""Image references and digests, parsed the way the engine and registries read them.

A reference is ``[registry/]repository[:tag][@digest]``. The first path component is a registry
host only when it looks like one (it holds a ``.`` or a ``:``, or is ``localhost``), which is
the rule of the reference grammar in distribution/reference. A reference without a registry is a
*local* image here: agentcell looks it up in the engine's own store and never sends it to a
registry (nothing on these hosts could answer for Docker Hub), so it cannot carry a signature.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import NewType

from agentcell.errors import TrustError

__all__ = ["Digest", "ImageReference", "is_loopback_host", "parse_digest"]

Digest = NewType("Digest", str)
"""A content digest, always ``sha256:`` and 64 lowercase hex digits."""

_DIGEST = re.compile(r"^sha256:[a-f0-9]{64}$")
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_TAG = re.compile(r"^[\w][\w.-]{0,127}$")
_HOST = re.compile(
    r"^(?:\[[0-9a-fA-F:]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)(?::\d{1,5})?$"
)
MAX_REFERENCE = 512


def parse_digest(text: str) -> Digest:
    """``text`` as a :data:`Digest`.

    Raises:
        TrustError: it is not ``sha256:`` followed by 64 lowercase hex digits.
    """
    if not _DIGEST.match(text):
        raise TrustError(
            f"{text!r} is not a sha256 digest",
            reason="bad-reference",
            fix="write digests as sha256: followed by 64 lowercase hex digits",
        )
    return Digest(text)


def is_loopback_host(host: str) -> bool:
    """Whether a registry host (``name[:port]``) is on this machine's loopback interface."""
    if host.startswith("["):
        name = host[1 : host.index("]")] if "]" in host else host
    else:
        name = host.split(":", 1)[0]
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, kw_only=True)
class ImageReference:
    """A parsed image reference. ``digest`` wins over ``tag`` when both are written."""

    registry: str | None
    repository: str
    tag: str | None = None
    digest: Digest | None = None

    @classmethod
    def parse(cls, text: str) -> ImageReference:
        """Parse ``text``.

        Raises:
            TrustError: ``text`` is not a valid reference.
        """
        if not text or len(text) > MAX_REFERENCE:
            raise _bad(text, "it is empty or too long")
        rest, digest = text, None
        if "@" in rest:
            rest, _, raw_digest = rest.partition("@")
            digest = parse_digest(raw_digest)
        registry: str | None = None
        first, slash, remainder = rest.partition("/")
        if slash and ("." in first or ":" in first or first == "localhost"):
            if not _HOST.match(first):
                raise _bad(text, f"{first!r} is not a registry host")
            registry, rest = first, remainder
        tag = None
        name, colon, maybe_tag = rest.rpartition(":")
        if colon:
            if not _TAG.match(maybe_tag):
                raise _bad(text, f"{maybe_tag!r} is not a tag")
            rest, tag = name, maybe_tag
        if not _REPOSITORY.match(rest):
            raise _bad(text, f"{rest!r} is not a repository name (lowercase, digits, . _ - /)")
        return cls(registry=registry, repository=rest, tag=tag, digest=digest)

    @property
    def name(self) -> str:
        """``registry/repository`` (or just the repository for a local image)."""
        return f"{self.registry}/{self.repository}" if self.registry else self.repository

    @property
    def is_local(self) -> bool:
        """True when no registry is named: the image lives only in the engine's store."""
        return self.registry is None

    @property
    def effective_tag(self) -> str:
        """The tag a registry is asked for when neither tag nor digest is written."""
        return self.tag or "latest"

    def by_digest(self, digest: Digest) -> str:
        """``registry/repository@digest``: the form cells run by."""
        return f"{self.name}@{digest}"

    def __str__(self) -> str:
        text = self.name
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def _bad(text: str, why: str) -> TrustError:
    return TrustError(
        f"{text!r} is not an image reference: {why}",
        reason="bad-reference",
        fix="write [registry/]repository[:tag][@sha256:digest], "
        "e.g. 127.0.0.1:5000/agentcell/monitor-agent:0.1.0",
    )
