"""cosign's signature objects: the simple-signing payload and the OCI manifest that stores it.

Follows cosign's ``specs/SIGNATURE_SPEC.md`` (the version in cosign v2; the format has been
stable since cosign 1.0) and the payload type of sigstore's ``pkg/signature/payload``:

- the payload is simple-signing JSON: ``critical.identity.docker-reference``,
  ``critical.image.docker-manifest-digest``, ``critical.type`` =
  ``cosign container image signature``, and ``optional`` (``null`` without annotations);
- it is stored as a blob and referenced by a layer of media type
  ``application/vnd.dev.cosign.simplesigning.v1+json`` in an OCI image manifest whose config
  has media type ``application/vnd.oci.image.config.v1+json``;
- the base64 of the ASN.1 DER ECDSA-P256-SHA256 signature over the payload bytes is the layer
  annotation ``dev.cosignproject.cosign/signature``;
- the manifest is tagged ``sha256-<hex>.sig`` in the image's repository (tag-based discovery).

Pure functions on bytes: nothing here talks to a registry.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pydantic
from pydantic import BaseModel, ConfigDict, Field

from agentcell.errors import TrustError
from agentcell.trust.reference import Digest, parse_digest

__all__ = [
    "OCI_CONFIG_MEDIA_TYPE",
    "OCI_MANIFEST_MEDIA_TYPE",
    "SIGNATURE_ANNOTATION",
    "SIGNATURE_TYPE",
    "SIMPLE_SIGNING_MEDIA_TYPE",
    "Descriptor",
    "SignatureLayer",
    "SimpleSigningPayload",
    "digest_of",
    "parse_payload",
    "parse_signature_manifest",
    "signature_config",
    "signature_manifest",
    "signature_tag",
    "simple_signing_payload",
]

SIMPLE_SIGNING_MEDIA_TYPE = "application/vnd.dev.cosign.simplesigning.v1+json"
OCI_MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG_MEDIA_TYPE = "application/vnd.oci.image.config.v1+json"
DOCKER_MANIFEST_MEDIA_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
SIGNATURE_TYPE = "cosign container image signature"
# A payload is a few hundred bytes; a signature manifest with more layers than this is abuse.
MAX_PAYLOAD_BYTES = 64 * 1024
MAX_SIGNATURES = 64


def digest_of(data: bytes) -> Digest:
    """The sha256 digest of ``data`` as registries write it."""
    return Digest(f"sha256:{hashlib.sha256(data).hexdigest()}")


def signature_tag(digest: Digest) -> str:
    """Where cosign looks for the signatures of ``digest``: ``sha256-<hex>.sig``."""
    algorithm, _, hex_digest = digest.partition(":")
    return f"{algorithm}-{hex_digest}.sig"


def simple_signing_payload(
    docker_reference: str, digest: Digest, optional: Mapping[str, str] | None = None
) -> bytes:
    """The bytes that get signed, in the field order and compact form cosign marshals them."""
    document = {
        "critical": {
            "identity": {"docker-reference": docker_reference},
            "image": {"docker-manifest-digest": digest},
            "type": SIGNATURE_TYPE,
        },
        "optional": dict(optional) if optional else None,
    }
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True, kw_only=True)
class Descriptor:
    """An OCI content descriptor: what a manifest says about one blob."""

    media_type: str
    digest: Digest
    size: int
    annotations: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def of(
        cls, data: bytes, media_type: str, annotations: Mapping[str, str] | None = None
    ) -> Descriptor:
        """The descriptor of blob ``data``."""
        return cls(
            media_type=media_type,
            digest=digest_of(data),
            size=len(data),
            annotations=dict(annotations or {}),
        )

    def as_json(self) -> dict[str, Any]:
        """The descriptor as it appears in a manifest."""
        out: dict[str, Any] = {
            "mediaType": self.media_type,
            "size": self.size,
            "digest": self.digest,
        }
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out


@dataclass(frozen=True, kw_only=True)
class SignatureLayer:
    """One signature in a signature manifest: the payload's descriptor and the signature."""

    descriptor: Descriptor
    signature: bytes
    """ASN.1 DER, decoded from the annotation."""

    @classmethod
    def make(cls, payload: bytes, signature: bytes) -> SignatureLayer:
        """The layer that stores ``payload`` signed with ``signature``."""
        annotations = {SIGNATURE_ANNOTATION: base64.b64encode(signature).decode()}
        return cls(
            descriptor=Descriptor.of(payload, SIMPLE_SIGNING_MEDIA_TYPE, annotations),
            signature=signature,
        )


