"""The decision log: one JSON line per resolver answer and per gateway connection.

Each tenant's log is ``<state_dir>/net/<tenant>/decisions.jsonl`` (``state_dir`` being the
control plane's, :func:`agentcell.cell.paths.state_dir`). It is bounded: a file that reaches
:data:`MAX_LOG_BYTES` is renamed to ``decisions.jsonl.1`` (replacing the older one) and a new
one begun, so a cell that floods the resolver costs at most twice that on disk.

Every record carries the cell the request came from, found from its source address on the
tenant network; ``engine-dns`` when the query came through the engine's embedded DNS (its
source is the host's side of the bridge), else the bare source address.

Names and reasons in a record were chosen by the cell; whoever prints them escapes them
(``agentcell net log`` does, through :mod:`agentcell.cli.terminal`).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO, Literal

from agentcell.cell.names import DNS_LABEL
from agentcell.cell.paths import state_dir
from agentcell.errors import InvalidInput

__all__ = [
    "ENGINE_DNS",
    "MAX_LOG_BYTES",
    "DecisionKind",
    "DecisionLog",
    "DecisionRecord",
    "decision_log_path",
    "read_decisions",
]

MAX_LOG_BYTES = 4 * 1024 * 1024
ENGINE_DNS = "engine-dns"
"""The ``cell`` of a query that reached the resolver through the engine's embedded DNS."""
MAX_FIELD_CHARS = 512
"""Names and reasons are cut to this many characters: a record stays one short line."""

DecisionKind = Literal["dns", "connect", "sni"]
_TENANT = re.compile(DNS_LABEL)


@dataclass(frozen=True, kw_only=True)
class DecisionRecord:
    """One decision of a tenant's resolver or gateway."""

    ts: float
    """Seconds since the epoch."""
    tenant: str
    cell: str
    """The agent name of the cell that asked, ``engine-dns``, or its source address."""
    kind: DecisionKind
    name: str | None
    """The name asked for (query name, CONNECT host or TLS server name)."""
    qtype: str | None
    """The DNS query type (``A``, ``AAAA``, ...) for ``dns`` records."""
    address: str | None
    """The address connected to (or asked for as an IP literal)."""
    port: int | None
    decision: Literal["allow", "deny"]
    reason: str

    def to_json(self) -> str:
        """The record as one line of JSON (non-ASCII escaped)."""
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_mapping(cls, raw: Mapping[str, object]) -> DecisionRecord | None:
        """The record a parsed line holds, or None when it is not one."""
        try:
            kind, decision = raw["kind"], raw["decision"]
            if kind not in ("dns", "connect", "sni") or decision not in ("allow", "deny"):
                return None
            port = raw.get("port")
            ts = raw["ts"]
            if not isinstance(ts, int | float) or (port is not None and not isinstance(port, int)):
                return None
            return cls(
                ts=float(ts),
                tenant=str(raw["tenant"]),
                cell=str(raw["cell"]),
                kind=kind,
                name=_optional(raw.get("name")),
                qtype=_optional(raw.get("qtype")),
                address=_optional(raw.get("address")),
                port=port,
                decision=decision,
                reason=str(raw["reason"]),
            )
        except KeyError:
            return None


def _optional(value: object) -> str | None:
    return None if value is None else str(value)


def _cut(text: str | None) -> str | None:
    if text is None or len(text) <= MAX_FIELD_CHARS:
        return text
    return text[:MAX_FIELD_CHARS] + "..."


def decision_log_path(tenant: str, *, directory: Path | None = None) -> Path:
    """``<state_dir>/net/<tenant>/decisions.jsonl``.

    Raises:
        InvalidInput: ``tenant`` is not a tenant name (it would name another path).
    """
    if not _TENANT.match(tenant) or len(tenant) > 63:
        raise InvalidInput(f"{tenant!r} is not a tenant name", fix="give a DNS label, e.g. demo")
    return (directory or state_dir()) / "net" / tenant / "decisions.jsonl"


