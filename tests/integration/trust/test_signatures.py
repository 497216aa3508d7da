"""Signing and verifying against the real registry, and admission refusing what fails.

Each test pushes its own image under its own repository, signs it with keys made for the run,
and checks one outcome a platform team relies on: signed images pass; an image changed after
signing, a signature by an unknown key, a copied or edited signature, or no signature at all
are refused with their own reason; a registry that is down stops the launch with nothing made.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Sequence
from typing import Protocol

import docker
import pytest

from agentcell.errors import RegistryUnavailable, TrustError
from agentcell.policy import admit, preset
from agentcell.policy.admission import AdmittedSpec
from agentcell.runtime.docker.backend import DockerBackend
from agentcell.runtime.docker.registry import EngineImages, PushedImage, pull_if_missing
from agentcell.spec.load import load_text
from agentcell.trust.admission import pin_all, pin_and_verify
from agentcell.trust.config import TrustConfig, parse_trust_config
from agentcell.trust.cosign import (
    OCI_CONFIG_MEDIA_TYPE,
    SIMPLE_SIGNING_MEDIA_TYPE,
    Descriptor,
    signature_config,
    signature_manifest,
    signature_tag,
)
from agentcell.trust.keys import PublicKey, SigningKey
from agentcell.trust.reference import ImageReference
from agentcell.trust.registry import Registries, RegistryClient
from agentcell.trust.signing import sign_image, verify_image


class Images(Protocol):
    """The ``images`` fixture: builds and pushes test images, removes their tags afterwards."""

    tags: list[str]
    ids: list[str]

    def build(self) -> str: ...

    def push(self, source: str, target: str) -> PushedImage: ...

    def remove_all(self) -> None: ...


class SecondRegistry(Protocol):
    """A registry the test started on another loopback port."""

    host: str

    def stop(self) -> None: ...


TENANT = "trusttest"


def _admitted(image: str, name: str = "agent") -> AdmittedSpec:
    (doc,) = load_text(
        f"apiVersion: agentcell/v1\nkind: Agent\nmetadata:\n  name: {name}\n"
        f"  tenant: {TENANT}\nspec:\n  image: {image}\n"
        "  command: [python3, -c, 'import time; time.sleep(600)']\n",
        file="agent.yaml",
    )
    return admit(doc, preset("restricted"))


def _requiring(*keys: PublicKey) -> TrustConfig:
    entries = "".join(
        f"  - name: {key.name}\n    pem: |\n"
        + "".join(f"      {line}\n" for line in key.pem().decode().splitlines())
        for key in keys
    )
    return parse_trust_config(
        "apiVersion: agentcell/v1\nkind: TrustConfig\nrequire_signatures: true\n"
        + (f"keys:\n{entries}" if keys else "")
    )


def _up_all(
    backend: DockerBackend,
    batch: Sequence[AdmittedSpec],
    config: TrustConfig,
    local: EngineImages,
) -> None:
    """What `agentcell up` does: pin and verify every image first, then launch each cell."""
    for pinned, spec in zip(pin_all(batch, config, local=local), batch, strict=True):
        backend.up(spec, image=pinned.reference_by_digest)


def _pushed(images: Images, repository: str, tag: str = "v1") -> ImageReference:
    images.push(images.build(), f"{repository}:{tag}")
    return ImageReference.parse(f"{repository}:{tag}")


def test_signed_image_verifies_and_is_pinned_by_digest(
    images: Images, repository: str, registry: RegistryClient, signer: SigningKey
) -> None:
    reference = _pushed(images, repository)
    signed = sign_image(registry, reference, signer, annotations={"team": "platform"})
    verified = verify_image(registry, reference, [signer.public])
    assert verified.digest == signed.digest
    assert verified.key.fingerprint == signer.public.fingerprint
    assert verified.payload.optional == {"team": "platform"}

    pinned = pin_and_verify(_admitted(str(reference)), _requiring(signer.public))
    assert pinned.reference_by_digest == f"{repository}@{signed.digest}"
    assert pinned.signed_by is not None
    assert pinned.signed_by.fingerprint == signer.public.fingerprint
    assert pinned.source == "registry"


def test_stored_signature_object_matches_cosigns_spec(
    images: Images, repository: str, registry: RegistryClient, signer: SigningKey
) -> None:
    reference = _pushed(images, repository)
    signed = sign_image(registry, reference, signer)
    tag = f"sha256-{signed.digest.removeprefix('sha256:')}.sig"
    manifest = registry.manifest(
        reference.repository, tag, accept=["application/vnd.oci.image.manifest.v1+json"]
    )
    assert manifest is not None and manifest.raw is not None
    assert manifest.media_type == "application/vnd.oci.image.manifest.v1+json"
    stored = json.loads(manifest.raw)
    assert stored["schemaVersion"] == 2
    assert stored["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json"
    (layer,) = stored["layers"]
    assert layer["mediaType"] == "application/vnd.dev.cosign.simplesigning.v1+json"
    payload = registry.blob(reference.repository, layer["digest"], max_bytes=65536)
    assert layer["size"] == len(payload)
    document = json.loads(payload)
    assert document == {
        "critical": {
            "identity": {"docker-reference": reference.name},
            "image": {"docker-manifest-digest": signed.digest},
            "type": "cosign container image signature",
        },
        "optional": None,
    }
    signature = base64.b64decode(layer["annotations"]["dev.cosignproject.cosign/signature"])
    assert signer.public.verify(signature, payload)


def test_signing_twice_with_one_key_keeps_one_signature(
    images: Images,
    repository: str,
    registry: RegistryClient,
    signer: SigningKey,
    stranger: SigningKey,
) -> None:
    reference = _pushed(images, repository)
    sign_image(registry, reference, signer)
    assert sign_image(registry, reference, signer).signatures_in_manifest == 1
    assert sign_image(registry, reference, stranger).signatures_in_manifest == 2
    # Both keys' signatures are there; each verifies on its own.
    assert verify_image(registry, reference, [signer.public]).key.name == "release"
    assert verify_image(registry, reference, [stranger.public]).key.name == "stranger"


def test_image_changed_after_signing_is_refused(
    images: Images, repository: str, registry: RegistryClient, signer: SigningKey
) -> None:
    reference = _pushed(images, repository)
    sign_image(registry, reference, signer)
    _pushed(images, repository)  # same tag, new content, new digest
    with pytest.raises(TrustError) as caught:
        pin_and_verify(_admitted(str(reference)), _requiring(signer.public))
    assert caught.value.reason == "unsigned"


def test_signature_copied_to_another_image_is_refused(
    images: Images, repository: str, registry: RegistryClient, signer: SigningKey
) -> None:
    reference = _pushed(images, repository)
    signed = sign_image(registry, reference, signer)
    new_digest = registry.resolve(_pushed(images, repository))
    stored = registry.manifest(reference.repository, signature_tag(signed.digest))
    assert stored is not None and stored.raw is not None
    registry.push_manifest(reference.repository, signature_tag(new_digest), json.loads(stored.raw))
    with pytest.raises(TrustError) as caught:
        pin_and_verify(_admitted(str(reference)), _requiring(signer.public))
    assert caught.value.reason == "digest-mismatch"


def test_payload_edited_after_signing_is_refused(
    images: Images, repository: str, registry: RegistryClient, signer: SigningKey
) -> None:
    reference = _pushed(images, repository)
    signed = sign_image(registry, reference, signer)
    new_digest = registry.resolve(_pushed(images, repository))
    stored = registry.manifest(reference.repository, signature_tag(signed.digest))
    assert stored is not None and stored.raw is not None
    (layer,) = json.loads(stored.raw)["layers"]
    old = registry.blob(reference.repository, layer["digest"], max_bytes=65536)
    # Point the signed claim at the new image and keep the old signature.
    edited = old.replace(signed.digest.encode(), new_digest.encode())
    registry.push_blob(reference.repository, edited, SIMPLE_SIGNING_MEDIA_TYPE)
    descriptor = Descriptor.of(edited, SIMPLE_SIGNING_MEDIA_TYPE, layer["annotations"])
    config = signature_config([descriptor])
    registry.push_blob(reference.repository, config, OCI_CONFIG_MEDIA_TYPE)
    registry.push_manifest(
        reference.repository,
        signature_tag(new_digest),
        signature_manifest(Descriptor.of(config, OCI_CONFIG_MEDIA_TYPE), [descriptor]),
    )
    with pytest.raises(TrustError) as caught:
        pin_and_verify(_admitted(str(reference)), _requiring(signer.public))
    assert caught.value.reason == "untrusted-signature"


def test_signature_by_an_untrusted_key_is_refused(
    images: Images,
    repository: str,
    registry: RegistryClient,
    signer: SigningKey,
    stranger: SigningKey,
) -> None:
    reference = _pushed(images, repository)
    sign_image(registry, reference, stranger)
    with pytest.raises(TrustError) as caught:
        pin_and_verify(_admitted(str(reference)), _requiring(signer.public))
    assert caught.value.reason == "untrusted-signature"
    assert "release" in caught.value.what


def test_unsigned_image_is_refused_when_required_and_warned_about_otherwise(
    images: Images, repository: str, signer: SigningKey
) -> None:
    reference = _pushed(images, repository)
    with pytest.raises(TrustError) as caught:
        pin_and_verify(_admitted(str(reference)), _requiring(signer.public))
    assert caught.value.reason == "unsigned"
    where = caught.value.where
    assert where is not None and (where.file, where.field) == ("agent.yaml", "spec.image")

    with pytest.raises(TrustError) as no_keys:
        pin_and_verify(_admitted(str(reference)), _requiring())
    assert no_keys.value.reason == "no-keys"

    optional = parse_trust_config(
        "apiVersion: agentcell/v1\nkind: TrustConfig\nkeys:\n  - name: release\n    pem: |\n"
        + "".join(f"      {line}\n" for line in signer.public.pem().decode().splitlines())
    )
    pinned = pin_and_verify(_admitted(str(reference)), optional)
    assert pinned.signed_by is None
    assert any("not signed" in warning for warning in pinned.warnings)


def test_registry_down_is_a_clear_error_and_nothing_is_launched(
    docker_client: docker.DockerClient,
    images: Images,
    second_registry: Callable[[], SecondRegistry],
    signer: SigningKey,
) -> None:
    other = second_registry()
    reference = ImageReference.parse(f"{other.host}/agentcell-test/down:v1")
    images.push(images.build(), str(reference))
    client = RegistryClient(other.host)
    sign_image(client, reference, signer)
    client.close()
    other.stop()

    backend = DockerBackend(docker_client)
    # A local image first (allowed: signatures are not required here), then the one whose
    # registry is down: the whole batch stops before the first cell is made.
    batch = [_admitted(images.build(), name="first"), _admitted(str(reference), name="second")]
    with pytest.raises(RegistryUnavailable) as down:
        _up_all(backend, batch, TrustConfig(), EngineImages(docker_client))
    assert down.value.exit_code == 3
    assert other.host in down.value.what
    assert down.value.fix is not None
    assert backend.cells(tenant=TENANT) == []


def test_verified_image_runs_by_digest_after_a_pull(
    docker_client: docker.DockerClient,
    images: Images,
    repository: str,
    signer: SigningKey,
) -> None:
    reference = _pushed(images, repository)
    with Registries() as registries:
        sign_image(registries.client(reference.registry or ""), reference, signer)
        pinned = pin_and_verify(
            _admitted(str(reference)), _requiring(signer.public), registries=registries
        )
    images.remove_all()  # not on this host any more: the backend must pull it
    images.tags.append(pinned.reference_by_digest)
    assert pull_if_missing(docker_client, pinned.reference_by_digest)
    images.ids.append(str(docker_client.images.get(pinned.reference_by_digest).id))
    assert not pull_if_missing(docker_client, pinned.reference_by_digest)

    backend = DockerBackend(docker_client)
    spec = _admitted(str(reference))
    try:
        cell = backend.up(spec, image=pinned.reference_by_digest).cell
        assert cell.image == pinned.reference_by_digest
        assert cell.image.endswith(pinned.digest)
    finally:
        backend.down(TENANT, "agent")
