"""The launch path, end to end: spec files -> admission -> host checks -> trusted images ->
identities -> cells.

Each step runs for every document before the next step starts, so a refusal anywhere (bad
input, policy, a runtime this host lacks, an untrusted image) stops the whole batch with
nothing created. The CLI and any API route call :func:`up_files`; neither repeats its steps.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from agentcell.cell.labels import agentcell_labels
from agentcell.cell.paths import CELL_IDENTITY_DIR, CELL_SOCKET_DIR, CONTROL_PLANE_SERVER_NAME
from agentcell.cell.quota import TenantLimits

if TYPE_CHECKING:
    from agentcell.controlplane.settings import ClientSettings
    from agentcell.launch.apply import TenantDirectory
from agentcell.errors import AdmissionError
from agentcell.identity.enrolment import write_identity_dir
from agentcell.identity.errors import IdentityError
from agentcell.policy.admission import AdmittedSpec, admit
from agentcell.policy.presets import preset
from agentcell.runtime.cells import Cell, UpResult
from agentcell.runtime.docker.translate import BindMount
from agentcell.runtime.uids import cell_ids
from agentcell.spec.load import SpecBundle, load_paths
from agentcell.trust.admission import PinnedImage, pin_all
from agentcell.trust.config import TrustConfig, load_trust_config

__all__ = [
    "CellBackend",
    "CellIdentity",
    "IdentityIssuer",
    "Launched",
    "admit_files",
    "launch_admitted",
    "prepare_cell",
    "report_findings",
    "up_files",
]

Report = Callable[[str], None]


class CellBackend(Protocol):
    """What the launch path needs of a runtime backend;
    :class:`~agentcell.runtime.docker.backend.DockerBackend` is one."""

    def check_spec(self, admitted: AdmittedSpec) -> None:
        """Refuse (HostError) a spec this host cannot honour, before anything is made."""
        ...

    def image_id(self, reference: str) -> str | None:
        """The ID of a local image, or None (image trust pins local images to it)."""
        ...

    def image_labels(self, reference: str) -> Mapping[str, str]:
        """The labels the image carries."""
        ...

    def pull_by_digest(self, reference: str) -> None:
        """Make sure ``repo@sha256:...`` is on this host."""
        ...

    def uid_allocation(
        self, specs: Sequence[AdmittedSpec]
    ) -> AbstractContextManager[dict[tuple[str, str], int]]:
        """Host uids for the specs that pin none, reserved until the block ends."""
        ...

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
        """Bring one cell to its admitted spec."""
        ...

    def cells(self, *, tenant: str | None = None) -> list[Cell]:
        """The cells on this host, optionally of one tenant."""
        ...

    def down(self, tenant: str, name: str) -> bool:
        """Stop and remove one cell; False when there was none."""
        ...

    def ensure_tenant_network(self, tenant: str, *, intra_tenant: bool) -> None:
        """Make the tenant's network if missing and install its host rules."""
        ...

    def remove_tenant_network(self, tenant: str) -> bool:
        """Remove the tenant's network and host rules (no cell may be on it)."""
        ...


class IssuedToken(Protocol):
    """A one-time join token as the control plane answers it."""

    @property
    def token(self) -> str: ...
    @property
    def spiffe_id(self) -> str: ...
    @property
    def expires_at(self) -> float: ...


class IdentityIssuer(Protocol):
    """What the launch path needs of the control plane (its admin client is one)."""

    @property
    def settings(self) -> ClientSettings:
        """Where the control plane keeps its CA bundle, sockets and cells' directories."""
        ...

    def join_token(self, tenant: str, agent: str) -> IssuedToken:
        """A one-time token for ``tenant/agent``."""
        ...


@dataclass(frozen=True, kw_only=True)
class Launched:
    """One cell brought to its spec, and the image it runs."""

    result: UpResult
    image: PinnedImage


