"""Resources and liveness: memory, swap, cpu and pids limits, gVisor's share of pids,
restarts and health."""

from __future__ import annotations

from agentcell.policy.rules.base import Rule, Violation
from agentcell.policy.view import CellView
from agentcell.spec.units import format_bytes

__all__ = [
    "GVISOR_MIN_CELL_PROCESSES",
    "GVISOR_MIN_PIDS",
    "GVISOR_PIDS_PER_PROCESS",
    "GVISOR_PIDS_TOO_LOW",
    "GVISOR_SANDBOX_PIDS",
    "NO_CPU_LIMIT",
    "NO_HEALTHCHECK",
    "NO_MEMORY_LIMIT",
    "NO_PIDS_LIMIT",
    "RULES",
    "SWAP_BEYOND_MEMORY",
    "UNBOUNDED_RESTART",
]


def _memory(view: CellView) -> list[Violation]:
    if view.memory is not None:
        return []
    return [Violation(message="no memory limit", fact="memory")]


NO_MEMORY_LIMIT = Rule(
    id="AC-011",
    severity="error",
    title="No memory limit",
    rationale="A cell without a memory limit can push the host into the OOM killer, which "
    "may pick another tenant's cell or a host service.",
    remediation="Set resources.memory (--memory).",
    cis=("5.11",),
    security_severity=6.0,
    check=_memory,
)


def _swap(view: CellView) -> list[Violation]:
    if view.memory is None:
        return []  # unlimited memory is AC-011's business
    if view.memory_swap is None:
        return [
            Violation(message="may use unlimited swap on top of its memory", fact="memory_swap")
        ]
    if view.memory_swap > view.memory:
        extra = format_bytes(view.memory_swap - view.memory)
        return [
            Violation(message=f"may use {extra} of swap on top of its memory", fact="memory_swap")
        ]
    return []


SWAP_BEYOND_MEMORY = Rule(
    id="AC-012",
    severity="warning",
    title="Swap beyond the memory limit",
    rationale="Swap stretches a memory limit into slow disk I/O that hurts every tenant; "
    "memory plus swap equal to memory means no swap.",
    remediation="Set resources.memory_swap equal to resources.memory (--memory-swap equal "
    "to --memory).",
    security_severity=3.0,
    check=_swap,
)


def _cpu(view: CellView) -> list[Violation]:
    if view.cpu_nanos is not None:
        return []
    return [Violation(message="no CPU limit (CPU shares only set a priority)", fact="cpu_nanos")]


NO_CPU_LIMIT = Rule(
    id="AC-013",
    severity="error",
    title="No CPU limit",
    rationale="Without a CPU quota one cell can take every core; CPU shares only set a "
    "priority that applies when the host is busy.",
    remediation="Set resources.cpus (--cpus).",
    cis=("5.12",),
    security_severity=5.0,
    check=_cpu,
)


def _pids(view: CellView) -> list[Violation]:
    if view.pids_limit is not None:
        return []
    return [Violation(message="no limit on processes and threads (fork bomb)", fact="pids_limit")]


NO_PIDS_LIMIT = Rule(
    id="AC-014",
    severity="error",
    title="No PIDs limit",
    rationale="Without a PIDs limit a fork bomb in one cell exhausts the host's process table.",
    remediation="Set resources.pids (--pids-limit).",
    cis=("5.29",),
    security_severity=6.0,
    check=_pids,
)


# gVisor under the ptrace platform, measured on a 2-CPU Debian 12 host with runsc 20221219
# (bench/verify.py --gvisor-pids): the sandbox's sentry and gofer threads count against the
# container's pids limit, ~39 idle and ~60 after the first exec; every process in the cell adds
# ~9 more (its ptrace stub and the sentry threads serving it). More CPUs mean more sentry threads.
GVISOR_SANDBOX_PIDS = 64


GVISOR_PIDS_PER_PROCESS = 9


GVISOR_MIN_CELL_PROCESSES = 16


