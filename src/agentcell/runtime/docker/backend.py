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
from docker.models.containers import Container

from agentcell.cell.labels import (
    LABEL_AGENT,
    LABEL_APPLIED,
    LABEL_EXCEPTIONS,
    LABEL_IMAGE_REQUESTED,
    LABEL_IMAGE_TRUST,
    LABEL_MANAGED,
    LABEL_SOURCE,
    LABEL_SPEC,
    LABEL_SPEC_HASH,
    LABEL_TENANT,
    LABEL_UID,
    agentcell_labels,
    trusted_labels,
)
from agentcell.cell.names import container_name
from agentcell.errors import (
    BackendError,
    CellConflict,
    CellNotFound,
    Error,
    HostError,
    ImageError,
    ImageNotFound,
    Location,
)
from agentcell.policy.admission import AdmittedSpec
from agentcell.runtime.cells import Cell, UpResult
from agentcell.runtime.cgroups import TenantCgroup, TenantLimits
from agentcell.runtime.docker.client import DEFAULT_API_VERSION, connect, translated
from agentcell.runtime.docker.effective import cpu_limit
from agentcell.runtime.docker.host import HostFacts
from agentcell.runtime.docker.networks import NetworkState, TenantNetworks
from agentcell.runtime.docker.registry import EngineImages, pull_if_missing
from agentcell.runtime.docker.translate import (
    BindMount,
    ContainerSettings,
    TenantAttachment,
    settings_for,
)
from agentcell.runtime.uids import allocation_lock, choose_uid, host_process_uids, uid_range

__all__ = ["DockerBackend"]

STOP_TIMEOUT_S = 10


