"""Pinning at admission without a registry: local images, tag-only refusals, required keys."""

from __future__ import annotations

import pytest

from agentcell.errors import TrustError
from agentcell.policy import admit, preset
from agentcell.policy.admission import AdmittedSpec
from agentcell.spec.load import load_text
from agentcell.trust.admission import pin_all, pin_and_verify
from agentcell.trust.config import TrustConfig, parse_trust_config

IMAGE_ID = "sha256:" + "1f" * 32


class _Store:
    """A stand-in image store: a mapping from reference to image ID, nothing more."""

    def __init__(self, images: dict[str, str]) -> None:
        self.images = images

    def image_id(self, reference: str) -> str | None:
        return self.images.get(reference)


def _admitted(image: str, tenant: str = "acme") -> AdmittedSpec:
    (doc,) = load_text(
        f"apiVersion: agentcell/v1\nkind: Agent\nmetadata:\n  name: a\n  tenant: {tenant}\n"
        f"spec:\n  image: {image}\n",
        file="agent.yaml",
    )
    return admit(doc, preset("restricted"))


def _config(text: str) -> TrustConfig:
    return parse_trust_config("apiVersion: agentcell/v1\nkind: TrustConfig\n" + text)


def test_a_local_image_is_pinned_to_its_id_and_labelled_unsigned() -> None:
    store = _Store({"agentcell/sandbox:0.1.0": IMAGE_ID})
    pinned = pin_and_verify(_admitted("agentcell/sandbox:0.1.0"), TrustConfig(), local=store)
    assert pinned.reference_by_digest == IMAGE_ID
    assert pinned.digest == IMAGE_ID
    assert pinned.source == "local"
    assert pinned.signed_by is None
    assert pinned.trust == "local, unsigned"
    assert pinned.warnings


def test_a_local_image_is_refused_when_signatures_are_required() -> None:
    store = _Store({"agentcell/sandbox:0.1.0": IMAGE_ID})
    config = _config("tenants:\n  acme:\n    require_signatures: true\n")
    with pytest.raises(TrustError) as caught:
        pin_and_verify(_admitted("agentcell/sandbox:0.1.0"), config, local=store)
    assert caught.value.reason == "local-unsigned"
    where = caught.value.where
    assert where is not None
    assert (where.file, where.line, where.field) == ("agent.yaml", 7, "spec.image")
    # Another tenant is not bound by acme's setting.
    other = pin_and_verify(_admitted("agentcell/sandbox:0.1.0", "beta"), config, local=store)
    assert other.source == "local"


def test_tag_only_references_are_refused_when_digests_are_required() -> None:
    config = _config("require_digest: true\n")
    with pytest.raises(TrustError) as caught:
        pin_and_verify(_admitted("127.0.0.1:5000/a/b:1"), config)
    assert caught.value.reason == "tag-only"
    assert caught.value.fix is not None and "@sha256:" in caught.value.fix


def test_a_missing_local_image_is_a_clear_error() -> None:
    with pytest.raises(TrustError, match="not on this host") as caught:
        pin_and_verify(_admitted("agentcell/absent:1"), TrustConfig(), local=_Store({}))
    assert caught.value.reason == "not-found"


def test_a_batch_is_pinned_all_or_nothing() -> None:
    store = _Store({"agentcell/sandbox:0.1.0": IMAGE_ID})
    specs = [_admitted("agentcell/sandbox:0.1.0"), _admitted("agentcell/absent:1")]
    with pytest.raises(TrustError, match="absent"):
        pin_all(specs, TrustConfig(), local=store)
    assert [p.digest for p in pin_all(specs[:1], TrustConfig(), local=store)] == [IMAGE_ID]
