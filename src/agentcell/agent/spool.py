"""The agent's bounded buffer of unsent reports: one small file per report, in its tmpfs.

Reports wait here until the control plane acknowledges them, and are sent oldest first, so an
outage delays reports but does not reorder or lose them, until the bound: then the oldest are
dropped (and counted) so a long outage cannot fill the cell's memory. Files rather than a
list keep the backlog out of the agent's RSS (tmpfs pages are charged to the cell's memory
limit, which bounds them too) and let a restarted agent process in the same cell resume.
"""

from __future__ import annotations

import os
from collections import deque
from pathlib import Path

__all__ = ["Spool"]

_SUFFIX = ".json"


class Spool:
    """Reports keyed by sequence number, bounded to ``max_records``."""

    def __init__(self, directory: Path, *, max_records: int) -> None:
        if max_records < 1:
            raise ValueError("max_records must be at least 1")
        self.directory = directory
        self.max_records = max_records
        self.dropped = 0
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        found = []
        for entry in directory.iterdir():
            stem = entry.name.removesuffix(_SUFFIX)
            if entry.name.endswith(_SUFFIX) and stem.isdigit():
                found.append(int(stem))
            elif entry.name.startswith("."):
                entry.unlink()  # a write cut short before its rename
        self._sequences: deque[int] = deque(sorted(found))

    def __len__(self) -> int:
        return len(self._sequences)

    @property
    def last_sequence(self) -> int:
        """The newest buffered sequence, 0 when empty."""
        return self._sequences[-1] if self._sequences else 0

    def _path(self, sequence: int) -> Path:
        return self.directory / f"{sequence:020d}{_SUFFIX}"

    def append(self, sequence: int, payload: bytes) -> int:
        """Buffer one report; returns how many old reports the bound forced out (0 or more).

        Raises:
            ValueError: ``sequence`` is not above every buffered one (order is the contract).
            OSError: the tmpfs is full or gone.
        """
        if self._sequences and sequence <= self._sequences[-1]:
            raise ValueError(f"sequence {sequence} is not after {self._sequences[-1]}")
        staging = self.directory / f".{sequence}.new"
        with open(staging, "wb") as handle:
            handle.write(payload)
        os.replace(staging, self._path(sequence))
        self._sequences.append(sequence)
        dropped = 0
        while len(self._sequences) > self.max_records:
            self._forget(self._sequences.popleft())
            dropped += 1
        self.dropped += dropped
        return dropped

    def oldest(self, count: int) -> list[tuple[int, bytes]]:
        """Up to ``count`` reports, oldest first."""
        batch = []
        for sequence in list(self._sequences)[:count]:
            try:
                batch.append((sequence, self._path(sequence).read_bytes()))
            except FileNotFoundError:
                continue
        return batch

    def acknowledge(self, sequences: list[int]) -> None:
        """Forget reports the control plane has stored."""
        done = set(sequences)
        for sequence in done:
            self._forget(sequence)
        self._sequences = deque(s for s in self._sequences if s not in done)

    def _forget(self, sequence: int) -> None:
        self._path(sequence).unlink(missing_ok=True)