def admit_files(files: Sequence[Path], policy_name: str, *, warn: Report) -> list[AdmittedSpec]:
    """Load every document and admit each; refuse all of them if any one is refused.

    Raises:
        SpecError: a file is unreadable or invalid.
        AdmissionError: policy refused one or more documents (every reason is listed).
    """
    documents = load_paths(files)
    policy = preset(policy_name)
    admitted, refusals = [], []
    for doc in documents:
        try:
            admitted.append(admit(doc, policy))
        except AdmissionError as exc:
            refusals.append(exc)
    if refusals:
        raise AdmissionError(
            "\n".join(exc.what for exc in refusals) + "\nnothing was launched",
            fix="change the spec as each finding says, or add a reasoned exception",
        )
    report_findings(admitted, warn)
    return admitted


def report_findings(admitted: Sequence[AdmittedSpec], warn: Report) -> None:
    """Warn about every excepted finding and every warning of admitted specs."""
    for spec in admitted:
        for finding in spec.findings:
            if finding.excepted is not None:
                warn(f"{finding.where}: EXCEPTED {finding.rule}: {finding.message}")
            elif finding.severity != "info":
                warn(finding.describe())


def up_files(
    files: Sequence[Path],
    *,
    policy_name: str,
    backend: CellBackend,
    warn: Report,
    trust: TrustConfig | None = None,
    issuer: IdentityIssuer | None = None,
    directory: TenantDirectory | None = None,
) -> list[Launched]:
    """Bring every cell described in ``files`` to its spec.

    With ``directory`` (the control plane's tenants), a declared tenant's cells are held to
    its isolation level, quota (what runs plus the batch) and trust, and its quota is written
    into its cgroup parent, as ``apply`` does; an undeclared tenant is warned about.

    Raises:
        SpecError, AdmissionError: bad input or a policy refusal; nothing was launched.
        HostError: this host cannot honour some spec (runtime absent; under runsc, a network
            or host /proc and /sys mounts).
        TrustError: an image is unsigned, untrusted, tag-only where digests are required, or
            its registry is unreachable; nothing was launched.
        ControlPlaneError, IdentityError: a cell needs an identity and the control plane is
            unreachable or refused a join token; nothing was launched.
        BackendError: the engine failed while launching (cells launched before it remain).
    """
    trust = trust if trust is not None else load_trust_config()
    if directory is None:
        admitted = admit_files(files, policy_name, warn=warn)
        return launch_admitted(admitted, backend=backend, warn=warn, trust=trust, issuer=issuer)
    from agentcell.launch.apply import apply_plan, make_plan

    bundle = SpecBundle(tenants=(), agents=tuple(load_paths(files)))
    plan = make_plan(
        bundle, policy_name=policy_name, backend=backend, directory=directory, trust=trust,
        warn=warn,
    )  # fmt: skip
    report_findings(plan.agents, warn)
    done = apply_plan(
        plan, backend=backend, directory=None, warn=warn, issuer=issuer, mark_applied=False
    )
    return list(done.launched)


def launch_admitted(
    admitted: Sequence[AdmittedSpec],
    *,
    backend: CellBackend,
    warn: Report,
    trust: TrustConfig,
    issuer: IdentityIssuer | None = None,
    tenant_limits: Mapping[str, TenantLimits] | None = None,
    labels: Mapping[str, str] | None = None,
) -> list[Launched]:
    """Bring admitted cells to their specs: host checks, trusted images, uids, identities,
    cells, each step for the whole batch before the next.

    ``tenant_limits`` (tenant -> its quota as kernel limits) are written into each tenant's
    cgroup parent; ``labels`` are agentcell labels to set on every cell (``apply`` marks its
    cells).

    Raises:
        HostError, TrustError, ControlPlaneError, IdentityError, BackendError: as
            :func:`up_files`.
    """
    for spec in admitted:
        backend.check_spec(spec)
    pinned = pin_all(admitted, trust, local=backend)
    for image in pinned:
        for warning in image.warnings:
            warn(f"image: {warning}")
        if image.source == "registry":
            backend.pull_by_digest(image.reference_by_digest)
    _refuse_labelled_images(admitted, pinned, backend)
    limits = tenant_limits or {}
    # The uids stay reserved (a host lock) until every cell of the batch exists.
    with backend.uid_allocation(admitted) as uids:
        identities = _identities(admitted, uids, issuer)
        return [
            Launched(
                result=backend.up(
                    spec,
                    image=image.reference_by_digest,
                    image_trust=image.trust,
                    extra_mounts=identity.mounts if identity else (),
                    extra_env=identity.env if identity else None,
                    uid=uids.get(spec.doc.document.key),
                    tenant_limits=limits.get(spec.doc.tenant),
                    labels=labels,
                ),
                image=image,
            )
            for spec, image, identity in zip(admitted, pinned, identities, strict=True)
        ]


