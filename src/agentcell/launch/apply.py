"""``agentcell apply``: bring the host to a directory of Tenant and Agent documents.

The plan comes first, one line per change (create / update / replace / delete, with the fields
that changed), computed from what the control plane stores and what runs on the host; then
every check runs for the whole plan (each agent's tenant declared or present, admission under
its tenant's isolation level, quota for what runs plus the whole batch) before anything is
changed, so a refused directory changes nothing. Only then are tenants stored, cells launched
through the one launch path, and, with ``--prune``, cells and tenants that are no longer
declared removed: only cells ``apply`` made (``org.agentcell.applied``), never a foreign
container.
"""

from __future__ import annotations

import getpass
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from agentcell.cell.labels import LABEL_APPLIED
from agentcell.cell.network import TENANT_NETWORK
from agentcell.cell.quota import TenantLimits
from agentcell.errors import AdmissionError, SpecError
from agentcell.launch import (
    CellBackend,
    IdentityIssuer,
    Launched,
    Report,
    launch_admitted,
)
from agentcell.policy.admission import AdmittedSpec, Finding, admit
from agentcell.policy.presets import TenantPolicy, preset
from agentcell.policy.quota import QuotaUse, overruns
from agentcell.policy.tenants import tenant_findings
from agentcell.runtime.cells import Cell
from agentcell.runtime.docker.translate import spec_hash, spec_json
from agentcell.spec.load import SpecBundle, SpecDocument, TenantSpecDocument
from agentcell.spec.tenant import TenantDocument
from agentcell.trust.config import TrustConfig, with_tenant

__all__ = [
    "DEFAULT_TENANT",
    "ApplyResult",
    "Plan",
    "PlanItem",
    "StoredTenant",
    "TenantDirectory",
    "apply_plan",
    "make_plan",
    "tenant_limits",
]

DEFAULT_TENANT = "default"
"""The tenant of agents that name none: needs no Tenant document and no control plane."""
Action = Literal["create", "update", "replace", "delete", "unchanged"]


class StoredTenant(Protocol):
    """A tenant as the control plane stores it."""

    @property
    def name(self) -> str: ...
    @property
    def version(self) -> int: ...
    @property
    def document(self) -> TenantDocument: ...


class TenantDirectory(Protocol):
    """Where tenants live (the control plane's admin client is one)."""

    def tenants(self) -> Sequence[StoredTenant]:
        """Every stored tenant."""
        ...

    def put_tenant(self, document: Mapping[str, Any], *, changed_by: str) -> StoredTenant:
        """Store a tenant's document (a new version when it changed)."""
        ...

    def delete_tenant(self, name: str) -> bool:
        """Remove a tenant; False when there was none."""
        ...


@dataclass(frozen=True, kw_only=True)
class PlanItem:
    """One change the plan makes, or one object it leaves alone."""

    action: Action
    kind: Literal["tenant", "agent"]
    name: str
    changed: tuple[str, ...] = ()
    """The fields that differ (for update and replace)."""

    def line(self) -> str:
        """``replace agent acme/web: spec.resources.memory``."""
        text = f"{self.action} {self.kind} {self.name}"
        return text + (f": {', '.join(self.changed)}" if self.changed else "")


@dataclass(frozen=True, kw_only=True)
class Plan:
    """What ``apply`` will do, and everything it needs to do it."""

    items: tuple[PlanItem, ...]
    tenants: tuple[TenantDocument, ...]
    """Every tenant the directory declares, in the form the control plane stores."""
    tenant_put: tuple[TenantDocument, ...]
    agents: tuple[AdmittedSpec, ...]
    """Every declared agent, admitted (unchanged ones too: ``up`` leaves them alone)."""
    cells_delete: tuple[tuple[str, str], ...]
    tenants_delete: tuple[str, ...]
    limits: Mapping[str, TenantLimits] = field(default_factory=dict)
    trust: TrustConfig = field(default_factory=TrustConfig)
    intra_tenant: Mapping[str, bool] = field(default_factory=dict)
    """Each known tenant's intra-tenant setting, for the host rules of its network."""
    tenant_findings: tuple[Finding, ...] = ()
    """Policy findings about the declared Tenant documents (e.g. AC-043, egress open to all)."""

    @property
    def changes(self) -> tuple[PlanItem, ...]:
        """The items that change something."""
        return tuple(item for item in self.items if item.action != "unchanged")


