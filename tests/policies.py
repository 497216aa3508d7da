"""Policies for tests that exercise the launch path rather than policy itself."""

from __future__ import annotations

from collections.abc import Sequence

from agentcell.policy import Finding
from agentcell.policy.view import CellView
from agentcell.spec.load import SpecDocument


class AdmitAll:
    """Judges nothing: an ``AdmittedSpec`` comes only from ``admit()``, and these tests need
    one for any spec; policy has its own tests."""

    name = "admit-all"

    def evaluate(self, doc: SpecDocument) -> Sequence[Finding]:
        return ()

    def judge(self, view: CellView) -> Sequence[Finding]:
        return ()
