"""Cells on one Docker Engine: idempotent up, down, listing, logs and inspection.

Only an :class:`~agentcell.policy.AdmittedSpec` can be launched. ``up`` checks everything it
can before it creates anything (runtime, network support, name ownership, image presence), and
removes what it made if a later step fails, so a failed launch leaves nothing behind.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import docker
import docker.errors
from docker.models.containers import Container

from agentcell.errors import BackendError, CellConflict, CellNotFound, ImageError
from agentcell.policy.admission import AdmittedSpec
from agentcell.runtime.cells import Cell, UpResult
from agentcell.runtime.docker.client import DEFAULT_API_VERSION, connect, translated
from agentcell.runtime.docker.effective import cpu_limit
from agentcell.runtime.docker.host import HostFacts
from agentcell.runtime.docker.translate import (
    LABEL_AGENT,
    LABEL_EXCEPTIONS,
    LABEL_IMAGE_REQUESTED,
    LABEL_IMAGE_TRUST,
    LABEL_MANAGED,
    LABEL_SOURCE,
    LABEL_SPEC_HASH,
    LABEL_TENANT,
    BindMount,
    ContainerSettings,
    container_name,
    settings_for,
)

__all__ = ["DockerBackend"]

STOP_TIMEOUT_S = 10


class DockerBackend:
    """Cells on the Docker Engine reached through ``client``."""

    def __init__(self, client: docker.DockerClient) -> None:
        self.client = client
        self._facts: HostFacts | None = None

    @classmethod
    def connect(cls, environ: Mapping[str, str] | None = None) -> DockerBackend:
        """A backend on the engine named by the environment (``DOCKER_HOST``).

        Raises:
            EngineUnavailable: the engine does not answer.
        """
        return cls(connect(environ))

    def close(self) -> None:
        """Release the connection pool."""
        self.client.close()

    @property
    def facts(self) -> HostFacts:
        """What the engine offers; read once per backend."""
        if self._facts is None:
            with translated("read engine info"):
                info = self.client.info()
            self._facts = HostFacts.from_info(
                info, api_version=str(self.client.api.api_version or DEFAULT_API_VERSION)
            )
        return self._facts

    # -- launching ---------------------------------------------------------------------------

    def up(
        self,
        admitted: AdmittedSpec,
        *,
        image: str | None = None,
        extra_mounts: Sequence[BindMount] = (),
        extra_env: Mapping[str, str] | None = None,
        image_trust: str | None = None,
    ) -> UpResult:
        """Make the cell match the admitted spec: create it, leave it, start it or replace it.

        The keyword arguments are passed to
        :func:`~agentcell.runtime.docker.translate.settings_for`. A cell is unchanged only when
        both its spec hash and the image it runs (e.g. a pinned digest) are the same.

        Raises:
            HostError: the host cannot honour the spec (runtime absent, no network under runsc).
            CellConflict: the container name belongs to something agentcell did not create.
            ImageError: the image is not on this host.
            BackendError: the engine refused to create or start the cell.
        """
        settings = settings_for(
            admitted,
            image=image,
            extra_mounts=extra_mounts,
            extra_env=extra_env,
            image_trust=image_trust,
        )
        self.check_host(settings)
        existing = self._get(settings.name)
        if existing is not None:
            labels = existing.labels
            if labels.get(LABEL_MANAGED) != "true":
                raise CellConflict(
                    f"a container named {settings.name} exists and agentcell did not create it",
                    where=admitted.doc.where("metadata", "name"),
                    fix=f"rename or remove it (docker rm -f {settings.name}), or rename the agent",
                )
            same_image = (existing.attrs.get("Config") or {}).get("Image") == settings.image
            if same_image and labels.get(LABEL_SPEC_HASH) == settings.labels[LABEL_SPEC_HASH]:
                if existing.status == "running":
                    return UpResult(cell=self._cell(existing), action="unchanged")
                with translated("start", subject=settings.name):
                    existing.start()
                    existing.reload()
                return UpResult(cell=self._cell(existing), action="started")
            self._require_image(settings.image)
            self._remove(existing)
            return UpResult(cell=self._create(settings), action="replaced")
        return UpResult(cell=self._create(settings), action="created")

    def check_host(self, settings: ContainerSettings) -> None:
        """Refuse settings this host cannot honour, before anything is created.

        Raises:
            HostError: the runtime is absent, or cannot give the cell its network or mounts.
        """
        self.facts.require_runtime(
            settings.runtime,
            networked=settings.network_mode != "none",
            host_paths=[mount.source for mount in settings.mounts],
        )

    def _create(self, settings: ContainerSettings) -> Cell:
        if settings.internal_network is not None:
            self._ensure_network(settings)
        try:
            with translated("create", subject=settings.name):
                container = self.client.containers.create(**settings.sdk_kwargs())
        except (BackendError, ImageError):
            self._prune_network(settings.network_mode)
            raise
        try:
            with translated("start", subject=settings.name):
                container.start()
                container.reload()
        except BackendError:
            self._remove(container)
            self._prune_network(settings.network_mode)
            raise
        return self._cell(container)

    def _ensure_network(self, settings: ContainerSettings) -> None:
        name = settings.internal_network
        assert name is not None
        with translated("look up network", subject=name):
            if self.client.networks.list(names=[name]):
                return
            # Internal: no gateway out of the host; tenant cells reach only each other.
            self.client.networks.create(
                name,
                driver="bridge",
                internal=True,
                labels={
                    LABEL_MANAGED: "true",
                    LABEL_TENANT: settings.labels[LABEL_TENANT],
                },
            )

    def _require_image(self, reference: str) -> None:
        try:
            self.client.images.get(reference)
        except docker.errors.ImageNotFound as exc:
            raise ImageError(
                f"image {reference} is not on this host",
                fix="run `agentcell image bootstrap` or build/pull the image first",
            ) from exc
        except docker.errors.APIError as exc:
            raise BackendError(f"look up image {reference}: {exc.explanation}") from exc

    # -- stopping ----------------------------------------------------------------------------

    def down(self, tenant: str, name: str) -> bool:
        """Stop and remove the cell; False when there was none.

        Raises:
            CellConflict: the container by that name is not agentcell's.
        """
        container = self._get(container_name(tenant, name))
        if container is None:
            return False
        if container.labels.get(LABEL_MANAGED) != "true":
            raise CellConflict(
                f"container {container.name} was not created by agentcell; not removing it"
            )
        network = container.attrs["HostConfig"].get("NetworkMode", "")
        self._remove(container)
        self._prune_network(network)
        return True

    def _remove(self, container: Container) -> None:
        with translated("remove", subject=container.name or container.id or "?"):
            # Already stopped, or dying: remove(force) below ends it either way.
            with contextlib.suppress(docker.errors.APIError):
                container.stop(timeout=STOP_TIMEOUT_S)
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True)

    def _prune_network(self, name: str) -> None:
        if not name.startswith("agentcell-"):
            return
        with translated("remove network", subject=name):
            for network in self.client.networks.list(names=[name]):
                network.reload()
                if network.attrs.get("Labels", {}).get(LABEL_MANAGED) == "true" and not (
                    network.attrs.get("Containers")
                ):
                    # Another cell may have joined in the meantime; then it stays.
                    with contextlib.suppress(docker.errors.APIError):
                        network.remove()

    # -- reading -----------------------------------------------------------------------------

    def cells(self, *, tenant: str | None = None) -> list[Cell]:
        """Every agentcell cell on this engine, optionally of one tenant."""
        filters = [f"{LABEL_MANAGED}=true"]
        if tenant is not None:
            filters.append(f"{LABEL_TENANT}={tenant}")
        with translated("list cells"):
            containers = self.client.containers.list(all=True, filters={"label": filters})
        return sorted((self._cell(c) for c in containers), key=lambda cell: cell.key)

    def find(self, ref: str) -> Cell:
        """The cell named by ``tenant/agent``, an agent name unique on the host, or a
        container name.

        Raises:
            CellNotFound: nothing matches, or an agent name matches in several tenants.
        """
        return self._cell(self._find_container(ref))

    def container(self, ref: str) -> Container:
        """The engine's container behind a cell reference (see :meth:`find`)."""
        return self._find_container(ref)

    def _find_container(self, ref: str) -> Container:
        if "/" in ref:
            tenant, _, agent = ref.partition("/")
            container = self._get(container_name(tenant, agent))
            if container is not None and container.labels.get(LABEL_MANAGED) == "true":
                return container
            raise CellNotFound(f"no cell {ref}", fix="`agentcell ps` lists the cells")
        container = self._get(ref)
        if container is not None and container.labels.get(LABEL_MANAGED) == "true":
            return container
        with translated("list cells"):
            matches = self.client.containers.list(
                all=True, filters={"label": [f"{LABEL_MANAGED}=true", f"{LABEL_AGENT}={ref}"]}
            )
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise CellNotFound(f"no cell named {ref}", fix="`agentcell ps` lists the cells")
        tenants = sorted(c.labels.get(LABEL_TENANT, "?") for c in matches)
        raise CellNotFound(
            f"agent {ref} exists in several tenants: {', '.join(tenants)}",
            fix=f"name it as TENANT/{ref}",
        )

    def inspect(self, ref: str) -> dict[str, Any]:
        """The engine's raw view of the cell (``docker inspect``)."""
        container = self._find_container(ref)
        attrs: dict[str, Any] = container.attrs
        return attrs

    def logs(self, ref: str, *, follow: bool = False, tail: int | None = None) -> Iterator[bytes]:
        """The cell's stdout and stderr, as the engine recorded them."""
        container = self._find_container(ref)
        with translated("read logs", subject=container.name or ref):
            if follow:
                yield from container.logs(stream=True, follow=True, tail=tail or "all")
            else:
                yield container.logs(tail=tail or "all")

    def _get(self, name: str) -> Container | None:
        try:
            return self.client.containers.get(name)
        except docker.errors.NotFound:
            return None
        except docker.errors.APIError as exc:
            raise BackendError(f"look up {name}: {exc.explanation}") from exc

    def _cell(self, container: Container) -> Cell:
        attrs = container.attrs
        host = attrs.get("HostConfig") or {}
        state = attrs.get("State") or {}
        labels = container.labels
        health = (state.get("Health") or {}).get("Status")
        exceptions = tuple(filter(None, labels.get(LABEL_EXCEPTIONS, "").split(",")))
        return Cell(
            tenant=labels.get(LABEL_TENANT, "?"),
            agent=labels.get(LABEL_AGENT, container.name or "?"),
            container=container.name or "?",
            container_id=container.id or "?",
            state=str(state.get("Status", container.status)),
            health=health,
            runtime=str(host.get("Runtime") or "runc"),
            image=str((attrs.get("Config") or {}).get("Image", "?")),
            image_requested=labels.get(LABEL_IMAGE_REQUESTED, ""),
            image_trust=labels.get(LABEL_IMAGE_TRUST, ""),
            image_id=str(attrs.get("Image", "?")),
            cpus=cpu_limit(host),
            memory=int(host.get("Memory") or 0),
            memory_swap=int(host.get("MemorySwap") or 0),
            pids=int(host.get("PidsLimit") or 0),
            spec_hash=labels.get(LABEL_SPEC_HASH, ""),
            source=labels.get(LABEL_SOURCE, ""),
            exceptions=exceptions,
            network=str(host.get("NetworkMode", "")),
            pid=int(state.get("Pid") or 0),
        )