@dataclass(frozen=True, kw_only=True)
class ApplyResult:
    """What ``apply`` did."""

    plan: Plan
    launched: tuple[Launched, ...]


def tenant_limits(document: TenantDocument) -> TenantLimits:
    """A tenant's quota as the kernel limits of its cgroup parent (cells is not one)."""
    quota = document.spec.quota
    return TenantLimits(cpus=quota.cpus, memory=quota.memory, pids=quota.pids)


def make_plan(
    bundle: SpecBundle,
    *,
    policy_name: str,
    backend: CellBackend,
    directory: TenantDirectory | None,
    trust: TrustConfig,
    prune: bool = False,
    warn: Report | None = None,
) -> Plan:
    """Compare the documents with the control plane and the host, and check all of it.

    ``apply`` (no ``warn``) refuses agents of undeclared tenants and needs the control plane
    for any tenant; ``up`` (with ``warn``) holds declared tenants to their quota and isolation
    level, and only warns about undeclared ones, which have neither.

    Raises:
        SpecError: a document is unusable (its tenant is neither declared nor stored, a key
            file is unreadable, a quota is below what the tenant already runs).
        AdmissionError: policy or quota refuses an agent (every reason is listed).
        ControlPlaneUnavailable: the documents need the control plane and it does not answer.
    """
    declared = {doc.name: _stored_form(doc) for doc in bundle.tenants}
    needs_directory = bool(declared) or any(doc.tenant != DEFAULT_TENANT for doc in bundle.agents)
    if needs_directory and directory is None and warn is None:
        raise SpecError(
            "these documents declare tenants or put agents in them, which the control plane "
            "keeps; none is configured",
            fix="start `agentcell server` (or set AGENTCELL_CONTROLPLANE_URL), or put the "
            "agents in the default tenant",
        )
    stored = {
        record.name: record.document
        for record in (directory.tenants() if directory is not None and needs_directory else ())
    }
    items: list[PlanItem] = []
    put: list[TenantDocument] = []
    for name, document in declared.items():
        before = stored.get(name)
        if before is None:
            items.append(PlanItem(action="create", kind="tenant", name=name))
            put.append(document)
            continue
        changed = _differences(_dump(before), _dump(document))
        if changed:
            items.append(PlanItem(action="update", kind="tenant", name=name, changed=changed))
            put.append(document)
        else:
            items.append(PlanItem(action="unchanged", kind="tenant", name=name))
    effective = {**stored, **declared}
    if warn is None:
        _refuse_unknown_tenants(bundle.agents, effective)
    else:
        for tenant in sorted({doc.tenant for doc in bundle.agents} - set(effective)):
            if tenant != DEFAULT_TENANT:
                warn(
                    f"tenant {tenant} is not declared in a control plane: no quota or isolation "
                    "level applies to its cells (declare it with `agentcell apply`)"
                )

    admitted = _admit(bundle.agents, policy_name, effective)
    cells = {(cell.tenant, cell.agent): cell for cell in backend.cells()}
    wanted = {spec.doc.document.key for spec in admitted}
    for spec in admitted:
        key = spec.doc.document.key
        label = f"{key[0]}/{key[1]}"
        current = cells.get(key)
        if current is None:
            items.append(PlanItem(action="create", kind="agent", name=label))
        elif current.spec_hash != spec_hash(spec.doc.document):
            changed = _differences(_loads(current.spec), json.loads(spec_json(spec.doc.document)))
            items.append(PlanItem(action="replace", kind="agent", name=label, changed=changed))
        else:
            items.append(PlanItem(action="unchanged", kind="agent", name=label))

    cells_delete: list[tuple[str, str]] = []
    tenants_delete: list[str] = []
    if prune:
        for key, cell in sorted(cells.items()):
            if cell.applied and key not in wanted:
                cells_delete.append(key)
                items.append(PlanItem(action="delete", kind="agent", name=f"{key[0]}/{key[1]}"))
        for name in sorted(set(stored) - set(declared)):
            left = sorted(
                f"{cell.tenant}/{cell.agent}"
                for key, cell in cells.items()
                if cell.tenant == name and key not in cells_delete
            )
            if left:
                raise SpecError(
                    f"tenant {name} is no longer declared, but cells apply did not make still "
                    f"run in it: {', '.join(left)}",
                    fix=f"remove them (agentcell down ...), or keep declaring tenant {name}",
                )
            tenants_delete.append(name)
            items.append(PlanItem(action="delete", kind="tenant", name=name))

    files = {doc.name: doc for doc in bundle.tenants}
    _check_quotas(admitted, effective, cells.values(), set(cells_delete))
    for name, document in effective.items():
        base = Path(files[name].file).parent if name in files else None
        trust = with_tenant(trust, document, base_dir=base)
    findings = tuple(
        finding
        for doc in bundle.tenants
        for finding in tenant_findings(doc.document, locate=doc.where)
    )
    return Plan(
        tenant_findings=findings,
        items=tuple(items),
        tenants=tuple(declared.values()),
        tenant_put=tuple(put),
        agents=tuple(admitted),
        cells_delete=tuple(cells_delete),
        tenants_delete=tuple(tenants_delete),
        limits={name: tenant_limits(document) for name, document in effective.items()},
        trust=trust,
        intra_tenant={
            name: document.spec.network.intra_tenant for name, document in effective.items()
        },
    )


