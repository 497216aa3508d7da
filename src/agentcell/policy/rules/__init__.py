"""The rule catalogue: what agentcell checks in a cell, why, and how to fix it.

Every rule judges a :class:`~agentcell.policy.view.CellView`, so the same rule refuses a spec
in ``up``, reports it in ``lint`` and flags a running container in ``audit``. Rules are pure:
``check(view)`` returns the violations it sees and never raises for a bad cell.

Each rule names the CIS Docker Benchmark v1.6.0 controls and the Kubernetes Pod Security
Standards level it serves, where one does. Several go beyond docker-bench on purpose: CIS 5.4
passes any container that added no capability, while AC-002 also asks that the defaults were
dropped; CIS 5.22 passes the engine's default seccomp profile, while AC-009 notes that Docker
20.10's default lets io_uring through.

Rule ids are stable (``^[A-Z]+-\\d{3}$``); specs name them in ``spec.exceptions``.

Each rule is defined beside its check, in the module of its theme: :mod:`.privilege`,
:mod:`.syscalls`, :mod:`.filesystem`, :mod:`.resources`, :mod:`.namespaces`,
:mod:`.supply_chain`, :mod:`.network` (rules about a tenant's network, judged on Tenant
documents) and :mod:`.meta` (rules about the policy and the spec themselves). This
module assembles them into :data:`CATALOGUE`, in id order.
"""

from __future__ import annotations

from agentcell.policy.rules import (
    filesystem,
    meta,
    namespaces,
    network,
    privilege,
    resources,
    supply_chain,
    syscalls,
)
from agentcell.policy.rules.base import PssLevel, Rule, Violation
from agentcell.policy.rules.meta import requires_runtime
from agentcell.policy.rules.privilege import DANGEROUS_CAPABILITIES
from agentcell.policy.rules.resources import (
    GVISOR_MIN_CELL_PROCESSES,
    GVISOR_MIN_PIDS,
    GVISOR_PIDS_PER_PROCESS,
    GVISOR_SANDBOX_PIDS,
)

__all__ = [
    "CATALOGUE",
    "DANGEROUS_CAPABILITIES",
    "GVISOR_MIN_CELL_PROCESSES",
    "GVISOR_MIN_PIDS",
    "GVISOR_PIDS_PER_PROCESS",
    "GVISOR_SANDBOX_PIDS",
    "RULE_IDS",
    "PssLevel",
    "Rule",
    "Violation",
    "requires_runtime",
    "rule",
]

_THEMED: tuple[Rule, ...] = (
    *meta.RULES,
    *privilege.RULES,
    *syscalls.RULES,
    *filesystem.RULES,
    *resources.RULES,
    *namespaces.RULES,
    *network.RULES,
    *supply_chain.RULES,
)

RULE_IDS = frozenset({*(entry.id for entry in _THEMED), meta.UNKNOWN_EXCEPTION_ID})
CATALOGUE: tuple[Rule, ...] = tuple(
    sorted((*_THEMED, meta.unknown_exception_rule(RULE_IDS)), key=lambda entry: entry.id)
)
_BY_ID = {entry.id: entry for entry in CATALOGUE}
if len(_BY_ID) != len(CATALOGUE):  # two theme modules claimed one id
    raise RuntimeError("duplicate rule ids in the catalogue")


def rule(rule_id: str) -> Rule:
    """The catalogue's rule ``rule_id``.

    Raises:
        KeyError: no rule has that id.
    """
    return _BY_ID[rule_id]
