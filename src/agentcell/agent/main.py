"""The reference monitoring agent: enrol, sample the host, report over mTLS, renew, repeat.

Standard library only. Its life in a cell:

1. **Enrol.** Make a key in the tmpfs (it never leaves), send a CSR with the one-time join token
   the cell was given read-only, keep the certificate. The answer says which sequence number
   comes next, so a re-enrolled agent never reuses one.
2. **Report.** Every interval, sample /host/proc and /host/sys, append the sample to the spool
   with the next sequence number, then send the spool oldest first in batches. Only what the
   control plane acknowledges leaves the spool; when it is unreachable the spool grows, up to
   its bound.
3. **Follow the tenant's config.** Read it at start and at least every
   :data:`CONFIG_POLL_MAX_S` seconds, whatever the report interval; keep the latest in memory
   and in ``config.json`` in the state directory (replaced whole, never half-written), and
   report ``config version N`` as an event, sent at once, when the version changes. The tenant
   comes from the certificate alone, so no request can name another's.
4. **Renew** with a fresh key once two thirds of the certificate's remaining life have passed.
   If the certificate is revoked, or expires because renewal kept failing, say so in one line
   and exit: a cell with no valid identity must not pretend to work.

Enrolment waits out what will pass: an unreachable control plane, a 5xx answer, and a 429
(too many attempts from this peer), after which it waits as long as ``Retry-After`` says, within
:data:`RETRY_AFTER_MAX_S`. Everything else about the token is final.

Exit codes: 0 stopped by a signal, 2 bad configuration, 3 no usable join token (refused, or
missing because it was already used or never written: only ``agentcell up`` issues another),
4 certificate revoked, 5 certificate expired without renewal.
"""

from __future__ import annotations

import email.utils
import json
import os
import signal
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from types import FrameType

from .collect import Collector, HostPaths
from .keys import KeygenError, generate_key_and_csr
from .lean import Log, StopSignal
from .spool import Spool
from .transport import Endpoint, Transport, TransportError, tls_context

__all__ = ["AgentConfig", "ReferenceAgent", "main"]

VERSION = "0.1.0"
SERVER_NAME = "agentcell-controlplane"
RENEW_AT = 2 / 3
HEARTBEAT_EVERY_S = 60.0
# Config changes should reach agents within seconds even when they report once a minute.
CONFIG_POLL_MAX_S = 5.0
# Bounds on a server's Retry-After: at least a second, so a 0 cannot make a busy loop, and at
# most five minutes, so a wrong header cannot park the agent for longer than its token lives.
RETRY_AFTER_MIN_S = 1.0
RETRY_AFTER_MAX_S = 300.0
ENROL_BACKOFF_MAX_S = 30.0

EXIT_CONFIG = 2
EXIT_ENROL_REFUSED = 3
EXIT_REVOKED = 4
EXIT_EXPIRED = 5

log = Log("agentcell-agent")


