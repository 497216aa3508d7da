"""Image trust at admission: pin every image to a digest, and check its signature, before launch.

:func:`pin_and_verify` turns an admitted spec's image reference into a :class:`PinnedImage`:

- a **registry** image (``127.0.0.1:5000/repo:tag``) is resolved to the manifest digest the
  registry holds now; the cell runs ``repo@sha256:...``, so a tag moved later cannot change what
  runs. Its cosign signature is verified when the tenant requires signatures or when any key is
  trusted; a signature that is present but wrong is always refused;
- a **local** image (no registry in the reference) is pinned to the engine's image ID and
  labelled "local, unsigned": it has no registry to hold a signature, so it is refused whenever
  signatures are required.

:func:`pin_all` does this for a whole batch before anything is launched, so one refused image
stops the batch with nothing created.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

from agentcell.errors import TrustError
from agentcell.policy.admission import AdmittedSpec
from agentcell.trust.config import TenantTrust, TrustConfig
from agentcell.trust.reference import Digest, ImageReference, parse_digest

if TYPE_CHECKING:
    # The registry client (oras) and key handling (cryptography) cost more to import than a
    # whole local launch; they are imported only when a registry image is pinned.
    from agentcell.trust.keys import PublicKey
    from agentcell.trust.registry import Registries

__all__ = ["ImageSource", "LocalImages", "PinnedImage", "pin_all", "pin_and_verify"]

ImageSource = Literal["registry", "local"]


class LocalImages(Protocol):
    """The engine's image store, as admission needs it (a runtime backend implements it)."""

    def image_id(self, reference: str) -> str | None:
        """The ID (``sha256:...``) of the local image ``reference``, or None if absent."""
        ...


@dataclass(frozen=True, kw_only=True)
class PinnedImage:
    """The exact image a cell will run, and how far it is trusted."""

    requested: str
    """The reference the spec wrote."""
    reference_by_digest: str
    """What the backend runs: ``registry/repo@sha256:...``, or a local image ID."""
    digest: Digest
    source: ImageSource
    signed_by: PublicKey | None
    warnings: tuple[str, ...] = ()

    @property
    def trust(self) -> str:
        """One phrase for output: how this image was checked."""
        if self.source == "local":
            return "local, unsigned"
        if self.signed_by is not None:
            return f"signature verified: {self.signed_by.describe()}"
        return "registry, unsigned (signatures not required)"


def pin_and_verify(
    admitted: AdmittedSpec,
    config: TrustConfig,
    *,
    registries: Registries | None = None,
    local: LocalImages | None = None,
) -> PinnedImage:
    """Pin the admitted spec's image to a digest and check its signature as the tenant demands.

    ``registries`` keeps registry connections warm across calls (one is made and closed here
    when omitted); ``local`` looks up images that name no registry.

    Raises:
        TrustError: the reference is tag-only and digests are required; the image is local and
            signatures are required; it is missing, unsigned, signed by no trusted key, signed
            for another digest; or its registry cannot be reached.
    """
    doc = admitted.doc
    where = doc.where("spec", "image")
    trust = config.for_tenant(doc.tenant)
    text = doc.document.spec.image
    try:
        reference = ImageReference.parse(text)
    except TrustError as exc:
        raise TrustError(exc.what, reason=exc.reason, where=where, fix=exc.fix) from exc
    if trust.require_digest and reference.digest is None:
        raise TrustError(
            f"{text} names its image by tag only, and tenant {doc.tenant} requires digests",
            reason="tag-only",
            where=where,
            fix=f"pin it: image: {reference.name}@sha256:... (`agentcell image push` prints it)",
        )
    try:
        if reference.is_local:
            return _pin_local(text, reference, trust, local)
        if registries is not None:
            return _pin_registry(text, reference, trust, registries)
        from agentcell.trust.registry import Registries

        with Registries() as own:
            return _pin_registry(text, reference, trust, own)
    except TrustError as exc:
        if exc.where is not None:
            raise
        raise TrustError(
            f"{doc.tenant}/{doc.name}: {exc.what}", reason=exc.reason, where=where, fix=exc.fix
        ) from exc


def pin_all(
    admitted: Sequence[AdmittedSpec],
    config: TrustConfig,
    *,
    registries: Registries | None = None,
    local: LocalImages | None = None,
) -> list[PinnedImage]:
    """:func:`pin_and_verify` for every spec, in order; all of them or an error.

    Raises:
        TrustError: the first image refused; nothing should be launched.
    """
    if registries is not None or all(_is_local(spec) for spec in admitted):
        return [
            pin_and_verify(spec, config, registries=registries, local=local) for spec in admitted
        ]
    from agentcell.trust.registry import Registries

    with Registries() as own:
        return [pin_and_verify(spec, config, registries=own, local=local) for spec in admitted]


def _is_local(admitted: AdmittedSpec) -> bool:
    try:
        return ImageReference.parse(admitted.doc.document.spec.image).is_local
    except TrustError:
        return True  # pin_and_verify reports the bad reference with its location


def _pin_registry(
    text: str, reference: ImageReference, trust: TenantTrust, registries: Registries
) -> PinnedImage:
    from agentcell.trust.signing import verify_digest

    assert reference.registry is not None
    client = registries.client(reference.registry)
    digest = client.resolve(reference)
    signed_by: PublicKey | None = None
    warnings: list[str] = []
    if trust.require_signatures:
        signed_by = verify_digest(client, reference, digest, trust.keys).key
    elif trust.keys:
        try:
            signed_by = verify_digest(client, reference, digest, trust.keys).key
        except TrustError as exc:
            # Not required: an absent or foreign signature is a warning. A signature by a
            # trusted key for some other image is never harmless, so it still refuses.
            if exc.reason not in ("unsigned", "untrusted-signature"):
                raise
            warnings.append(f"{exc.what} (signatures are not required for tenant {trust.tenant})")
    return PinnedImage(
        requested=text,
        reference_by_digest=reference.by_digest(digest),
        digest=digest,
        source="registry",
        signed_by=signed_by,
        warnings=tuple(warnings),
    )


def _pin_local(
    text: str, reference: ImageReference, trust: TenantTrust, local: LocalImages | None
) -> PinnedImage:
    if trust.require_signatures:
        raise TrustError(
            f"{text} is a local image (no registry in its name), so it carries no signature, "
            f"and tenant {trust.tenant} requires signatures",
            reason="local-unsigned",
            fix="push it to the registry, sign it, and name it there "
            "(`agentcell image push`, `agentcell image sign`)",
        )
    if local is None:
        raise TrustError(
            f"{text} is a local image and no engine was given to look it up",
            reason="not-found",
        )
    image_id = local.image_id(text)
    if image_id is None:
        raise TrustError(
            f"{text} is not on this host and names no registry to fetch it from",
            reason="not-found",
            fix="run `agentcell image bootstrap`, build it, or name a registry image",
        )
    # The engine resolved any written digest itself (its RepoDigests), so the ID is exact.
    digest = parse_digest(image_id)
    return PinnedImage(
        requested=text,
        reference_by_digest=digest,
        digest=digest,
        source="local",
        signed_by=None,
        warnings=(f"{text} is a local image: pinned to its ID {digest[:19]}…, unsigned",),
    )
