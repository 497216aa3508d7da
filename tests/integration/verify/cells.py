"""Helpers of the proof tests: the examples as each runtime runs them, and where they are."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

import pytest

from agentcell.errors import AdmissionError
from agentcell.policy import AdmittedSpec, admit, preset
from agentcell.policy.rules import GVISOR_MIN_PIDS
from agentcell.runtime.docker.proof import DockerProof, ProofSubject
from agentcell.spec.load import SpecDocument
from agentcell.spec.model import AgentDocument, HostAccess

RUNTIMES = ("runc", "crun", "runsc")
EXAMPLE_NAMES = ("monitor-agent", "sandbox")


def unavailable(reason: str) -> None:
    """Skip, or fail when the run demands a real engine (AGENTCELL_REQUIRE_DOCKER=1)."""
    if os.environ.get("AGENTCELL_REQUIRE_DOCKER") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


def for_runtime(doc: SpecDocument, runtime: str, tenant: str) -> SpecDocument:
    """The example as this test runs it: its own tenant, the runtime under test.

    Under gVisor two changes are needed, both from what runsc can do on this kind of host:

    * the monitor agent reads gVisor's own /proc, because a bind of the host's /proc or /sys
      is not readable inside the sandbox (the gofer answers EINVAL), so the agent would only
      ever report errors;
    * pids is at least AC-037's minimum, because with the ptrace platform the host's pids
      limit also counts the sentry's ~40 threads and a stub per process, and at 128 a few
      execs (a healthcheck, verify's snapshot, the probe) exhaust it and end the sandbox.
    """
    document: AgentDocument = doc.document
    spec = document.spec
    security = spec.security.model_copy(update={"runtime": runtime})
    update: dict[str, object] = {"security": security}
    if runtime == "runsc":
        pids = max(spec.resources.pids, GVISOR_MIN_PIDS)
        resources = spec.resources.model_copy(update={"pids": pids})
        update["resources"] = resources
        if spec.host.mounts:
            update["host"] = HostAccess()
            update["env"] = {**spec.env, "MONITOR_HOST_PROC": "/proc"}
            update["exceptions"] = ()
    metadata = document.metadata.model_copy(update={"tenant": tenant})
    changed = document.model_copy(
        update={"metadata": metadata, "spec": spec.model_copy(update=update)}
    )
    return dataclasses.replace(doc, document=changed)


def admitted(doc: SpecDocument) -> AdmittedSpec:
    """Admitted by the restricted preset, or by monitoring-agent for what needs host mounts."""
    try:
        return admit(doc, preset("restricted"))
    except AdmissionError:
        return admit(doc, preset("monitoring-agent"))


@dataclass(frozen=True)
class Cells:
    """The running example cells of this module, by (runtime, example)."""

    tenants: dict[str, str]
    documents: dict[tuple[str, str], SpecDocument]

    def ref(self, runtime: str, example: str) -> str:
        return f"{self.tenants[runtime]}/{example}"


def require(cells: Cells, runtime: str) -> None:
    if runtime not in cells.tenants:
        unavailable(f"runtime {runtime} is not registered with this engine")


def subject(proof: DockerProof, cells: Cells, runtime: str, example: str) -> ProofSubject:
    require(cells, runtime)
    (found,) = proof.subjects([cells.ref(runtime, example)])
    return found