class AgentExit(Exception):
    """Stop the agent with an exit code and one clear log line."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class AgentConfig:
    """Settings from the environment the cell was started with."""

    __slots__ = (
        "batch_max",
        "buffer_max",
        "config_poll",
        "endpoint",
        "host_root",
        "identity_dir",
        "interval",
        "server_name",
        "state_dir",
    )

    def __init__(
        self,
        *,
        endpoint: Endpoint,
        server_name: str,
        identity_dir: Path,
        state_dir: Path,
        host_root: Path,
        interval: float,
        buffer_max: int,
        batch_max: int,
        config_poll: float = CONFIG_POLL_MAX_S,
    ) -> None:
        self.endpoint = endpoint
        self.server_name = server_name
        self.identity_dir = identity_dir
        self.state_dir = state_dir
        self.host_root = host_root
        self.interval = interval
        self.buffer_max = buffer_max
        self.batch_max = batch_max
        self.config_poll = config_poll

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> AgentConfig:
        """Read ``AGENTCELL_*`` variables.

        Raises:
            ValueError: a value is malformed.
        """
        interval = float(environ.get("AGENTCELL_INTERVAL", "5"))
        buffer_max = int(environ.get("AGENTCELL_BUFFER_MAX", "1000"))
        batch_max = int(environ.get("AGENTCELL_BATCH_MAX", "100"))
        config_poll = float(environ.get("AGENTCELL_CONFIG_POLL", str(CONFIG_POLL_MAX_S)))
        if not 0.05 <= config_poll <= CONFIG_POLL_MAX_S:
            raise ValueError(
                f"AGENTCELL_CONFIG_POLL={config_poll} is outside 0.05..{CONFIG_POLL_MAX_S:g} s"
            )
        if not 0.05 <= interval <= 3600:
            raise ValueError(f"AGENTCELL_INTERVAL={interval} is outside 0.05..3600 seconds")
        if buffer_max < 1 or not 1 <= batch_max <= 1000:
            raise ValueError("AGENTCELL_BUFFER_MAX must be >= 1 and AGENTCELL_BATCH_MAX 1..1000")
        return cls(
            endpoint=Endpoint.parse(
                environ.get(
                    "AGENTCELL_CONTROL_PLANE", "unix:///run/agentcell/controlplane/agent.sock"
                )
            ),
            server_name=environ.get("AGENTCELL_SERVER_NAME", SERVER_NAME),
            identity_dir=Path(environ.get("AGENTCELL_IDENTITY_DIR", "/run/agentcell/identity")),
            state_dir=Path(environ.get("AGENTCELL_STATE_DIR", "/tmp/agentcell")),
            host_root=Path(environ.get("AGENTCELL_HOST_ROOT", "/host")),
            interval=interval,
            buffer_max=buffer_max,
            batch_max=batch_max,
            config_poll=config_poll,
        )

    @property
    def ca_file(self) -> Path:
        """The control plane's CA bundle, delivered read-only with the token."""
        return self.identity_dir / "ca.pem"

    @property
    def token_file(self) -> Path:
        """The one-time join token."""
        return self.identity_dir / "token"

    @property
    def key_file(self) -> Path:
        """The private key, in the tmpfs."""
        return self.state_dir / "key.pem"

    @property
    def alive_file(self) -> Path:
        """Touched every tick; the healthcheck reads its age."""
        return self.state_dir / "alive"

    @property
    def cert_file(self) -> Path:
        """The current certificate."""
        return self.state_dir / "cert.pem"

    @property
    def tenant_config_file(self) -> Path:
        """The tenant's latest config as JSON: ``{"tenant", "version", "config"}``."""
        return self.state_dir / "config.json"