def _refuse_labelled_images(
    admitted: Sequence[AdmittedSpec], pinned: Sequence[PinnedImage], backend: CellBackend
) -> None:
    """Refuse the batch if an image carries agentcell's own labels (rule AC-039).

    Raises:
        AdmissionError: some image has ``org.agentcell.*`` labels; nothing was launched.
    """
    refusals = []
    for spec, image in zip(admitted, pinned, strict=True):
        keys = sorted(agentcell_labels(backend.image_labels(image.reference_by_digest)))
        if keys:
            where = spec.doc.where("spec", "image")
            refusals.append(
                f"{where}: error AC-039: image {spec.doc.document.spec.image} carries "
                f"agentcell's own labels ({', '.join(keys)}); only agentcell sets them"
            )
    if refusals:
        raise AdmissionError(
            "\n".join(refusals) + "\nnothing was launched",
            fix="rebuild the image without org.agentcell.* labels",
        )


@dataclass(frozen=True, kw_only=True)
class CellIdentity:
    """What ``up`` adds to an identity cell: read-only mounts and environment variables."""

    mounts: tuple[BindMount, ...]
    env: dict[str, str]
    spiffe_id: str
    token_expires_at: float
    identity_dir: Path


def prepare_cell(
    admitted: AdmittedSpec, client: IdentityIssuer, *, uid: tuple[int, int]
) -> CellIdentity:
    """Ask the control plane for a join token and lay out the cell's identity directory,
    owned by the cell's (uid, gid) alone.

    Raises:
        ControlPlaneUnavailable: the control plane does not answer.
        ControlPlaneError: it refused to issue a token.
        IdentityError: it does not serve the agents' socket, or the files cannot be written.
    """
    paths = client.settings.paths
    tenant, name = admitted.doc.tenant, admitted.doc.name
    if not paths.agent_socket.exists():
        raise IdentityError(
            f"the control plane's agent socket {paths.agent_socket} does not exist",
            fix="start `agentcell server` on this host (with the same AGENTCELL_HOME), "
            "without --no-agent-socket",
        )
    token = client.join_token(tenant, name)
    identity_dir = paths.cell_identity_dir(tenant, name)
    write_identity_dir(
        identity_dir,
        token=token.token,
        ca_pem=paths.ca_bundle.read_bytes(),
        uid=uid[0],
        gid=uid[1],
    )
    return CellIdentity(
        mounts=(
            BindMount(source=str(identity_dir), target=CELL_IDENTITY_DIR, read_only=True),
            BindMount(source=str(paths.agent_socket_dir), target=CELL_SOCKET_DIR, read_only=True),
        ),
        env={
            "AGENTCELL_CONTROL_PLANE": f"unix://{CELL_SOCKET_DIR}/{paths.agent_socket.name}",
            "AGENTCELL_IDENTITY_DIR": CELL_IDENTITY_DIR,
            "AGENTCELL_SERVER_NAME": CONTROL_PLANE_SERVER_NAME,
        },
        spiffe_id=token.spiffe_id,
        token_expires_at=token.expires_at,
        identity_dir=identity_dir,
    )


def _identities(
    admitted: Sequence[AdmittedSpec],
    uids: Mapping[tuple[str, str], int],
    issuer: IdentityIssuer | None,
) -> list[CellIdentity | None]:
    """A join token and identity mounts for each spec with ``identity: true``; all of them
    before any cell is launched, so a control plane that is down launches nothing."""
    if not any(spec.doc.document.spec.identity for spec in admitted):
        return [None] * len(admitted)
    if issuer is None:
        from agentcell.controlplane.client import AdminClient
        from agentcell.controlplane.settings import ClientSettings

        issuer = AdminClient(ClientSettings.from_environ())
    client = issuer
    return [
        prepare_cell(
            spec,
            client,
            uid=cell_ids(spec.doc.document.spec.security, uids.get(spec.doc.document.key)),
        )
        if spec.doc.document.spec.identity
        else None
        for spec in admitted
    ]