GVISOR_MIN_PIDS = GVISOR_SANDBOX_PIDS + GVISOR_MIN_CELL_PROCESSES * GVISOR_PIDS_PER_PROCESS


def _gvisor_pids(view: CellView) -> list[Violation]:
    limit = view.pids_limit
    if view.runtime != "runsc" or limit is None or limit >= GVISOR_MIN_PIDS:
        return []
    room = max(0, (limit - GVISOR_SANDBOX_PIDS) // GVISOR_PIDS_PER_PROCESS)
    return [
        Violation(
            message=f"pids: {limit} under runsc leaves ~{room} for the cell's own processes; "
            f"gVisor's own threads take ~{GVISOR_SANDBOX_PIDS} and each process ~"
            f"{GVISOR_PIDS_PER_PROCESS} more",
            fact="pids_limit",
            fix=f"set pids >= {GVISOR_MIN_PIDS} (room for {GVISOR_MIN_CELL_PROCESSES} processes)",
        )
    ]


GVISOR_PIDS_TOO_LOW = Rule(
    id="AC-037",
    severity="error",
    title="pids limit too low for gVisor",
    rationale="Under runsc the host's pids limit also counts gVisor's own sentry and gofer "
    "threads and a stub per cell process; a limit sized for runc leaves room for a handful "
    "of processes, and reaching it ends the whole sandbox, which then fails to restart.",
    remediation=f"Set resources.pids to {GVISOR_MIN_PIDS} or more for runsc cells.",
    security_severity=3.0,
    check=_gvisor_pids,
    applies=lambda view: view.runtime == "runsc",
)


def _healthcheck(view: CellView) -> list[Violation]:
    if view.healthcheck:
        return []
    if view.healthcheck is None:
        return [
            Violation(
                message="no healthcheck in the spec; the image's HEALTHCHECK, if any, applies",
                fact="healthcheck",
                severity="info",
            )
        ]
    return [Violation(message="no healthcheck", fact="healthcheck")]


NO_HEALTHCHECK = Rule(
    id="AC-030",
    severity="warning",
    title="No healthcheck",
    rationale="Without a healthcheck the engine reports a hung agent as running.",
    remediation="Add spec.healthcheck (or a HEALTHCHECK in the image).",
    cis=("4.6", "5.27"),
    security_severity=1.0,
    check=_healthcheck,
)


def _restart(view: CellView) -> list[Violation]:
    if view.restart_policy in ("always", "unless-stopped"):
        return [
            Violation(
                message=f"restart policy {view.restart_policy} restarts a crashing cell forever",
                fact="restart_policy",
            )
        ]
    if view.restart_policy == "on-failure" and view.restart_max_retries is None:
        return [
            Violation(
                message="restart policy on-failure without a retry limit restarts forever "
                "(Docker reads 0 retries as unlimited)",
                fact="restart_max_retries",
                fix="set restart.max_retries between 1 and 5, or policy 'no'",
            )
        ]
    if view.restart_policy == "on-failure" and (view.restart_max_retries or 0) > 5:
        return [
            Violation(
                message=f"restart policy allows {view.restart_max_retries} retries; CIS 5.15 "
                "recommends at most 5",
                fact="restart_max_retries",
                severity="info",
            )
        ]
    return []


UNBOUNDED_RESTART = Rule(
    id="AC-031",
    severity="warning",
    title="Unbounded restart policy",
    rationale="A crashing cell that restarts forever hides the failure and spends host "
    "resources; a bounded on-failure policy gives up and shows it.",
    remediation="Use restart.policy: on-failure with max_retries 5 or fewer.",
    cis=("5.15",),
    security_severity=3.0,
    check=_restart,
)


RULES: tuple[Rule, ...] = (
    NO_MEMORY_LIMIT,
    SWAP_BEYOND_MEMORY,
    NO_CPU_LIMIT,
    NO_PIDS_LIMIT,
    GVISOR_PIDS_TOO_LOW,
    NO_HEALTHCHECK,
    UNBOUNDED_RESTART,
)
