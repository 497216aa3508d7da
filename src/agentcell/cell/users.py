"""Host uids of cells."""

from __future__ import annotations

__all__ = ["UID_RANGE", "UNALLOCATED"]

# Far above the uids of people and services, and above the subordinate ranges that
# /etc/subuid hands out from 100000 in steps of 65536 for the first few thousand users.
UID_RANGE = range(1_000_000_000, 1_000_000_000 + 1_000_000)
"""Where cells' uids come from (``AGENTCELL_UID_RANGE`` moves it)."""
UNALLOCATED = UID_RANGE.start
"""What settings show for a cell whose uid is allocated only at launch (``render``)."""
