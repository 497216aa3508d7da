"""Names typed on the command line, checked once before anything reaches the engine or the
control plane.

A name that cannot name anything (empty, ``ux/``, ``a/b/c``, a control character) is bad
input: one line saying which argument and why, a fix, and exit 2. Without this the engine's
SDK, the control plane's request models or its HTTP answers would each word the refusal
their own way, some as a traceback.

The grammar is agentcell's: tenants and agents are DNS labels (tenants up to 12
characters, agents up to 40); a container name is what the engine accepts
(``[a-zA-Z0-9][a-zA-Z0-9_.-]+``).
"""

from __future__ import annotations

import re

from agentcell.cell.names import DNS_LABEL, NAME_MAX, TENANT_MAX
from agentcell.errors import InvalidInput

__all__ = [
    "InvalidInput",
    "agent_filter",
    "cell_ref",
    "metric_name",
    "revoke_target",
    "tenant_filter",
]

_DNS_LABEL = re.compile(DNS_LABEL)
_CONTAINER = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]+")
_SERIAL = re.compile(r"[0-9A-Fa-f]{1,64}")
_METRIC = re.compile(r"[a-z][a-z0-9_.]{0,63}")
AGENT_MAX = NAME_MAX
CONTAINER_MAX = 255
_CELL_FIX = "name a cell as TENANT/AGENT, AGENT or its container name; `agentcell ps` lists them"


def _shown(text: str) -> str:
    # repr() quotes the name and escapes what would act on a terminal; long input is cut.
    return repr(text if len(text) <= 80 else text[:80] + "...")


def _label_problem(text: str, *, longest: int) -> str | None:
    """Why ``text`` is not a DNS label of at most ``longest`` characters, or None."""
    if not text:
        return "is empty"
    if len(text) > longest:
        return f"is {len(text)} characters long; at most {longest} are allowed"
    if not _DNS_LABEL.fullmatch(text):
        return "may hold only a-z, 0-9 and '-', and must start and end with a letter or digit"
    return None


def _label(text: str, *, what: str, longest: int, fix: str) -> str:
    problem = _label_problem(text, longest=longest)
    if problem is not None:
        raise InvalidInput(f"{what} {_shown(text)}: the name {problem}", fix=fix)
    return text


def cell_ref(text: str, *, argument: str = "NAME") -> str:
    """``text`` if it can name a cell: ``TENANT/AGENT``, ``AGENT`` or a container name.

    Raises:
        InvalidInput: it cannot.
    """
    if "/" in text:
        tenant, _, agent = text.partition("/")
        if "/" in agent:
            raise InvalidInput(
                f"{argument} {_shown(text)}: a cell name holds at most one '/'", fix=_CELL_FIX
            )
        for part, what, longest in (("tenant", tenant, TENANT_MAX), ("agent", agent, AGENT_MAX)):
            problem = _label_problem(what, longest=longest)
            if problem is not None:
                raise InvalidInput(
                    f"{argument} {_shown(text)}: the {part} part {problem}", fix=_CELL_FIX
                )
        return text
    if not text:
        raise InvalidInput(f"{argument} is empty", fix=_CELL_FIX)
    if len(text) > CONTAINER_MAX or not (_DNS_LABEL.fullmatch(text) or _CONTAINER.fullmatch(text)):
        raise InvalidInput(
            f"{argument} {_shown(text)}: not an agent or container name (letters, digits, "
            f"'_', '.', '-', at most {CONTAINER_MAX})",
            fix=_CELL_FIX,
        )
    return text


def tenant_filter(text: str) -> str:
    """``--tenant``: a tenant name (a DNS label of up to 12 characters)."""
    return _label(
        text, what="--tenant", longest=TENANT_MAX, fix="give a tenant name, e.g. --tenant demo"
    )


def agent_filter(text: str) -> str:
    """``--agent``: an agent name (a DNS label of up to 40 characters), not TENANT/AGENT."""
    if "/" in text:
        raise InvalidInput(
            f"--agent {_shown(text)}: an agent name holds no '/'",
            fix="give the tenant with --tenant and the agent with --agent",
        )
    return _label(
        text, what="--agent", longest=AGENT_MAX, fix="give an agent name, e.g. --agent reporter"
    )


def revoke_target(text: str) -> tuple[str, str] | str:
    """A certificate serial (hex), or ``(tenant, agent)`` from ``TENANT/AGENT``.

    Raises:
        InvalidInput: it is neither.
    """
    fix = "give a serial as `agentcell cert list` prints it, or TENANT/AGENT"
    if "/" not in text:
        if not _SERIAL.fullmatch(text):
            raise InvalidInput(
                f"TARGET {_shown(text)}: not a serial (1 to 64 hex digits) or TENANT/AGENT",
                fix=fix,
            )
        return text
    tenant, _, agent = text.partition("/")
    if "/" in agent:
        raise InvalidInput(f"TARGET {_shown(text)}: TENANT/AGENT holds one '/'", fix=fix)
    for part, value, longest in (("tenant", tenant, TENANT_MAX), ("agent", agent, AGENT_MAX)):
        problem = _label_problem(value, longest=longest)
        if problem is not None:
            raise InvalidInput(f"TARGET {_shown(text)}: the {part} part {problem}", fix=fix)
    return tenant, agent


def metric_name(text: str) -> str:
    """A metric name as agents report them: ``[a-z][a-z0-9_.]*``, up to 64 characters."""
    if not _METRIC.fullmatch(text):
        raise InvalidInput(
            f"METRIC {_shown(text)}: a metric name is a-z first, then a-z, 0-9, '_' or '.', "
            "at most 64 characters",
            fix="e.g. load.1m or cpu.utilization; `agentcell metrics` with any name lists "
            "the reported ones",
        )
    return text
