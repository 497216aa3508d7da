"""The stored signature objects, field by field against cosign's SIGNATURE_SPEC.md."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest

from agentcell.errors import TrustError
from agentcell.trust.cosign import (
    Descriptor,
    SignatureLayer,
    parse_payload,
    parse_signature_manifest,
    signature_config,
    signature_manifest,
    signature_tag,
    simple_signing_payload,
)
from agentcell.trust.keys import generate_key_pair
from agentcell.trust.reference import parse_digest

DIGEST = parse_digest(
    "sha256:" + "97fc222cee7991b5b061d4d4afdb5f3428fcb0c9054e1690313786befa1e4e36"
)


def test_signature_tag_follows_the_spec_example() -> None:
    # The worked example of "Tag-based Discovery" in the spec.
    assert signature_tag(DIGEST) == (
        "sha256-97fc222cee7991b5b061d4d4afdb5f3428fcb0c9054e1690313786befa1e4e36.sig"
    )


def test_payload_is_simple_signing_json_as_cosign_marshals_it() -> None:
    payload = simple_signing_payload("127.0.0.1:5000/agentcell/agent", DIGEST)
    assert payload == (
        b'{"critical":{"identity":{"docker-reference":"127.0.0.1:5000/agentcell/agent"},'
        b'"image":{"docker-manifest-digest":"sha256:97fc222cee7991b5b061d4d4afdb5f3428fcb0c9054e1'
        b'690313786befa1e4e36"},"type":"cosign container image signature"},"optional":null}'
    )
    document = json.loads(payload)
    assert list(document) == ["critical", "optional"]
    assert list(document["critical"]) == ["identity", "image", "type"]


def test_annotations_go_to_optional() -> None:
    document = json.loads(simple_signing_payload("r/a", DIGEST, {"team": "platform"}))
    assert document["optional"] == {"team": "platform"}


def test_signature_manifest_fields_match_the_spec() -> None:
    key = generate_key_pair()
    payload = simple_signing_payload("127.0.0.1:5000/a", DIGEST)
    layer = SignatureLayer.make(payload, key.sign(payload))
    config = signature_config([layer.descriptor])
    manifest = signature_manifest(
        Descriptor.of(config, "application/vnd.oci.image.config.v1+json"), [layer.descriptor]
    )

    assert manifest["schemaVersion"] == 2
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert manifest["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json"
    assert manifest["config"]["digest"] == "sha256:" + hashlib.sha256(config).hexdigest()
    assert manifest["config"]["size"] == len(config)
    (stored,) = manifest["layers"]
    assert set(stored) == {"mediaType", "size", "digest", "annotations"}
    assert stored["mediaType"] == "application/vnd.dev.cosign.simplesigning.v1+json"
    assert stored["digest"] == "sha256:" + hashlib.sha256(payload).hexdigest()
    assert stored["size"] == len(payload)
    assert list(stored["annotations"]) == ["dev.cosignproject.cosign/signature"]
    signature = base64.b64decode(stored["annotations"]["dev.cosignproject.cosign/signature"])
    assert signature[0] == 0x30  # an ASN.1 DER SEQUENCE (r, s), not a raw r||s pair
    assert key.public.verify(signature, payload)


def test_a_stored_manifest_parses_back_to_its_signatures() -> None:
    key = generate_key_pair()
    payload = simple_signing_payload("r/a", DIGEST)
    layer = SignatureLayer.make(payload, key.sign(payload))
    manifest = signature_manifest(
        Descriptor.of(b"{}", "application/vnd.oci.image.config.v1+json"),
        [layer.descriptor, Descriptor.of(b"x", "application/vnd.in-toto+json")],
    )
    (parsed,) = parse_signature_manifest(json.dumps(manifest).encode())
    assert parsed == layer


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b'{"schemaVersion": 2}',
        json.dumps(
            {
                "schemaVersion": 2,
                "layers": [
                    {
                        "mediaType": "application/vnd.dev.cosign.simplesigning.v1+json",
                        "size": 1,
                        "digest": "sha256:" + "0" * 64,
                    }
                ],
            }
        ).encode(),
    ],
)
def test_damaged_signature_manifests_are_refused(raw: bytes) -> None:
    with pytest.raises(TrustError) as caught:
        parse_signature_manifest(raw)
    assert caught.value.reason == "malformed-signature"


def test_payload_parsing_checks_the_type() -> None:
    parsed = parse_payload(simple_signing_payload("r/a", DIGEST))
    assert parsed.digest == DIGEST
    assert parsed.docker_reference == "r/a"
    other = simple_signing_payload("r/a", DIGEST).replace(b"cosign container", b"atomic container")
    with pytest.raises(TrustError, match="type"):
        parse_payload(other)
