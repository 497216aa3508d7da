"""Exec'd commands' exit codes as the engine announces them, one subscription for them all.

The engine says a command ended with an ``exec_die`` event (its exec id and exit code) as soon
as it has handled the exit; asking it with ``exec inspect`` after the command's output ended
waits for that same handling and then costs a round trip of its own. :class:`ExecExits` keeps
one events stream open on a connection of its own and hands each waiting command its code.

The events come from the engine, never from the cell, so the code is the engine's word as
much as ``exec inspect``'s. What the stream does not deliver in time (the subscription broke,
the engine restarted, an exec that dies with its container and is never announced) the caller
asks the engine for instead: :meth:`ExecExits.wait` returns None and says nothing more.

The engine flushes the stream's head before it subscribes, so an exit in between would be
missed; the subscription therefore asks for the events of the last seconds too (``since``),
and only the exec ids a caller registered with :meth:`ExecExits.expect` are kept.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import docker

from agentcell.errors import Error
from agentcell.runtime.docker.client import connect, translated

__all__ = ["ExecExits"]

log = logging.getLogger(__name__)

REPLAY_S = 5
"""How far back a new subscription asks for events (covers the gap before it subscribed)."""
RETRY_S = 5.0
"""After a subscription failed, how long commands go without one before it is tried again."""
MAX_EXPECTED = 4096
"""Exec ids listened for at most; the oldest beyond it are dropped (their callers ask the
engine), so commands nobody waits for cannot grow this without bound."""


class ExecExits:
    """Waits for exec'd commands' ``exec_die`` events. Thread-safe; :meth:`close` when done."""

    def __init__(self, open_client: Callable[[], docker.DockerClient] = connect) -> None:
        self._open_client = open_client
        self._lock = threading.Condition()
        self._codes: dict[str, int | None] = {}
        """Each expected exec id -> its exit code once announced."""
        self._epochs: dict[str, int] = {}
        """Each expected exec id -> the subscription that was listening when it was expected."""
        self._epoch = 0
        self._listening = False
        self._closed = False
        self._retry_at = 0.0
        self._stream: Any = None

    def expect(self, exec_id: str) -> None:
        """Listen for ``exec_id``'s end; call it before the exec starts. Without a working
        subscription it remembers nothing and :meth:`wait` returns None at once."""
        with self._lock:
            if self._closed:
                return
            if not self._listening and time.monotonic() >= self._retry_at:
                self._subscribe()
            if self._listening:
                self._codes[exec_id] = None
                self._epochs[exec_id] = self._epoch
                while len(self._codes) > MAX_EXPECTED:
                    self._forget(next(iter(self._codes)))

    def announced(self, exec_id: str) -> int | None:
        """``exec_id``'s exit code if the engine has announced it, without waiting."""
        with self._lock:
            return self._codes.get(exec_id)

    def wait(self, exec_id: str, timeout_s: float) -> int | None:
        """The exit code the engine announced for ``exec_id`` within ``timeout_s``, else None:
        at once when it is not listened for or its subscription ended, else when nothing came
        in time (it is still listened for then). A code it returns is forgotten."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while exec_id in self._codes:
                code = self._codes[exec_id]
                if code is not None:
                    self._forget(exec_id)
                    return code
                remaining = deadline - time.monotonic()
                if self._epochs[exec_id] != self._epoch:
                    self._forget(exec_id)  # its subscription ended: the engine is asked
                    return None
                if remaining <= 0:
                    return None
                self._lock.wait(remaining)
            return None

    def forget(self, exec_id: str) -> None:
        """Stop listening for ``exec_id`` (its caller will not wait for it)."""
        with self._lock:
            self._forget(exec_id)

    def close(self) -> None:
        """End the subscription; waiters get None."""
        with self._lock:
            self._closed = True
            stream, self._stream = self._stream, None
            self._end_epoch()
        if stream is not None:
            with contextlib.suppress(Exception):
                stream.close()

    # -- the subscription ------------------------------------------------------------------

    def _forget(self, exec_id: str) -> None:
        self._codes.pop(exec_id, None)
        self._epochs.pop(exec_id, None)

    def _subscribe(self) -> None:
        """Open the events stream (under the lock); a failure leaves it closed."""
        try:
            client = self._open_client()
            with translated("subscribe to exec events"):
                stream = client.api.events(
                    since=int(time.time()) - REPLAY_S,
                    decode=True,
                    filters={"type": "container", "event": "exec_die"},
                )
        except Error as exc:
            log.info("exit codes will be asked of the engine for now: %s", exc.what)
            self._retry_at = time.monotonic() + RETRY_S
            return
        self._epoch += 1
        self._listening = True
        self._stream = stream
        threading.Thread(
            target=self._listen,
            args=(client, stream, self._epoch),
            name="exec-exits",
            daemon=True,
        ).start()

    def _listen(self, client: docker.DockerClient, stream: Iterator[Any], epoch: int) -> None:
        try:
            with translated("read exec events"):
                for event in stream:
                    self._record(event)
        # A stream closed under it fails in many ways, and every one of them means the same
        # (the engine is asked instead).
        except Exception as exc:  # noqa: BLE001 - the thread's outermost handler
            if not self._closed:
                log.info("the engine's exec events stopped: %s", exc)
        finally:
            with self._lock:
                if self._epoch == epoch:
                    self._stream = None
                    self._end_epoch()
            with contextlib.suppress(Exception):
                client.close()

    def _record(self, event: object) -> None:
        actor = event.get("Actor") if isinstance(event, dict) else None
        attributes = actor.get("Attributes") if isinstance(actor, dict) else None
        if not isinstance(attributes, dict):
            return
        exec_id, code = attributes.get("execID"), attributes.get("exitCode")
        if not isinstance(exec_id, str) or not isinstance(code, str):
            return
        try:
            value = int(code)
        except ValueError:
            return
        with self._lock:
            if exec_id in self._codes:
                self._codes[exec_id] = value
                self._lock.notify_all()

    def _end_epoch(self) -> None:
        """The current subscription is over (under the lock): wake every waiter."""
        self._listening = False
        self._epoch += 1
        self._lock.notify_all()
