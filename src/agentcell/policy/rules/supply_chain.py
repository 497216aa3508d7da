"""Supply chain: what names the image a cell runs, and what the image claims about itself."""

from __future__ import annotations

import re

from agentcell.policy.rules.base import Rule, Violation
from agentcell.policy.view import CellView

__all__ = [
    "IMAGE_AGENTCELL_LABELS",
    "IMAGE_BY_TAG",
    "RULES",
]


def _digest_pinned(image: str) -> bool:
    return "@sha256:" in image or re.fullmatch(r"(sha256:)?[0-9a-f]{64}", image) is not None


def _tag(view: CellView) -> list[Violation]:
    if _digest_pinned(view.image):
        return []
    return [
        Violation(
            message=f"image {view.image} is referenced by tag; the tag can move to other content",
            fact="image",
            fix="push it to a registry (`agentcell image push` prints its digest) and write "
            f"{view.image.split('@')[0]}@sha256:<digest>; a local image is pinned to its image "
            "ID at launch either way",
        )
    ]


IMAGE_BY_TAG = Rule(
    id="AC-029",
    severity="warning",
    title="Image referenced by tag",
    rationale="A tag can be moved to other content; only a digest names exactly the image "
    "that was reviewed and signed.",
    remediation="Push the image to a registry and reference it by digest (repo@sha256:...); "
    "`agentcell image push` prints the digest. A local image is pinned to its image ID at launch.",
    cis=("5.28",),
    security_severity=4.0,
    check=_tag,
)


def _image_agentcell_labels(view: CellView) -> list[Violation]:
    if not view.image_agentcell_labels:
        return []
    return [
        Violation(
            message=f"image {view.image} carries agentcell's own labels "
            f"({', '.join(view.image_agentcell_labels)}): it claims to be a cell, with "
            "exceptions no spec granted; the container is judged as not agentcell's",
            fact="image_agentcell_labels",
            fix="rebuild the image without org.agentcell.* labels",
        )
    ]


IMAGE_AGENTCELL_LABELS = Rule(
    id="AC-039",
    severity="error",
    title="Image carries agentcell labels",
    rationale="The engine copies an image's labels into its containers. An image labelled "
    "org.agentcell.managed or org.agentcell.exceptions would make any container from it "
    "look like an admitted cell with exceptions that no spec granted.",
    remediation="Rebuild the image without org.agentcell.* labels; only agentcell sets "
    "them, when it creates a cell.",
    security_severity=7.0,
    check=_image_agentcell_labels,
)


RULES: tuple[Rule, ...] = (
    IMAGE_BY_TAG,
    IMAGE_AGENTCELL_LABELS,
)
