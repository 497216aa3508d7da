"""What one check of a cell is, and the ways to make one.

A :class:`Check` is made with its status written out (``Check(status="not-enforced", ...)``),
or, when the status follows from a comparison, with :meth:`Check.judged` (verified, or
configured, when the comparison holds; a mismatch otherwise); a fact that could not be read is
:meth:`Check.unknown`. All three take keyword arguments only.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from agentcell.verify.facts import Basis, Reading

__all__ = ["Check", "CheckStatus", "mismatch_ids"]

CheckStatus = Literal["verified", "configured", "reported", "mismatch", "not-enforced", "unknown"]


@dataclass(frozen=True, kw_only=True)
class Check:
    """One fact of the cell compared with the spec."""

    id: str
    title: str
    status: CheckStatus
    expected: str
    observed: str
    source: str
    """The file (or record) the observed value was read from."""
    basis: Basis
    why: str = ""

    @classmethod
    def judged(
        cls,
        *,
        id: str,
        title: str,
        ok: bool,
        expected: str,
        observed: str,
        source: str,
        basis: Basis,
        why: str = "",
        holds: Literal["verified", "configured"] = "verified",
    ) -> Check:
        """A check whose status is ``holds`` when ``ok``, else ``mismatch``."""
        return cls(
            id=id,
            title=title,
            status=holds if ok else "mismatch",
            expected=expected,
            observed=observed,
            source=source,
            basis=basis,
            why=why,
        )

    @classmethod
    def unknown(
        cls,
        *,
        id: str,
        title: str,
        expected: str,
        reading: Reading[Any],
    ) -> Check:
        """A check of a fact ``reading`` could not read, with the reading's reason."""
        return cls(
            id=id,
            title=title,
            status="unknown",
            expected=expected,
            observed="not read",
            source=reading.source,
            basis=reading.basis,
            why=reading.error or "not read",
        )


def mismatch_ids(checks: Iterable[Check]) -> set[str]:
    """The ids of the failed checks (for tests and summaries)."""
    return {check.id for check in checks if check.status == "mismatch"}