def signature_config(layers: Sequence[Descriptor]) -> bytes:
    """The config blob of a signature manifest, shaped like the one cosign writes: an image
    config whose rootfs lists each payload. Verifiers do not read it."""
    config = {
        "architecture": "",
        "created": "0001-01-01T00:00:00Z",
        "history": [{"created": "0001-01-01T00:00:00Z"} for _ in layers],
        "os": "",
        "rootfs": {"type": "layers", "diff_ids": [layer.digest for layer in layers]},
        "config": {},
    }
    return json.dumps(config, separators=(",", ":")).encode()


def signature_manifest(config: Descriptor, layers: Sequence[Descriptor]) -> dict[str, Any]:
    """The OCI image manifest that holds ``layers`` (simple-signing payloads)."""
    return {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST_MEDIA_TYPE,
        "config": config.as_json(),
        "layers": [layer.as_json() for layer in layers],
    }


class _Descriptor(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    media_type: str = Field(alias="mediaType")
    digest: str
    size: int = Field(ge=0)
    annotations: dict[str, str] | None = None


class _Manifest(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    schema_version: int = Field(alias="schemaVersion")
    layers: list[_Descriptor] = Field(max_length=MAX_SIGNATURES)


def parse_signature_manifest(raw: bytes) -> tuple[SignatureLayer, ...]:
    """Every simple-signing layer of a signature manifest, with its decoded signature.

    Layers of other media types (attestations, SBOMs) are skipped; a simple-signing layer
    without a readable signature annotation is an error, since it can only be damage.

    Raises:
        TrustError: the manifest is not JSON of the expected shape.
    """
    try:
        manifest = _Manifest.model_validate_json(raw)
    except pydantic.ValidationError as exc:
        raise TrustError(
            f"the signature manifest is malformed: {exc.errors()[0]['msg']}",
            reason="malformed-signature",
            fix="re-sign the image (`agentcell image sign`)",
        ) from exc
    layers = []
    for layer in manifest.layers:
        if layer.media_type != SIMPLE_SIGNING_MEDIA_TYPE:
            continue
        encoded = (layer.annotations or {}).get(SIGNATURE_ANNOTATION)
        if encoded is None:
            raise TrustError(
                f"signature layer {layer.digest} has no {SIGNATURE_ANNOTATION} annotation",
                reason="malformed-signature",
                fix="re-sign the image",
            )
        try:
            signature = base64.b64decode(encoded, validate=True)
        except binascii.Error as exc:
            raise TrustError(
                f"signature layer {layer.digest}: the signature is not base64",
                reason="malformed-signature",
            ) from exc
        descriptor = Descriptor(
            media_type=layer.media_type,
            digest=parse_digest(layer.digest),
            size=layer.size,
            annotations=dict(layer.annotations or {}),
        )
        layers.append(SignatureLayer(descriptor=descriptor, signature=signature))
    return tuple(layers)


class _Identity(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    docker_reference: str = Field(alias="docker-reference")


class _Image(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    docker_manifest_digest: str = Field(alias="docker-manifest-digest")


class _Critical(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    identity: _Identity
    image: _Image
    type: str


class SimpleSigningPayload(BaseModel):
    """A parsed simple-signing payload (only after its signature verified)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    critical: _Critical
    optional: dict[str, Any] | None = None

    @property
    def digest(self) -> str:
        """The manifest digest the signer vouched for."""
        return self.critical.image.docker_manifest_digest

    @property
    def docker_reference(self) -> str:
        """The repository the signer named (informational: the spec says it is ignored)."""
        return self.critical.identity.docker_reference


def parse_payload(raw: bytes) -> SimpleSigningPayload:
    """Parse a payload whose signature has been verified.

    Raises:
        TrustError: it is not simple-signing JSON of type ``cosign container image signature``.
    """
    try:
        payload = SimpleSigningPayload.model_validate_json(raw)
    except pydantic.ValidationError as exc:
        raise TrustError(
            "a signed payload is not cosign simple-signing JSON",
            reason="malformed-signature",
        ) from exc
    if payload.critical.type != SIGNATURE_TYPE:
        raise TrustError(
            f"a signed payload has type {payload.critical.type!r}, not {SIGNATURE_TYPE!r}",
            reason="malformed-signature",
        )
    return payload
