"""The engine's side of image trust: pushing to a registry, pulling by digest, local image IDs.

The registry protocol itself (digests, signatures) lives in :mod:`agentcell.trust`, which never
imports the docker SDK; what needs the engine is here.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

import docker

from agentcell.errors import ImageError, ImageNotFound
from agentcell.runtime.docker.client import registry_unreachable, translated
from agentcell.trust.reference import Digest, ImageReference, parse_digest

__all__ = ["EngineImages", "PushedImage", "pull_if_missing", "push"]

_LOG_TAIL = 10


@dataclass(frozen=True, kw_only=True)
class PushedImage:
    """An image the engine pushed, and the manifest digest the registry gave it."""

    reference: str
    digest: Digest

    @property
    def reference_by_digest(self) -> str:
        """``registry/repository@sha256:...``: what to write in a spec to pin it."""
        return ImageReference.parse(self.reference).by_digest(self.digest)


class EngineImages:
    """The engine's local image store, as :class:`agentcell.trust.LocalImages`."""

    def __init__(self, client: docker.DockerClient) -> None:
        self.client = client

    def image_id(self, reference: str) -> str | None:
        """The image ID of ``reference`` in the engine's store, or None.

        Raises:
            BackendError: the engine failed to answer.
        """
        try:
            with translated("inspect image", subject=reference):
                image_id = str(self.client.images.get(reference).id)
        except ImageNotFound:
            return None
        return image_id


def push(client: docker.DockerClient, source: str, target: str | None = None) -> PushedImage:
    """Tag local image ``source`` as ``target`` (when given) and push it to its registry.

    Raises:
        ImageError: ``source`` is missing, the target names no registry, or the push failed.
    """
    destination = ImageReference.parse(target or source)
    if destination.is_local:
        raise ImageError(
            f"{target or source} names no registry to push to",
            fix="name one, e.g. 127.0.0.1:5000/agentcell/monitor-agent:0.1.0",
        )
    if destination.digest is not None:
        raise ImageError(f"push to a tag, not a digest: {destination}")
    tag = destination.effective_tag
    label = f"push image {destination}"
    try:
        with translated("push image", subject=str(destination)):
            image = client.images.get(source)
    except ImageNotFound as exc:
        raise ImageNotFound(
            f"image {source} is not on this host", fix="build it or check the name"
        ) from exc
    log: deque[str] = deque(maxlen=_LOG_TAIL)
    digest: str | None = None
    with translated("push image", subject=str(destination)):
        image.tag(destination.name, tag=tag)
        for chunk in client.images.push(destination.name, tag=tag, stream=True, decode=True):
            digest = _digest_from(chunk, log, label=label) or digest
    if digest is None:
        raise ImageError(
            f"the engine finished pushing {destination.name}:{tag} without reporting a digest:\n"
            + "\n".join(log)
        )
    return PushedImage(reference=f"{destination.name}:{tag}", digest=parse_digest(digest))


def pull_if_missing(client: docker.DockerClient, reference_by_digest: str) -> bool:
    """Make sure ``repo@sha256:...`` is on this host; pull it if not. True when pulled.

    Pulling by digest makes the engine check every byte against that digest, so the image that
    runs is the one that was verified.

    Raises:
        ImageError: the reference is not by digest, or the pull failed.
    """
    reference = ImageReference.parse(reference_by_digest)
    if reference.digest is None or reference.is_local:
        raise ImageError(f"{reference_by_digest} is not a registry reference by digest")
    try:
        with translated("inspect image", subject=reference_by_digest):
            client.images.get(reference_by_digest)
    except ImageNotFound:
        pass
    else:
        return False
    with translated("pull image", subject=reference_by_digest):
        client.images.pull(reference.name, tag=reference.digest)
    return True


def _digest_from(chunk: Any, log: deque[str], *, label: str) -> str | None:
    """The pushed digest in one progress message; raise on an error message.

    Raises:
        RegistryUnavailable: the engine cannot reach the registry.
        ImageError: the engine reports any other failure.
    """
    if not isinstance(chunk, dict):
        return None
    error = chunk.get("error")
    if error is not None:
        unreachable = registry_unreachable(label, str(error))
        if unreachable is not None:
            raise unreachable
        raise ImageError(
            f"push failed: {error}",
            fix="check that the registry runs (scripts/setup.sh) and the name is right",
        )
    status = chunk.get("status")
    if isinstance(status, str):
        log.append(status)
    aux = chunk.get("aux")
    if isinstance(aux, dict) and isinstance(aux.get("Digest"), str):
        return str(aux["Digest"])
    return None
