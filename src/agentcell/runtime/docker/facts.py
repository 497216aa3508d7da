"""Every container on a Docker host, as the policy rules see it (``agentcell audit``).

:func:`observe_host` lists and inspects every container, running or not, looks up the labels
of their images, and translates each document with
:func:`~agentcell.runtime.docker.container_view.view_of_container` (pure, re-exported here).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import docker

from agentcell.errors import CellNotFound, HostError, ImageError
from agentcell.policy.audit import ObservedContainer
from agentcell.runtime import netfilter
from agentcell.runtime.docker.client import translated
from agentcell.runtime.docker.container_view import INSPECT_PATHS, view_of_container
from agentcell.runtime.docker.networks import TenantNetworks

__all__ = [
    "INSPECT_PATHS",
    "image_labels_by_id",
    "observe_host",
    "view_of_container",
    "with_host_rules",
]


# Inspecting is one request per container. On a local engine the client's own work dominates:
# with 100 containers, 1, 4 and 8 requests in flight all took 110-180 ms on a 2-core host (see
# bench/policy.py). A few in flight hide the round trips of a remote engine (DOCKER_HOST=tcp).
INSPECT_WORKERS = 4


def observe_host(
    client: docker.DockerClient, *, workers: int = INSPECT_WORKERS
) -> list[ObservedContainer]:
    """Every container on the engine, running or not, translated for the rules.

    The list endpoint returns summaries only (no HostConfig), so each container is inspected,
    ``workers`` at a time. A container removed between the listing and its inspection is left
    out.

    Raises:
        EngineUnavailable: the engine stopped answering.
        BackendError: the engine refused to list or inspect.
    """
    with translated("list containers"):
        summaries = client.api.containers(all=True)
    ids = [str(summary["Id"]) for summary in summaries]
    if not ids:
        return []
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(ids)))) as pool:
        documents = [d for d in pool.map(_inspector(client), ids) if d is not None]
    image_labels = image_labels_by_id(client, {str(d.get("Image") or "") for d in documents})
    observed = [
        view_of_container(document, image_labels=image_labels.get(str(document.get("Image"))))
        for document in documents
    ]
    return sorted(with_host_rules(client, observed), key=lambda item: item.view.name)


def with_host_rules(
    client: docker.DockerClient, observed: Sequence[ObservedContainer]
) -> list[ObservedContainer]:
    """``observed``, where each cell on a tenant network whose host rules the kernel does not
    hold as expected carries what is missing or altered (rule AC-042).

    Raises:
        EngineUnavailable: the engine stopped answering.
    """
    networks = TenantNetworks(client)
    problems: dict[str, str] = {}
    for state in networks.all():
        try:
            found = netfilter.differences(
                networks.expected(state), netfilter.read_tables(state.tenant)
            )
        except HostError as exc:
            found = (f"could not be read ({exc.what})",)
        if found:
            problems[state.name] = "; ".join(found)
    return [
        dataclasses.replace(item, view=dataclasses.replace(item.view, host_rules=problems[name]))
        if item.managed and (name := item.view.network) in problems
        else item
        for item in observed
    ]


def image_labels_by_id(
    client: docker.DockerClient, image_ids: Iterable[str]
) -> dict[str, Mapping[str, str]]:
    """Image id -> the image's own labels, for each image that is still on the host.

    Raises:
        EngineUnavailable: the engine stopped answering.
    """
    found: dict[str, Mapping[str, str]] = {}
    for image_id in filter(None, image_ids):
        try:
            with translated("inspect image", subject=image_id[:19]):
                labels = client.images.get(image_id).labels
        except (CellNotFound, ImageError):
            continue  # removed since; its containers keep the labels they were given
        found[image_id] = dict(labels)
    return found


def _inspector(client: docker.DockerClient) -> Callable[[str], Mapping[str, Any] | None]:
    def inspect(container_id: str) -> Mapping[str, Any] | None:
        try:
            with translated("inspect container", subject=container_id[:12]):
                document: Mapping[str, Any] = client.api.inspect_container(container_id)
        except CellNotFound:
            return None  # removed since the listing
        return document

    return inspect
