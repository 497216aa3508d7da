"""Proof of isolation: what the kernel enforces on a running cell, and what a cell cannot do.

``verify`` reads procfs, cgroupfs and the cell's network namespace on the host (and gVisor's
own view for runsc) and compares every fact with the spec; ``probe`` runs escape and abuse
attempts inside the cell. The engine-facing half lives in
:mod:`agentcell.runtime.docker.proof`.
"""

from agentcell.verify.compare import Check, CheckStatus, VerifyReport, compare, verify
from agentcell.verify.facts import CellTarget, EngineRecord, HostPaths, SandboxView, observe
from agentcell.verify.probe import ProbeHost, ProbeReport, ProbeResult, ProbeStatus, run_probes

__all__ = [
    "CellTarget",
    "Check",
    "CheckStatus",
    "EngineRecord",
    "HostPaths",
    "ProbeHost",
    "ProbeReport",
    "ProbeResult",
    "ProbeStatus",
    "SandboxView",
    "VerifyReport",
    "compare",
    "observe",
    "run_probes",
    "verify",
]
