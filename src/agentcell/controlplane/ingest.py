"""Group commit of report batches: many requests, one transaction.

Each request's rows wait in a list while a single writer task commits whatever has gathered
since its last commit. Under load a commit carries many requests, so the database sees few
large transactions instead of one per request; when idle, a request is committed at once. A
request is answered only after its rows are durable, so an acknowledged report is never lost.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field

from agentcell.controlplane.api import ReportAck, ReportBatch
from agentcell.controlplane.store import EventRow, MetricRow, StorageError, Store
from agentcell.controlplane.telemetry import Telemetry
from agentcell.identity.spiffe import SpiffeId

__all__ = ["ReportWriter", "rows_for"]

# One transaction stays a reasonable size even when thousands of requests wait.
MAX_ROWS_PER_COMMIT = 5000


@dataclass
class _Pending:
    identity: SpiffeId
    metric_rows: list[MetricRow]
    event_rows: list[EventRow]
    sequences: list[int]
    done: asyncio.Future[ReportAck] = field(repr=False)


def rows_for(identity: SpiffeId, batch: ReportBatch) -> tuple[list[MetricRow], list[EventRow]]:
    """The rows a batch becomes, attributed to the certificate's identity only."""
    metric_rows: list[MetricRow] = []
    event_rows: list[EventRow] = []
    for report in batch.reports:
        if report.metrics is not None:
            metric_rows.append(
                MetricRow(
                    tenant=identity.tenant,
                    agent=identity.agent,
                    sequence=report.sequence,
                    sampled_at=report.sampled_at,
                    metrics=report.metrics,
                )
            )
        elif report.event is not None:
            event_rows.append(
                EventRow(
                    tenant=identity.tenant,
                    agent=identity.agent,
                    sequence=report.sequence,
                    at=report.sampled_at,
                    source="agent",
                    kind=report.event.kind,
                    message=report.event.message,
                )
            )
    return metric_rows, event_rows


class ReportWriter:
    """Commits report batches in groups, on one writer thread."""

    def __init__(self, store: Store, executor: Executor, telemetry: Telemetry) -> None:
        self._store = store
        self._executor = executor
        self._telemetry = telemetry
        self._pending: deque[_Pending] = deque()
        self._flusher: asyncio.Task[None] | None = None

    async def submit(self, identity: SpiffeId, batch: ReportBatch) -> ReportAck:
        """Store ``batch`` for ``identity``; return once it is committed.

        Raises:
            StorageError: the commit failed; nothing of this batch is acknowledged.
        """
        loop = asyncio.get_running_loop()
        metric_rows, event_rows = rows_for(identity, batch)
        pending = _Pending(
            identity=identity,
            metric_rows=metric_rows,
            event_rows=event_rows,
            sequences=[report.sequence for report in batch.reports],
            done=loop.create_future(),
        )
        self._pending.append(pending)
        if self._flusher is None or self._flusher.done():
            self._flusher = loop.create_task(self._flush())
        return await pending.done

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        while self._pending:
            group: list[_Pending] = []
            rows = 0
            while self._pending and (not group or rows < MAX_ROWS_PER_COMMIT):
                item = self._pending.popleft()
                group.append(item)
                rows += len(item.sequences)
            metric_rows = [row for item in group for row in item.metric_rows]
            event_rows = [row for item in group for row in item.event_rows]
            try:
                try:
                    new = await loop.run_in_executor(
                        self._executor, self._commit, metric_rows, event_rows
                    )
                except StorageError as exc:
                    _fail(group, exc)
                    continue
                self._resolve(group, metric_rows, event_rows, new)
            finally:
                # Whatever else went wrong, no request may wait forever for this group.
                _fail(group, StorageError("the report writer stopped before committing"))

    def _resolve(
        self,
        group: Sequence[_Pending],
        metric_rows: Sequence[MetricRow],
        event_rows: Sequence[EventRow],
        new: set[tuple[str, str, int]],
    ) -> None:
        self._telemetry.stored(
            sum(1 for row in metric_rows if _key(row) in new),
            sum(1 for row in event_rows if _key(row) in new),
        )
        for item in group:
            stored = sum(
                1
                for sequence in item.sequences
                if (item.identity.tenant, item.identity.agent, sequence) in new
            )
            duplicates = len(item.sequences) - stored
            if duplicates:
                self._telemetry.duplicate_reports.inc(duplicates)
            if not item.done.done():
                item.done.set_result(
                    ReportAck(acknowledged=item.sequences, stored=stored, duplicates=duplicates)
                )

    def _commit(
        self, metric_rows: Sequence[MetricRow], event_rows: Sequence[EventRow]
    ) -> set[tuple[str, str, int]]:
        return self._store.store_reports(metric_rows, event_rows, now=time.time())


def _fail(group: Sequence[_Pending], exc: StorageError) -> None:
    for item in group:
        if not item.done.done():
            item.done.set_exception(exc)


def _key(row: MetricRow | EventRow) -> tuple[str, str, int]:
    return (row.tenant, row.agent, row.sequence or 0)