class ReferenceAgent:
    """One agent process. ``run`` returns an exit code."""

    def __init__(self, config: AgentConfig, *, stop: StopSignal | None = None) -> None:
        self.config = config
        self.stop = stop or StopSignal()
        self.collector = Collector(HostPaths.under(config.host_root))
        self.spool = Spool(config.state_dir / "spool", max_records=config.buffer_max)
        try:
            context = tls_context(config.ca_file, None)
        except OSError as exc:
            raise ValueError(
                f"cannot load the control plane's CA bundle {config.ca_file}: "
                f"{exc.strerror or exc}; is {config.identity_dir} mounted (spec identity: true)?"
            ) from exc
        self.transport = Transport(config.endpoint, server_name=config.server_name, context=context)
        self.next_sequence = 1
        self.renew_at = 0.0
        self.not_after = 0.0
        self.serial = ""
        self._online = True
        self._last_heartbeat = 0.0
        self._reported_failures: set[str] = set()
        self.tenant_config: dict[str, str] = {}
        self.tenant_config_version: int | None = None
        self._config_problem = ""

    # -- identity ----------------------------------------------------------------------------

    def enrol(self) -> None:
        """Get the first certificate with the join token; retry while unreachable, busy
        (5xx) or rate-limited (429, after its Retry-After).

        Raises:
            AgentExit: the token is missing, unreadable or refused.
        """
        token = self._join_token()
        pending = self.config.state_dir / "key.pending"
        new_key = generate_key_and_csr(pending, common_name="agentcell-agent")
        body = json.dumps({"token": token, "csr": new_key.csr_pem}).encode()
        backoff = 1.0
        while True:
            try:
                answer = self.transport.request("POST", "/v1/agent/enrol", body)
            except TransportError as exc:
                wait, backoff = backoff, min(backoff * 2, ENROL_BACKOFF_MAX_S)
                log.warning("control plane unreachable for enrolment (%s); retrying", exc)
            else:
                if answer.status == 200:
                    break
                if answer.status == 429:
                    # Refused before the token was looked at: it is still good after the wait.
                    wait = retry_delay(answer.retry_after, default=backoff)
                    log.warning(
                        "enrolment refused for now (429 %s): %s; retrying in %g s",
                        answer.reason,
                        answer.error,
                        wait,
                    )
                elif answer.status >= 500:
                    wait, backoff = backoff, min(backoff * 2, ENROL_BACKOFF_MAX_S)
                    log.warning(
                        "control plane cannot enrol now (%d %s): %s; retrying",
                        answer.status,
                        answer.reason,
                        answer.error,
                    )
                else:
                    raise AgentExit(
                        EXIT_ENROL_REFUSED,
                        f"enrolment refused ({answer.status} {answer.reason}): {answer.error}; "
                        "run `agentcell up` again to give this cell a fresh join token",
                    )
            if self.stop.wait(wait):
                raise AgentExit(0, "stopped before enrolment")
        self._install(answer.body, pending)
        self.next_sequence = max(int(answer.body["next_sequence"]), self.spool.last_sequence + 1)
        log.info(
            "enrolled as %s (certificate %s, valid until %s); next sequence %d",
            answer.body["spiffe_id"],
            self.serial,
            _clock(self.not_after),
            self.next_sequence,
        )

    def _join_token(self) -> str:
        """The join token the cell was given.

        Raises:
            AgentExit: (3) there is none to use. The control plane removes a token's file once
                the token is spent, so a cell restarted by the engine alone finds none.
        """
        path = self.config.token_file
        again = "run `agentcell up` for this cell to issue a new one"
        try:
            token = path.read_text().strip()
        except FileNotFoundError:
            token = ""
        except OSError as exc:
            raise AgentExit(
                EXIT_ENROL_REFUSED,
                f"cannot read the join token {path} ({exc.strerror or exc}); {again}, "
                "readable by the cell's uid",
            ) from exc
        if not token:
            raise AgentExit(
                EXIT_ENROL_REFUSED,
                f"no join token at {path}: it was already used (the control plane removes a "
                "cell's token once it has enrolled, so a cell restarted without `agentcell up` "
                f"has none) or it was never written; {again}",
            )
        return token

    def _install(self, body: Mapping[str, object], key: Path) -> None:
        """Make ``key`` and the certificate in ``body`` the ones presented from now on."""
        staging = self.config.state_dir / "cert.pending"
        staging.write_text(str(body["certificate"]))
        context = tls_context(self.config.ca_file, (staging, key))
        os.replace(key, self.config.key_file)
        os.replace(staging, self.config.cert_file)
        self.transport.use(context)
        self.serial = str(body["serial"])
        self.not_after = float(str(body["not_after"]))
        # Counted from receipt, not from notBefore: the CA backdates notBefore for clock skew.
        received = time.time()
        self.renew_at = received + max(self.not_after - received, 0.0) * RENEW_AT

    def renew_if_due(self, now: float) -> None:
        """Renew at two thirds of the certificate's life; give up only at expiry.

        Raises:
            AgentExit: revoked, or expired without a successful renewal.
        """
        if now >= self.not_after:
            raise AgentExit(
                EXIT_EXPIRED,
                f"certificate {self.serial} expired at {_clock(self.not_after)} and could not be "
                "renewed (control plane unreachable); run `agentcell up` to enrol the cell again",
            )
        if now < self.renew_at:
            return
        pending = self.config.state_dir / "key.pending"
        try:
            new_key = generate_key_and_csr(pending, common_name="agentcell-agent")
            answer = self.transport.request(
                "POST", "/v1/agent/renew", json.dumps({"csr": new_key.csr_pem}).encode()
            )
        except TransportError as exc:
            log.warning(
                "cannot renew certificate %s yet (%s); it expires at %s",
                self.serial,
                exc,
                _clock(self.not_after),
            )
            return
        self._check_identity(answer.status, answer.reason, answer.error)
        if answer.status == 429:
            wait = retry_delay(answer.retry_after, default=RETRY_AFTER_MIN_S)
            self.renew_at = now + wait
            log.warning("renewal refused for now (%s); retrying in %g s", answer.error, wait)
            return
        if answer.status != 200:
            log.warning("renewal refused (%s): %s", answer.reason, answer.error)
            return
        old = self.serial
        self._install(answer.body, pending)
        log.info(
            "renewed certificate %s -> %s, valid until %s", old, self.serial, _clock(self.not_after)
        )

    def _check_identity(self, status: int, reason: str, error: str) -> None:
        if status in (401, 403) and reason in (
            "certificate_revoked",
            "no_client_certificate",
            "not_an_agent",
        ):
            raise AgentExit(
                EXIT_REVOKED,
                f"the control plane no longer accepts this agent's certificate {self.serial} "
                f"({reason}: {error}); exiting. Run `agentcell up` to enrol the cell again",
            )

    # -- reporting ---------------------------------------------------------------------------

    def sample(self, now: float) -> None:
        """Take one sample and buffer it under the next sequence number."""
        metrics = self.collector.sample()
        for group, reason in self.collector.failures.items():
            if group not in self._reported_failures:
                log.warning("cannot read %s counters: %s", group, reason)
                self._reported_failures.add(group)
        self._append({"kind": "metrics", "sampled_at": now, "metrics": metrics})

    def event(self, kind: str, message: str) -> None:
        """Buffer an event; it travels in order with the metrics."""
        self._append(
            {
                "kind": "event",
                "sampled_at": time.time(),
                "event": {"kind": kind, "message": message},
            }
        )

    def _append(self, record: dict[str, object]) -> None:
        sequence = self.next_sequence
        self.next_sequence += 1
        payload = json.dumps({"sequence": sequence, **record}, separators=(",", ":")).encode()
        dropped = self.spool.append(sequence, payload)
        if dropped:
            log.warning(
                "buffer full (%d reports): dropped the oldest %d; %d dropped in all",
                self.config.buffer_max,
                dropped,
                self.spool.dropped,
            )

    def flush(self) -> int:
        """Send the spool oldest first until it is empty or the control plane fails; how many
        reports were acknowledged.

        Raises:
            AgentExit: the certificate was refused.
        """
        sent = 0
        while len(self.spool):
            batch = self.spool.oldest(self.config.batch_max)
            if not batch:
                break
            body = b'{"reports":[' + b",".join(payload for _, payload in batch) + b"]}"
            try:
                answer = self.transport.request("POST", "/v1/agent/reports", body)
            except TransportError as exc:
                self._offline(str(exc))
                return sent
            self._check_identity(answer.status, answer.reason, answer.error)
            if answer.status >= 500:
                self._offline(f"{answer.status} {answer.error}")
                return sent
            if answer.status != 200:
                # A body the server can never accept: resending it would block the spool forever.
                log.error(
                    "control plane refused reports %d..%d (%s): %s; dropping them",
                    batch[0][0],
                    batch[-1][0],
                    answer.reason,
                    answer.error,
                )
                self.spool.acknowledge([sequence for sequence, _ in batch])
                continue
            acknowledged = [int(value) for value in answer.body.get("acknowledged", [])]
            if not acknowledged:
                self._offline("the control plane acknowledged nothing")
                return sent
            self.spool.acknowledge(acknowledged)
            sent += len(acknowledged)
        if not self._online:
            self._online = True
            log.info("control plane reachable again; buffer drained")
        return sent

    def _offline(self, reason: str) -> None:
        if self._online:
            self._online = False
            log.warning("control plane unreachable (%s); buffering reports", reason)

    def heartbeat_if_due(self, now: float) -> None:
        """A heartbeat now and then, with the buffer's size, when the control plane answers."""
        if now - self._last_heartbeat < HEARTBEAT_EVERY_S or not self._online:
            return
        body = json.dumps({"agent_version": VERSION, "buffered": len(self.spool)}).encode()
        try:
            answer = self.transport.request("POST", "/v1/agent/heartbeat", body)
        except TransportError:
            return
        self._check_identity(answer.status, answer.reason, answer.error)
        self._last_heartbeat = now

    # -- the tenant's config ------------------------------------------------------------------

    def poll_config(self) -> bool:
        """Read the tenant's config; whether its version changed. Unreachable or refused, the
        last one read stays in force.

        Raises:
            AgentExit: the certificate was refused.
        """
        try:
            answer = self.transport.request("GET", "/v1/agent/config")
        except TransportError as exc:
            self._config_trouble(f"control plane unreachable ({exc})")
            return False
        self._check_identity(answer.status, answer.reason, answer.error)
        body = answer.body
        raw_config = body.get("config")
        version = body.get("version")
        if answer.status != 200 or not isinstance(version, int) or not isinstance(raw_config, dict):
            self._config_trouble(f"{answer.status} {answer.reason}: {answer.error}")
            return False
        self._config_problem = ""
        if version == self.tenant_config_version:
            return False
        self.tenant_config = {str(key): str(value) for key, value in raw_config.items()}
        self.tenant_config_version = version
        self._write_config(str(body.get("tenant", "")), version)
        log.info("config version %d (%d keys)", version, len(self.tenant_config))
        self.event("config.changed", f"config version {version}")
        return True

    def _write_config(self, tenant: str, version: int) -> None:
        """Replace ``config.json`` whole: a reader sees the old file or the new, never part."""
        target = self.config.tenant_config_file
        staging = target.with_name(target.name + ".pending")
        text = json.dumps(
            {"tenant": tenant, "version": version, "config": self.tenant_config}, sort_keys=True
        )
        descriptor = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(text)
        os.replace(staging, target)

    def _config_trouble(self, problem: str) -> None:
        # Once per kind of trouble: a poll every few seconds must not flood the log.
        if problem.split(" (", 1)[0] != self._config_problem.split(" (", 1)[0]:
            log.warning("cannot read the tenant's config: %s; keeping the last one", problem)
        self._config_problem = problem

    # -- the loop ----------------------------------------------------------------------------

    def run(self) -> int:
        """Enrol, then sample, report and renew until stopped. Returns the exit code."""
        try:
            self.enrol()
            self.event(
                "agent.started", f"reference agent {VERSION}, interval {self.config.interval:g}s"
            )
            next_sample = next_config = time.monotonic()
            while not self.stop.is_set():
                if time.monotonic() >= next_config:
                    # A change is sent at once rather than with the next sample.
                    if self.poll_config():
                        self.flush()
                    next_config = time.monotonic() + self.config.config_poll
                if time.monotonic() >= next_sample:
                    now = time.time()
                    self.renew_if_due(now)
                    self.sample(now)
                    self.flush()
                    self.heartbeat_if_due(now)
                    self.config.alive_file.touch()  # read by health.py
                    next_sample += self.config.interval
                    if next_sample < time.monotonic():  # fell behind: skip ticks, no burst
                        next_sample = time.monotonic()
                self.stop.wait(max(min(next_sample, next_config) - time.monotonic(), 0.0))
            self.flush()
            log.info("stopping; %d reports still buffered", len(self.spool))
            return 0
        except AgentExit as exc:
            (log.info if exc.code == 0 else log.error)("%s", exc.message)
            return exc.code
        except KeygenError as exc:
            log.error("cannot make a key: %s", exc)
            return EXIT_CONFIG
        finally:
            self.transport.close()


def retry_delay(header: str | None, *, default: float, now: float | None = None) -> float:
    """Seconds to wait from a ``Retry-After`` header (seconds or an HTTP date), else
    ``default``; always within RETRY_AFTER_MIN_S..RETRY_AFTER_MAX_S."""
    seconds = default
    if header is not None:
        text = header.strip()
        if text.isdigit():
            seconds = float(text)
        else:
            try:
                when = email.utils.parsedate_to_datetime(text).timestamp()
            except (TypeError, ValueError, IndexError):
                pass  # unparseable: keep the default rather than trust it
            else:
                seconds = when - (time.time() if now is None else now)
    return min(max(seconds, RETRY_AFTER_MIN_S), RETRY_AFTER_MAX_S)


def _clock(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def main() -> None:
    """Console entry point ``agentcell-agent``."""
    try:
        config = AgentConfig.from_environ(os.environ)
        agent = ReferenceAgent(config)
    except (ValueError, OSError) as exc:
        log.error("bad configuration: %s", exc)
        sys.exit(EXIT_CONFIG)

    def _stop(signum: int, _frame: FrameType | None) -> None:
        agent.stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    sys.exit(agent.run())


if __name__ == "__main__":
    main()