def apply_plan(
    plan: Plan,
    *,
    backend: CellBackend,
    directory: TenantDirectory | None,
    warn: Report,
    issuer: IdentityIssuer | None = None,
    mark_applied: bool = True,
) -> ApplyResult:
    """Carry out a checked plan: store tenants, launch cells (marked as apply's unless
    ``mark_applied`` is false, as for ``up``), then prune.

    Raises:
        HostError, TrustError, ControlPlaneError, IdentityError, BackendError: as ``up``.
    """
    changed_by = f"{getpass.getuser()} (agentcell apply)"
    if directory is not None:
        for document in plan.tenant_put:
            directory.put_tenant(_dump(document), changed_by=changed_by)
    # A known tenant's network gets the host rules its document asks for before any cell
    # joins it; the cells of an undeclared tenant keep the last installed setting.
    networked = sorted(
        {
            spec.doc.tenant
            for spec in plan.agents
            if spec.doc.document.spec.network == TENANT_NETWORK
            and not spec.doc.document.spec.host.network
        }
    )
    for tenant in networked:
        if tenant in plan.intra_tenant:
            backend.ensure_tenant_network(tenant, intra_tenant=plan.intra_tenant[tenant])
    launched = launch_admitted(
        plan.agents,
        backend=backend,
        warn=warn,
        trust=plan.trust,
        issuer=issuer,
        tenant_limits=plan.limits,
        labels={LABEL_APPLIED: "true"} if mark_applied else None,
    )
    for tenant, name in plan.cells_delete:
        backend.down(tenant, name)
    if directory is not None:
        for name in plan.tenants_delete:
            backend.remove_tenant_network(name)
            directory.delete_tenant(name)
    return ApplyResult(plan=plan, launched=tuple(launched))


# -- checks -----------------------------------------------------------------------------------


def _refuse_unknown_tenants(
    agents: Iterable[SpecDocument], tenants: Mapping[str, TenantDocument]
) -> None:
    problems = [
        SpecError(
            f"agent {doc.tenant}/{doc.name} names tenant {doc.tenant}, which is neither "
            "declared in these files nor stored in the control plane",
            where=doc.where("metadata", "tenant"),
            fix=f"add a Tenant document named {doc.tenant}, or fix metadata.tenant",
        )
        for doc in agents
        if doc.tenant != DEFAULT_TENANT and doc.tenant not in tenants
    ]
    if len(problems) == 1:
        raise problems[0]
    if problems:
        raise SpecError(f"{len(problems)} problems in the spec:", problems=tuple(problems))


