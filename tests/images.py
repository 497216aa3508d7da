"""Test images built on the fly from a one-line Dockerfile (nothing is pulled)."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Mapping

import docker


def build_labelled(client: docker.DockerClient, tag: str, labels: Mapping[str, str]) -> str:
    """``agentcell/sandbox:0.1.0`` with ``labels`` added, tagged ``tag``; the caller removes it."""
    pairs = " ".join(f'{key}="{value}"' for key, value in labels.items())
    dockerfile = f"FROM agentcell/sandbox:0.1.0\nLABEL {pairs}\n".encode()
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as archive:
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile)
        archive.addfile(info, io.BytesIO(dockerfile))
    context.seek(0)
    client.images.build(fileobj=context, custom_context=True, tag=tag, rm=True)
    return tag
