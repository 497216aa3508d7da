"""The labels agentcell puts on a cell, and when to believe them."""

from __future__ import annotations

from collections.abc import Mapping

__all__ = [
    "LABEL_AGENT",
    "LABEL_APPLIED",
    "LABEL_EXCEPTIONS",
    "LABEL_IMAGE_REQUESTED",
    "LABEL_IMAGE_TRUST",
    "LABEL_MANAGED",
    "LABEL_PREFIX",
    "LABEL_PROBE",
    "LABEL_RUNTIME",
    "LABEL_SANDBOX",
    "LABEL_SANDBOX_POOL",
    "LABEL_SANDBOX_TEMPLATE",
    "LABEL_SOURCE",
    "LABEL_SPEC",
    "LABEL_SPEC_HASH",
    "LABEL_TENANT",
    "LABEL_UID",
    "agentcell_labels",
    "trusted_labels",
]

LABEL_PREFIX = "org.agentcell."
"""Reserved: only agentcell sets labels under it, when it creates a cell."""
LABEL_MANAGED = "org.agentcell.managed"
LABEL_TENANT = "org.agentcell.tenant"
LABEL_AGENT = "org.agentcell.agent"
LABEL_UID = "org.agentcell.uid"
LABEL_SPEC_HASH = "org.agentcell.spec-hash"
LABEL_RUNTIME = "org.agentcell.runtime"
LABEL_SOURCE = "org.agentcell.source"
LABEL_EXCEPTIONS = "org.agentcell.exceptions"
LABEL_SPEC = "org.agentcell.spec"
"""The normalized spec as JSON, so ``verify`` can compare a running cell with what was asked."""
LABEL_IMAGE_REQUESTED = "org.agentcell.image-requested"
LABEL_IMAGE_TRUST = "org.agentcell.image-trust"
LABEL_APPLIED = "org.agentcell.applied"
"""On cells ``agentcell apply`` made: only those may ``apply --prune`` remove."""
LABEL_SANDBOX = "org.agentcell.sandbox"
"""On a sandbox's cell (``true``): the host service made it, and removes it when no sandbox
record holds it."""
LABEL_SANDBOX_TEMPLATE = "org.agentcell.sandbox.template"
"""The template a sandbox's cell was made from."""
LABEL_SANDBOX_POOL = "org.agentcell.sandbox.pool"
"""How the cell was born: ``warm`` (for the pool, before anyone asked) or ``cold`` (for one
caller). Labels cannot change, so whether a warm cell was handed out is in the service's store."""
LABEL_PROBE = "org.agentcell.probe"
"""On the canary and neighbour containers a probe run starts (they are not cells)."""


def agentcell_labels(labels: Mapping[str, str]) -> dict[str, str]:
    """The ``org.agentcell.*`` labels among ``labels``."""
    return {key: value for key, value in labels.items() if key.startswith(LABEL_PREFIX)}


def trusted_labels(
    container_labels: Mapping[str, str], image_labels: Mapping[str, str]
) -> dict[str, str] | None:
    """agentcell's labels of a container when agentcell set them at create time, else None.

    The engine merges an image's labels into its containers', so an image labelled
    ``org.agentcell.managed=true`` would make any container from it look like a cell, with
    whatever exceptions the image claims. Admission refuses images carrying agentcell labels,
    so a container whose image has any is not a cell agentcell made, whatever it says.
    """
    if container_labels.get(LABEL_MANAGED) != "true" or agentcell_labels(image_labels):
        return None
    return agentcell_labels(container_labels)