class DockerBackend:
    """Cells on the Docker Engine reached through ``client``."""

    def __init__(self, client: docker.DockerClient) -> None:
        self.client = client
        self._facts: HostFacts | None = None
        self._image_labels: dict[str, Mapping[str, str]] = {}
        self.networks = TenantNetworks(client)

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
        uid: int | None = None,
        tenant_limits: TenantLimits | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> UpResult:
        """Make the cell match the admitted spec: create it, leave it, start it or replace it.

        The keyword arguments are passed to
        :func:`~agentcell.runtime.docker.translate.settings_for`; without ``uid`` a cell whose
        spec pins none is allocated one here (:meth:`uid_allocation`). A cell is unchanged only
        when its spec hash, its uid and the image it runs (e.g. a pinned digest) are the same.
        ``tenant_limits`` (the tenant's quota) are written into the tenant's cgroup parent
        first; without them the parent is left as it is.
        A container found by the cell's name that belongs to another tenant or agent is never
        touched, and neither is one agentcell did not make.

        A cell with ``network: tenant`` joins its tenant's network (made, with its host rules,
        when missing), with DNS and HTTP(S) proxy through the gateway address and no default
        route.

        Raises:
            HostError: the host cannot honour the spec (runtime absent, no network under runsc),
                or the tenant network's host rules could not be installed.
            CellConflict: the container name belongs to something agentcell did not create.
            ImageError: the image is not on this host.
            BackendError: the engine refused to create or start the cell.
        """
        if tenant_limits is not None:
            self.tenant_cgroup(admitted.doc.tenant).ensure(tenant_limits)
        if uid is None:
            # Also for a pinned uid: the allocation refuses one another tenant's cell holds.
            with self.uid_allocation([admitted]) as uids:
                return self._up(admitted, image, extra_mounts, extra_env, image_trust, uids, labels)
        key = admitted.doc.document.key
        return self._up(
            admitted,
            image,
            extra_mounts,
            extra_env,
            image_trust,
            {key: uid} if uid else {},
            labels,
        )

    def tenant_cgroup(self, tenant: str) -> TenantCgroup:
        """The cgroup parent of ``tenant``'s cells on this host."""
        return TenantCgroup(tenant=tenant, version=self.facts.cgroup_version)

    def _up(
        self,
        admitted: AdmittedSpec,
        image: str | None,
        extra_mounts: Sequence[BindMount],
        extra_env: Mapping[str, str] | None,
        image_trust: str | None,
        uids: Mapping[tuple[str, str], int],
        labels: Mapping[str, str] | None = None,
    ) -> UpResult:
        tenant, name = admitted.doc.document.key
        spec = admitted.doc.document.spec
        settings = settings_for(
            admitted,
            image=image,
            extra_mounts=extra_mounts,
            extra_env=extra_env,
            image_trust=image_trust,
            uid=uids.get((tenant, name)),
            extra_labels=labels,
        )
        self.check_host(settings)
        where = admitted.doc.where("metadata", "name")
        existing = self._owned(settings.name, tenant, name, where=where)
        network: NetworkState | None = None
        made_network = False
        if settings.internal_network is not None and not spec.host.network:
            network, made_network = self.networks.ensure(tenant)
            settings = settings_for(
                admitted,
                image=image,
                extra_mounts=extra_mounts,
                extra_env=extra_env,
                image_trust=image_trust,
                uid=uids.get((tenant, name)),
                extra_labels=labels,
                attachment=self._attachment(network, tenant, name),
            )
        try:
            return self._bring(settings, existing, tenant, name)
        except Error:
            # A network made for this cell alone goes with it; nothing half-made stays.
            if made_network:
                with contextlib.suppress(BackendError, HostError):
                    self.networks.remove(tenant)
            raise

    def _attachment(self, network: NetworkState, tenant: str, name: str) -> TenantAttachment:
        names = [cell.agent for cell in self.cells(tenant=tenant)]
        return self.networks.attachment(network, names=[*names, name])

    def _bring(
        self, settings: ContainerSettings, existing: Container | None, tenant: str, name: str
    ) -> UpResult:
        if existing is None:
            legacy = self._legacy(tenant, name)
            if legacy is not None:
                # A cell of this agent under the old naming scheme: replace it under the new name.
                self._require_image(settings.image)
                self._remove(legacy)
                return UpResult(cell=self._create(settings), action="replaced")
            return UpResult(cell=self._create(settings), action="created")
        labels = existing.labels
        same_image = (existing.attrs.get("Config") or {}).get("Image") == settings.image
        same_uid = labels.get(LABEL_UID) == settings.labels[LABEL_UID]
        if (
            same_image
            and same_uid
            and labels.get(LABEL_SPEC_HASH) == settings.labels[LABEL_SPEC_HASH]
        ):
            if existing.status == "running":
                self._close_routes(existing, settings)
                return UpResult(cell=self._cell(existing), action="unchanged")
            with translated("start", subject=settings.name):
                existing.start()
                existing.reload()
            self._close_routes(existing, settings)
            return UpResult(cell=self._cell(existing), action="started")
        self._require_image(settings.image)
        self._remove(existing)
        return UpResult(cell=self._create(settings), action="replaced")

    @contextlib.contextmanager
    def uid_allocation(self, specs: Sequence[AdmittedSpec]) -> Iterator[dict[tuple[str, str], int]]:
        """Host uids for the specs that pin none, held for the block.

        A cell keeps the uid it already has; every other one gets the lowest uid of the range
        that no cell (running or not) and no host process has. The host-wide lock is held
        until the block ends, so create the containers inside it.

        Raises:
            CellConflict: a spec pins a uid that a cell of another tenant runs as.
            HostError: the range is exhausted, or the lock cannot be taken.
        """
        pool = uid_range()
        with allocation_lock():
            cells, taken, held = self._uids_in_use()
            chosen: dict[tuple[str, str], int] = {}
            for spec in specs:
                key = spec.doc.document.key
                pinned = spec.doc.document.spec.security.user
                if pinned is not None:
                    self._refuse_shared_uid(spec, pinned, cells)
                    continue
                mine = held.get(key)
                if mine is not None and mine in pool and mine not in chosen.values():
                    chosen[key] = mine
                    continue
                chosen[key] = choose_uid(taken | set(chosen.values()), pool=pool)
            yield chosen

    @contextlib.contextmanager
    def spare_uid(self, uid: int | None = None) -> Iterator[int]:
        """A uid no cell and no host process has (or ``uid`` itself), held for the block: start
        the container that will run as it inside.

        Raises:
            HostError: the range is exhausted, or the lock cannot be taken.
        """
        with allocation_lock():
            if uid is not None:
                yield uid
                return
            _, taken, _ = self._uids_in_use()
            yield choose_uid(taken, pool=uid_range())

    def _uids_in_use(
        self,
    ) -> tuple[list[dict[str, str]], set[int], dict[tuple[str, str], int]]:
        """(every cell's agentcell labels, every uid a cell or host process has, the uid each
        (tenant, agent) holds). Read under the allocation lock."""
        cells = self._cell_summaries()
        taken = host_process_uids()
        held: dict[tuple[str, str], int] = {}
        for labels in cells:
            uid_text = labels.get(LABEL_UID, "")
            if uid_text.isdigit():
                taken.add(int(uid_text))
                key = (labels.get(LABEL_TENANT, ""), labels.get(LABEL_AGENT, ""))
                held.setdefault(key, int(uid_text))
        return cells, taken, held

    @staticmethod
    def _refuse_shared_uid(
        spec: AdmittedSpec, uid: int, cells: Sequence[Mapping[str, str]]
    ) -> None:
        tenant, name = spec.doc.document.key
        for labels in cells:
            other = labels.get(LABEL_TENANT, "")
            if labels.get(LABEL_UID) == str(uid) and other != tenant:
                raise CellConflict(
                    f"{tenant}/{name} pins uid {uid}, which cell "
                    f"{other}/{labels.get(LABEL_AGENT, '?')} of tenant {other} runs as: cells "
                    "sharing a uid reach each other's processes and files",
                    where=spec.doc.where("spec", "security", "user"),
                    fix="omit security.user so agentcell allocates a uid of the cell's own",
                )

    def _cell_summaries(self) -> list[dict[str, str]]:
        """The agentcell labels of every cell on the engine (from the cheap list call)."""
        with translated("list cells"):
            summaries = self.client.api.containers(
                all=True, filters={"label": f"{LABEL_MANAGED}=true"}
            )
        return [agentcell_labels(summary.get("Labels") or {}) for summary in summaries]

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
        with translated("create", subject=settings.name):
            container = self.client.containers.create(**settings.sdk_kwargs())
        try:
            with translated("start", subject=settings.name):
                container.start()
                container.reload()
            self._close_routes(container, settings)
        except (BackendError, HostError):
            self._remove(container)
            raise
        return self._cell(container)

    def _close_routes(self, container: Container, settings: ContainerSettings) -> None:
        """Delete the default route the engine gives a cell on an internal network."""
        if settings.internal_network is None:
            return
        pid = int((container.attrs.get("State") or {}).get("Pid") or 0)
        self.networks.drop_default_routes(pid)

    # -- tenant networks ---------------------------------------------------------------------

    def ensure_tenant_network(self, tenant: str, *, intra_tenant: bool) -> None:
        """Make the tenant's network (if missing) and install its host rules with the tenant
        document's intra-tenant setting (``apply``).

        Raises:
            CellConflict, HostError, BackendError: as :meth:`TenantNetworks.ensure`.
        """
        self.networks.ensure(tenant, intra_tenant=intra_tenant)

    def remove_tenant_network(self, tenant: str) -> bool:
        """Remove the tenant's network, host rules and files, with the tenant; False when it
        had no network.

        Raises:
            CellConflict: a container is still on the network.
            HostError: the host rules could not be removed.
        """
        return self.networks.remove(tenant)

    def _require_image(self, reference: str) -> None:
        try:
            with translated("look up image", subject=reference):
                self.client.images.get(reference)
        except ImageNotFound as exc:
            raise ImageNotFound(
                f"image {reference} is not on this host",
                fix="run `agentcell image bootstrap` or build/pull the image first",
            ) from exc

    # -- stopping ----------------------------------------------------------------------------

    def down(self, tenant: str, name: str, *, timeout_s: int = STOP_TIMEOUT_S) -> bool:
        """Stop and remove the cell; False when there was none.

        Raises:
            CellConflict: the container by that name is not agentcell's, or belongs to another
                tenant or agent.
        """
        container = self._owned(container_name(tenant, name), tenant, name)
        if container is None:
            container = self._legacy(tenant, name)
        if container is None:
            return False
        # The tenant's network stays: it goes with the tenant (remove_tenant_network).
        self._remove(container, timeout_s=timeout_s)
        if not self._has_cells(tenant):
            self.tenant_cgroup(tenant).remove()
        return True

    def _has_cells(self, tenant: str) -> bool:
        """Whether any cell of ``tenant`` is left: one listing of the engine's summaries (their
        labels and image), not an inspect per container as :meth:`cells` needs."""
        filters = [f"{LABEL_MANAGED}=true", f"{LABEL_TENANT}={tenant}"]
        with translated("list cells"):
            found = self.client.api.containers(all=True, filters={"label": filters})
        for summary in found:
            labels = summary.get("Labels") or {}
            if trusted_labels(labels, self._labels_of_image(str(summary.get("ImageID") or ""))):
                return True
        return False

    def _owned(
        self, container: str, tenant: str, name: str, *, where: Location | None = None
    ) -> Container | None:
        """The container called ``container`` if it is the cell (tenant, name); None if there
        is none.

        Raises:
            CellConflict: it exists and agentcell did not make it, or it is another cell's.
        """
        found = self._get(container)
        if found is None:
            return None
        labels = self.trusted(found)
        if labels is None:
            raise CellConflict(
                f"a container named {container} exists and agentcell did not create it",
                where=where,
                fix=f"rename or remove it (docker rm -f {container}), or rename the agent",
            )
        owner = (labels.get(LABEL_TENANT), labels.get(LABEL_AGENT))
        if owner != (tenant, name):
            raise CellConflict(
                f"container {container} is cell {owner[0]}/{owner[1]} of tenant {owner[0]}, "
                f"not {tenant}/{name}; agentcell will not touch it",
                where=where,
                fix="rename the agent; names must be unique per tenant",
            )
        return found

    def _legacy(self, tenant: str, name: str) -> Container | None:
        """The cell (tenant, name) under another name (the old ``agentcell-<t>-<n>`` scheme)."""
        with translated("list cells"):
            matches = self.client.containers.list(
                all=True,
                filters={
                    "label": [
                        f"{LABEL_MANAGED}=true",
                        f"{LABEL_TENANT}={tenant}",
                        f"{LABEL_AGENT}={name}",
                    ]
                },
            )
        for container in matches:
            if container.name != container_name(tenant, name) and self.trusted(container):
                return container
        return None

    def check_spec(self, admitted: AdmittedSpec) -> None:
        """Refuse a spec this host cannot honour, before anything is created.

        Raises:
            HostError: see :meth:`check_host`.
            SpecError: a seccomp profile file the spec names cannot be read.
        """
        self.check_host(settings_for(admitted))

    def image_id(self, reference: str) -> str | None:
        """The ID of the local image ``reference``, or None (image trust's ``LocalImages``).

        Raises:
            BackendError: the engine failed to answer.
        """
        return EngineImages(self.client).image_id(reference)

    def pull_by_digest(self, reference: str) -> None:
        """Make sure ``repo@sha256:...`` is on this host, pulling it by digest if not.

        Raises:
            TrustError, BackendError: the pull failed.
        """
        pull_if_missing(self.client, reference)

    def image_labels(self, reference: str) -> Mapping[str, str]:
        """The labels an image on this host carries.

        Raises:
            ImageError: the image is not on this host.
        """
        with translated("inspect image", subject=reference):
            return self.client.images.get(reference).labels

    def trusted(self, container: Container) -> dict[str, str] | None:
        """agentcell's labels on ``container`` if agentcell set them, else None (the image's
        labels are read once per backend)."""
        image_id = str(container.attrs.get("Image") or "")
        return trusted_labels(container.labels, self._labels_of_image(image_id))

    def _labels_of_image(self, image_id: str) -> Mapping[str, str]:
        if image_id not in self._image_labels:
            labels: Mapping[str, str] = {}
            try:
                with translated("inspect image", subject=image_id[:19]):
                    labels = self.client.images.get(image_id).labels
            except (CellNotFound, ImageError):
                pass  # the image is gone; the container keeps only the labels it was given
            self._image_labels[image_id] = labels
        return self._image_labels[image_id]

    def _remove(self, container: Container, *, timeout_s: int = STOP_TIMEOUT_S) -> None:
        name = container.name or container.id or "?"
        # Already stopped, or dying: remove(force) below ends it either way. Without a grace
        # period it alone does (SIGKILL, then the removal), as `docker rm -f` does.
        if timeout_s > 0:
            with contextlib.suppress(BackendError), translated("stop", subject=name):
                container.stop(timeout=timeout_s)
        with contextlib.suppress(CellNotFound), translated("remove", subject=name):
            container.remove(force=True)

    # -- reading -----------------------------------------------------------------------------

    def cells(self, *, tenant: str | None = None) -> list[Cell]:
        """Every agentcell cell on this engine, optionally of one tenant."""
        filters = [f"{LABEL_MANAGED}=true"]
        if tenant is not None:
            filters.append(f"{LABEL_TENANT}={tenant}")
        with translated("list cells"):
            containers = self.client.containers.list(all=True, filters={"label": filters})
        return sorted(
            (self._cell(c) for c in containers if self.trusted(c) is not None),
            key=lambda cell: cell.key,
        )

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
            try:
                container = self._owned(container_name(tenant, agent), tenant, agent)
            except CellConflict:
                container = None
            container = container or self._legacy(tenant, agent)
            if container is not None:
                return container
            raise CellNotFound(f"no cell {ref}", fix="`agentcell ps` lists the cells")
        container = self._get(ref)
        if container is not None and self.trusted(container) is not None:
            return container
        with translated("list cells"):
            matches = [
                found
                for found in self.client.containers.list(
                    all=True, filters={"label": [f"{LABEL_MANAGED}=true", f"{LABEL_AGENT}={ref}"]}
                )
                if self.trusted(found) is not None
            ]
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
        """The container called or with the id ``name``, or None."""
        try:
            with translated("look up", subject=name):
                container: Container = self.client.containers.get(name)
        except CellNotFound:
            return None
        return container

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
            spec=labels.get(LABEL_SPEC, ""),
            applied=labels.get(LABEL_APPLIED) == "true",
            source=labels.get(LABEL_SOURCE, ""),
            exceptions=exceptions,
            network=str(host.get("NetworkMode", "")),
            pid=int(state.get("Pid") or 0),
        )
