"""Compare what the kernel enforces on a cell with what its spec asks for.

Every check ends in one of six states:

``verified``      the kernel (or gVisor's kernel, asked from the host) shows the spec's value,
                  or stricter
``configured``    only a record shows it (the engine's, or the OCI spec the runtime was handed);
                  the kernel does not expose the fact
``reported``      only the image's own binaries said so, inside the cell: untrusted, since a
                  hostile image prints what it likes (gVisor's in-sandbox view)
``mismatch``      the kernel, a record or even the image shows something weaker than the spec
``not-enforced``  this host cannot enforce or show it (with why: no AppArmor here, ...)
``unknown``       the fact could not be read (with why)

Only ``mismatch`` fails verification: a host that cannot do something is reported, not hidden,
but it is not the cell's fault. A reading from the image can make a check a mismatch (failing
closed), never verified or configured: under runsc every check the image read is judged again
by what the host side shows (:mod:`.gvisor`).

Each family of checks has its module: :mod:`.process` (uids and gids, capabilities,
no_new_privs, seccomp), :mod:`.mounts`, :mod:`.limits` (cgroups), :mod:`.network` (namespaces,
interfaces, routes), :mod:`.runtime` (the OCI runtime and the LSM label) and :mod:`.gvisor`
(judging what the image read under runsc). A :class:`Check` is made one way throughout
(:mod:`.check`).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

from agentcell.spec.model import AgentDocument
from agentcell.verify.compare.check import Check, CheckStatus, mismatch_ids
from agentcell.verify.compare.gvisor import judge_image_readings
from agentcell.verify.compare.limits import cgroup_checks
from agentcell.verify.compare.mounts import (
    DOCKER_MASKED_PATHS,
    DOCKER_READONLY_PATHS,
    mount_checks,
)
from agentcell.verify.compare.network import namespace_checks, network_checks
from agentcell.verify.compare.process import (
    capability_checks,
    identity_checks,
    no_new_privs_check,
    seccomp_checks,
)
from agentcell.verify.compare.runtime import lsm_check, runtime_check
from agentcell.verify.facts import CellTarget, HostPaths, Observation, observe

__all__ = [
    "DOCKER_MASKED_PATHS",
    "DOCKER_READONLY_PATHS",
    "Check",
    "CheckStatus",
    "VerifyReport",
    "compare",
    "mismatch_ids",
    "verify",
]


@dataclass(frozen=True, kw_only=True)
class VerifyReport:
    """Every check of one cell."""

    cell: str
    container: str
    runtime: str
    spec_source: str
    checks: tuple[Check, ...]
    elapsed_ms: float

    @property
    def mismatches(self) -> tuple[Check, ...]:
        """The checks that failed."""
        return tuple(check for check in self.checks if check.status == "mismatch")

    @property
    def ok(self) -> bool:
        """No check failed."""
        return not self.mismatches

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready mapping (``agentcell verify --json``)."""
        data = asdict(self)
        data["ok"] = self.ok
        return data


def verify(
    document: AgentDocument,
    target: CellTarget,
    *,
    spec_source: str,
    paths: HostPaths | None = None,
) -> VerifyReport:
    """Read the cell's state from the kernel and compare it with ``document``."""
    started = time.perf_counter()
    observation = observe(target, paths)
    checks = compare(document, observation)
    return VerifyReport(
        cell=target.name,
        container=target.container,
        runtime=target.engine.runtime,
        spec_source=spec_source,
        checks=checks,
        elapsed_ms=(time.perf_counter() - started) * 1000,
    )


def compare(document: AgentDocument, observation: Observation) -> tuple[Check, ...]:
    """Every check of ``observation`` against ``document``, in a stable order."""
    spec = document.spec
    checks: list[Check] = []
    checks += identity_checks(spec, observation)
    checks += capability_checks(spec, observation)
    checks.append(no_new_privs_check(spec, observation))
    checks += seccomp_checks(spec, observation)
    checks += mount_checks(spec, observation)
    checks += cgroup_checks(spec, observation.limits)
    checks += namespace_checks(spec, observation)
    checks += network_checks(spec, observation)
    checks.append(runtime_check(spec, observation))
    checks.append(lsm_check(observation))
    if observation.target.sandboxed:
        checks = judge_image_readings(spec, observation, checks)
    return tuple(checks)