class DecisionLog:
    """Appends a tenant's decisions to its log file, rotating it at ``max_bytes``.

    Writes go straight to the file (one ``write`` per line, flushed) so ``net log -F`` sees
    them at once; a lock makes the log safe to share between threads.
    """

    def __init__(self, path: Path, *, max_bytes: int = MAX_LOG_BYTES) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._file: BinaryIO | None = None
        self._size = 0
        self.written = 0

    def record(
        self,
        *,
        tenant: str,
        cell: str,
        kind: DecisionKind,
        decision: Literal["allow", "deny"],
        reason: str,
        name: str | None = None,
        qtype: str | None = None,
        address: str | None = None,
        port: int | None = None,
    ) -> DecisionRecord:
        """Write one decision and return it."""
        entry = DecisionRecord(
            ts=time.time(),
            tenant=tenant,
            cell=_cut(cell) or "",
            kind=kind,
            name=_cut(name),
            qtype=qtype,
            address=address,
            port=port,
            decision=decision,
            reason=_cut(reason) or "",
        )
        self.write(entry)
        return entry

    def write(self, entry: DecisionRecord) -> None:
        """Append ``entry`` (rotating first when the file is full)."""
        line = (entry.to_json() + "\n").encode()
        with self._lock:
            handle = self._open()
            if self._size and self._size + len(line) > self.max_bytes:
                handle.close()
                os.replace(self.path, self.path.with_name(self.path.name + ".1"))
                self._file = None
                handle = self._open()
            handle.write(line)
            handle.flush()
            self._size += len(line)
            self.written += 1

    def _open(self) -> BinaryIO:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
            handle = open(self.path, "ab", buffering=0)  # noqa: SIM115 - held open, closed in close()
            self._size = handle.tell()
            self._file = handle
        return self._file

    def close(self) -> None:
        """Close the file (a later write opens it again)."""
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


def _parsed(line: bytes) -> DecisionRecord | None:
    try:
        raw = json.loads(line)
    except ValueError:
        return None
    return DecisionRecord.from_mapping(raw) if isinstance(raw, dict) else None


def read_decisions(
    path: Path,
    *,
    denied_only: bool = False,
    follow: bool = False,
    poll_interval: float = 0.2,
    stop: threading.Event | None = None,
) -> Iterator[DecisionRecord]:
    """The records of the log at ``path``, oldest first (the rotated ``.1`` file first).

    With ``follow``, keep waiting for new records, across rotations, until ``stop`` is set
    (or forever). Lines that are not records (a torn last line, garbage) are skipped.
    """
    rotated = path.with_name(path.name + ".1")
    if rotated.exists():
        with open(rotated, "rb") as old:
            yield from _filtered(old, denied_only)
    handle = None
    inode = None
    pending = b""
    try:
        while True:
            if handle is None:
                with contextlib.suppress(FileNotFoundError):
                    handle = open(path, "rb")  # noqa: SIM115 - kept across the loop
                    inode = os.fstat(handle.fileno()).st_ino
                    pending = b""
            if handle is not None:
                chunk = handle.read()
                if chunk:
                    pending += chunk
                    *lines, pending = pending.split(b"\n")
                    for line in lines:
                        entry = _parsed(line)
                        if entry is not None and (not denied_only or entry.decision == "deny"):
                            yield entry
                    continue
            if not follow or (stop is not None and stop.is_set()):
                return
            if handle is not None and _replaced(path, inode):
                handle.close()
                handle = None  # rotated: read the new file from its start
                continue
            if stop is not None:
                stop.wait(poll_interval)
            else:
                time.sleep(poll_interval)
    finally:
        if handle is not None:
            handle.close()


def _replaced(path: Path, inode: int | None) -> bool:
    try:
        return os.stat(path).st_ino != inode
    except FileNotFoundError:
        return False


def _filtered(handle: BinaryIO, denied_only: bool) -> Iterator[DecisionRecord]:
    for line in handle:
        entry = _parsed(line)
        if entry is not None and (not denied_only or entry.decision == "deny"):
            yield entry
