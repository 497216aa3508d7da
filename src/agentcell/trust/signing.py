"""Signing an image in a registry, and verifying it, the way cosign does with a key pair.

``sign_image`` resolves the reference to its manifest digest, signs a simple-signing payload
naming that digest, and adds the signature to the manifest tagged ``sha256-<hex>.sig`` (keeping
signatures already there, as cosign does). ``verify_image`` finds that manifest and accepts the
image only if some layer's payload is signed by a trusted key *and* names the digest being
verified; a signature copied from another image, a payload edited after signing, or a
signature by a key nobody trusts are each refused with their own reason.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from agentcell.errors import TrustError
from agentcell.trust.cosign import (
    DOCKER_MANIFEST_MEDIA_TYPE,
    MAX_PAYLOAD_BYTES,
    OCI_CONFIG_MEDIA_TYPE,
    OCI_MANIFEST_MEDIA_TYPE,
    SIMPLE_SIGNING_MEDIA_TYPE,
    Descriptor,
    SignatureLayer,
    SimpleSigningPayload,
    parse_payload,
    parse_signature_manifest,
    signature_config,
    signature_manifest,
    signature_tag,
    simple_signing_payload,
)
from agentcell.trust.keys import PublicKey, SigningKey
from agentcell.trust.reference import Digest, ImageReference
from agentcell.trust.registry import RegistryClient

__all__ = ["Signed", "Verified", "find_signatures", "sign_image", "verify_digest", "verify_image"]

_SIGNATURE_MANIFEST_TYPES = (OCI_MANIFEST_MEDIA_TYPE, DOCKER_MANIFEST_MEDIA_TYPE)


@dataclass(frozen=True, kw_only=True)
class Signed:
    """What ``sign_image`` stored."""

    reference: str
    digest: Digest
    signature_reference: str
    signature_manifest_digest: Digest
    signatures_in_manifest: int
    key: PublicKey


@dataclass(frozen=True, kw_only=True)
class Verified:
    """An image digest, and the trusted key whose signature over it checked out."""

    digest: Digest
    key: PublicKey
    payload: SimpleSigningPayload


def sign_image(
    client: RegistryClient,
    reference: ImageReference,
    key: SigningKey,
    *,
    annotations: Mapping[str, str] | None = None,
) -> Signed:
    """Sign the image ``reference`` names in ``client``'s registry.

    Raises:
        TrustError: the image is not in the registry, or the registry refused or is unreachable.
    """
    digest = client.resolve(reference)
    repository = reference.repository
    payload = simple_signing_payload(reference.name, digest, annotations)
    new_layer = SignatureLayer.make(payload, key.sign(payload))
    existing = _stored_layers(client, repository, digest)
    # Like cosign's duplicate detector: a signature by the same key over the same payload is
    # replaced rather than piled up (ECDSA signatures differ on every signing).
    layers = [
        layer.descriptor
        for layer in existing
        if not (
            layer.descriptor.digest == new_layer.descriptor.digest
            and key.public.verify(layer.signature, payload)
        )
    ]
    layers.append(new_layer.descriptor)
    config = signature_config(layers)
    client.push_blob(repository, payload, SIMPLE_SIGNING_MEDIA_TYPE)
    client.push_blob(repository, config, OCI_CONFIG_MEDIA_TYPE)
    tag = signature_tag(digest)
    manifest_digest = client.push_manifest(
        repository,
        tag,
        signature_manifest(Descriptor.of(config, OCI_CONFIG_MEDIA_TYPE), layers),
    )
    return Signed(
        reference=reference.by_digest(digest),
        digest=digest,
        signature_reference=f"{reference.name}:{tag}",
        signature_manifest_digest=manifest_digest,
        signatures_in_manifest=len(layers),
        key=key.public,
    )


def find_signatures(
    client: RegistryClient, repository: str, digest: Digest
) -> tuple[tuple[SignatureLayer, bytes], ...]:
    """Every simple-signing layer stored for ``digest``, with its payload bytes.

    Raises:
        TrustError: the signature manifest or a payload is malformed, or the registry fails.
    """
    return tuple(
        (layer, client.blob(repository, layer.descriptor.digest, max_bytes=MAX_PAYLOAD_BYTES))
        for layer in _stored_layers(client, repository, digest)
    )


def verify_digest(
    client: RegistryClient,
    reference: ImageReference,
    digest: Digest,
    keys: Sequence[PublicKey],
) -> Verified:
    """Check that a key in ``keys`` signed ``digest`` (already resolved from ``reference``).

    Raises:
        TrustError: no key is trusted, there is no signature, no signature is by a trusted key,
            or the only trusted signatures name another digest.
    """
    if not keys:
        raise TrustError(
            f"signatures are required for {reference} but no public key is trusted",
            reason="no-keys",
            fix="list keys in the trust config (AGENTCELL_TRUST_CONFIG)",
        )
    signatures = find_signatures(client, reference.repository, digest)
    if not signatures:
        raise TrustError(
            f"{reference.by_digest(digest)} is not signed (no {signature_tag(digest)} "
            f"in {reference.name})",
            reason="unsigned",
            fix="sign it with a trusted key (`agentcell image sign --key cosign.key ...`)",
        )
    misdirected: list[str] = []
    for layer, payload in signatures:
        for key in keys:
            if not key.verify(layer.signature, payload):
                continue
            claims = parse_payload(payload)
            if claims.digest == digest:
                return Verified(digest=digest, key=key, payload=claims)
            misdirected.append(f"{key.describe()} signed {claims.digest}")
    if misdirected:
        raise TrustError(
            f"{reference.by_digest(digest)}: the trusted signatures stored for it name another "
            f"image ({'; '.join(misdirected)}); the signature was copied or the image replaced",
            reason="digest-mismatch",
            fix="do not run this image; sign the intended image again",
        )
    trusted = ", ".join(key.describe() for key in keys)
    raise TrustError(
        f"{reference.by_digest(digest)} has {len(signatures)} signature(s), none by a trusted "
        f"key ({trusted}) over its payload; it was signed by another key or the payload was "
        "altered",
        reason="untrusted-signature",
        fix="sign it with a trusted key, or add the signer's public key to the trust config",
    )


def verify_image(
    client: RegistryClient, reference: ImageReference, keys: Sequence[PublicKey]
) -> Verified:
    """Resolve ``reference`` and check that a key in ``keys`` signed what it names.

    Raises:
        TrustError: as :func:`verify_digest`, or the image is not in the registry.
    """
    return verify_digest(client, reference, client.resolve(reference), keys)


def _stored_layers(
    client: RegistryClient, repository: str, digest: Digest
) -> tuple[SignatureLayer, ...]:
    found = client.manifest(repository, signature_tag(digest), accept=_SIGNATURE_MANIFEST_TYPES)
    if found is None or found.raw is None:
        return ()
    return parse_signature_manifest(found.raw)