def _admit(
    agents: Iterable[SpecDocument], policy_name: str, tenants: Mapping[str, TenantDocument]
) -> list[AdmittedSpec]:
    admitted, refusals = [], []
    for doc in agents:
        tenant = tenants.get(doc.tenant)
        isolation = tenant.spec.isolation if tenant is not None else "standard"
        policy = preset(policy_name, tenant=TenantPolicy.for_isolation(isolation))
        try:
            admitted.append(admit(doc, policy))
        except AdmissionError as exc:
            refusals.append(exc)
    if refusals:
        raise AdmissionError(
            "\n".join(exc.what for exc in refusals) + "\nnothing was applied",
            fix="change the spec as each finding says, or add a reasoned exception",
        )
    return admitted


def _check_quotas(
    admitted: Sequence[AdmittedSpec],
    tenants: Mapping[str, TenantDocument],
    cells: Iterable[Cell],
    deleted: set[tuple[str, str]],
) -> None:
    batch_keys = {spec.doc.document.key for spec in admitted}
    running = [
        cell
        for cell in cells
        if (cell.tenant, cell.agent) not in batch_keys and (cell.tenant, cell.agent) not in deleted
    ]
    problems: list[str] = []
    for name, document in tenants.items():
        in_use = QuotaUse()
        for cell in running:
            if cell.tenant == name:
                in_use += QuotaUse(cpus=cell.cpus, memory=cell.memory, pids=cell.pids, cells=1)
        batch = [spec for spec in admitted if spec.doc.tenant == name]
        problems += overruns(name, document.spec.quota, in_use, batch)
    if problems:
        raise AdmissionError(
            "\n".join(problems) + "\nnothing was applied",
            fix="lower the cells' resources, remove cells, or raise the tenant's quota",
        )


# -- helpers ----------------------------------------------------------------------------------


def _stored_form(doc: TenantSpecDocument) -> TenantDocument:
    """The tenant as the control plane keeps it: key files read into ``pem``.

    Raises:
        SpecError: a key file cannot be read (located at the key).
    """
    keys = []
    for index, key in enumerate(doc.document.spec.trust.keys):
        if key.path is None:
            keys.append(key)
            continue
        path = Path(doc.file).parent / key.path
        try:
            pem = path.read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as exc:
            raise SpecError(
                f"cannot read tenant {doc.name}'s key file {path}: {exc}",
                where=doc.where("spec", "trust", "keys", index, "path"),
                fix="point the key's path at a cosign.pub file, relative to this file",
            ) from exc
        keys.append(key.model_copy(update={"path": None, "pem": pem}))
    trust = doc.document.spec.trust.model_copy(update={"keys": tuple(keys)})
    spec = doc.document.spec.model_copy(update={"trust": trust})
    return doc.document.model_copy(update={"spec": spec})


def _dump(document: TenantDocument) -> dict[str, Any]:
    dumped: dict[str, Any] = document.model_dump(mode="json", by_alias=True)
    return dumped


def _loads(text: str) -> dict[str, Any]:
    try:
        loaded = json.loads(text)
    except ValueError:
        return {}
    return loaded if isinstance(loaded, dict) else {}


def _differences(before: Any, after: Any, path: str = "", limit: int = 6) -> tuple[str, ...]:
    """The dotted paths where two JSON values differ, shallowest first, at most ``limit``."""
    found: list[str] = []

    def walk(a: Any, b: Any, where: str) -> None:
        if len(found) >= limit or a == b:
            return
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b)):
                walk(a.get(key), b.get(key), f"{where}.{key}" if where else str(key))
            return
        found.append(where or "(document)")

    walk(before, after, path)
    return tuple(found)
