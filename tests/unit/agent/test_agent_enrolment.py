"""Enrolment as a cell lives it: no token, a refused token, and a control plane that says
"not now" (429 with Retry-After) before it says yes; then following the tenant's config.

The control plane here is a small scripted HTTPS server in a thread: real TLS with a
certificate from a real agentcell CA, real HTTP, and a real certificate signed for the
agent's CSR, so the agent runs its own code end to end.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import http.server
import itertools
import json
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from agentcell.agent.lean import StopSignal
from agentcell.agent.main import (
    EXIT_ENROL_REFUSED,
    RETRY_AFTER_MAX_S,
    RETRY_AFTER_MIN_S,
    AgentConfig,
    AgentExit,
    ReferenceAgent,
    retry_delay,
)
from agentcell.identity.ca import CertificateAuthority, init_ca
from agentcell.identity.spiffe import parse_spiffe_id

TRUST_DOMAIN = "test.local"
SPIFFE_ID = f"spiffe://{TRUST_DOMAIN}/tenant/demo/agent/reporter"

# What the scripted server answers: status, headers, body (or a function of the request body).
Scripted = tuple[int, dict[str, str], Callable[[dict[str, str]], dict[str, object]]]


@dataclass
class Plane:
    """The scripted control plane: its answers in order, and what it was sent, when."""

    ca: CertificateAuthority
    port: int
    answers: list[Scripted] = field(default_factory=list)
    received: list[tuple[float, str, dict[str, str]]] = field(default_factory=list)

    def issue(self, request: dict[str, str]) -> dict[str, object]:
        """A real certificate for the CSR the agent sent."""
        issued = self.ca.sign_request(
            request["csr"],
            parse_spiffe_id(SPIFFE_ID, trust_domain=TRUST_DOMAIN),
            lifetime=dt.timedelta(hours=1),
        )
        return {
            "certificate": issued.pem,
            "ca_certificate": self.ca.certificate_pem,
            "spiffe_id": SPIFFE_ID,
            "serial": issued.serial,
            "not_before": issued.not_before.timestamp(),
            "not_after": issued.not_after.timestamp(),
            "next_sequence": 7,
        }


@pytest.fixture
def plane(tmp_path: Path) -> Iterator[Plane]:
    ca = init_ca(tmp_path / "state", trust_domain=TRUST_DOMAIN)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(ca.files.server_cert, ca.files.server_key)
    holder: list[Plane] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            self._answer({})

        def do_POST(self) -> None:
            self._answer(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))

        def _answer(self, body: dict[str, str]) -> None:
            script = holder[0]
            script.received.append((time.monotonic(), self.path, body))
            status, headers, make = script.answers.pop(0)
            raw = json.dumps(make(body)).encode()
            self.send_response(status)
            for name, value in {**headers, "Content-Type": "application/json"}.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.socket = context.wrap_socket(server.socket, server_side=True)
    holder.append(Plane(ca=ca, port=server.server_address[1]))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield holder[0]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture
def agents() -> Iterator[list[ReferenceAgent]]:
    """Agents made by a test; their connections are closed afterwards."""
    made: list[ReferenceAgent] = []
    yield made
    for agent in made:
        agent.transport.close()


def _agent(
    tmp_path: Path, plane: Plane, made: list[ReferenceAgent], *, token: str | None = "tok-123"
) -> ReferenceAgent:
    identity = tmp_path / "identity"
    identity.mkdir(parents=True)
    (identity / "ca.pem").write_text(plane.ca.certificate_pem)
    if token is not None:
        (identity / "token").write_text(token + "\n")
    (tmp_path / "host").mkdir()
    config = AgentConfig.from_environ(
        {
            "AGENTCELL_CONTROL_PLANE": f"https://127.0.0.1:{plane.port}",
            "AGENTCELL_IDENTITY_DIR": str(identity),
            "AGENTCELL_STATE_DIR": str(tmp_path / "agent"),
            "AGENTCELL_HOST_ROOT": str(tmp_path / "host"),
        }
    )
    agent = ReferenceAgent(config, stop=StopSignal())
    made.append(agent)
    return agent


def _error(message: str) -> Callable[[dict[str, str]], dict[str, object]]:
    reason, _, error = message.partition(": ")
    return lambda _request: {"error": error, "reason": reason}


def test_a_missing_token_says_it_was_used_and_that_up_issues_another(
    tmp_path: Path, plane: Plane, agents: list[ReferenceAgent], capsys: pytest.CaptureFixture[str]
) -> None:
    agent = _agent(tmp_path, plane, agents, token=None)
    assert agent.run() == EXIT_ENROL_REFUSED == 3
    (line,) = capsys.readouterr().err.splitlines()
    assert "ERROR no join token at" in line
    assert "already used" in line and "never written" in line
    assert "run `agentcell up` for this cell to issue a new one" in line
    assert plane.received == []  # nothing to ask the control plane with


def test_an_empty_or_unreadable_token_is_the_same_exit(
    tmp_path: Path, plane: Plane, agents: list[ReferenceAgent]
) -> None:
    agent = _agent(tmp_path / "empty", plane, agents, token="")
    with pytest.raises(AgentExit, match="no join token") as empty:
        agent.enrol()
    assert empty.value.code == EXIT_ENROL_REFUSED
    unreadable = _agent(tmp_path / "dir", plane, agents, token=None)
    (unreadable.config.token_file).mkdir()  # root reads any mode; a directory it cannot read
    with pytest.raises(AgentExit, match=r"cannot read the join token .*agentcell up") as cannot:
        unreadable.enrol()
    assert cannot.value.code == EXIT_ENROL_REFUSED


def test_a_refused_token_ends_the_agent_at_once(
    tmp_path: Path, plane: Plane, agents: list[ReferenceAgent]
) -> None:
    plane.answers.append((403, {}, _error("used_token: the join token was already used")))
    agent = _agent(tmp_path, plane, agents)
    with pytest.raises(AgentExit, match=r"403 used_token.*agentcell up") as refused:
        agent.enrol()
    assert refused.value.code == EXIT_ENROL_REFUSED
    assert len(plane.received) == 1


def test_rate_limited_enrolment_waits_retry_after_and_then_enrols(
    tmp_path: Path, plane: Plane, agents: list[ReferenceAgent], capsys: pytest.CaptureFixture[str]
) -> None:
    limited = _error("rate_limited: too many enrolment attempts from 127.0.0.1")
    plane.answers += [
        (429, {"Retry-After": "1"}, limited),
        (429, {"Retry-After": "1"}, limited),
        (200, {}, plane.issue),
    ]
    agent = _agent(tmp_path, plane, agents)
    agent.enrol()

    times = [at for at, _, _ in plane.received]
    assert [path for _, path, _ in plane.received] == ["/v1/agent/enrol"] * 3
    assert all(later - earlier >= 0.95 for earlier, later in itertools.pairwise(times))
    # The same token and key each time: a 429 spends nothing.
    assert len({json.dumps(body, sort_keys=True) for _, _, body in plane.received}) == 1
    assert agent.next_sequence == 7
    assert agent.config.cert_file.exists() and agent.config.key_file.exists()
    log = capsys.readouterr().err
    assert log.count("enrolment refused for now (429 rate_limited)") == 2
    assert "retrying in 1 s" in log
    assert "enrolled as " + SPIFFE_ID in log


def test_a_busy_control_plane_is_retried_too(
    tmp_path: Path, plane: Plane, agents: list[ReferenceAgent]
) -> None:
    plane.answers += [
        (503, {}, _error("storage_unavailable: database is locked")),
        (200, {}, plane.issue),
    ]
    agent = _agent(tmp_path, plane, agents)
    agent.enrol()
    assert len(plane.received) == 2


def test_a_stop_during_the_wait_ends_enrolment_cleanly(
    tmp_path: Path, plane: Plane, agents: list[ReferenceAgent]
) -> None:
    plane.answers.append((429, {"Retry-After": "120"}, _error("rate_limited: slow down")))
    agent = _agent(tmp_path, plane, agents)
    threading.Timer(0.3, agent.stop.set).start()
    started = time.monotonic()
    with pytest.raises(AgentExit, match="stopped before enrolment") as stopped:
        agent.enrol()
    assert stopped.value.code == 0
    assert time.monotonic() - started < 10


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("3", 3.0),
        (" 12 ", 12.0),
        ("0", RETRY_AFTER_MIN_S),  # never a busy loop
        ("86400", RETRY_AFTER_MAX_S),  # never parked past a token's life
        (None, 4.0),
        ("soon", 4.0),
        ("-5", 4.0),
    ],
)
def test_retry_after_is_read_and_bounded(header: str | None, expected: float) -> None:
    assert retry_delay(header, default=4.0) == expected


def test_retry_after_as_an_http_date() -> None:
    now = time.time()
    header = email.utils.formatdate(now + 20, usegmt=True)
    assert 18 <= retry_delay(header, default=4.0, now=now) <= 21
    past = email.utils.formatdate(now - 100, usegmt=True)
    assert retry_delay(past, default=4.0, now=now) == RETRY_AFTER_MIN_S


def _config(version: int, **config: str) -> Scripted:
    return (200, {}, lambda _request: {"tenant": "demo", "version": version, "config": config})


def test_the_tenant_s_config_is_kept_on_file_and_each_new_version_is_an_event(
    tmp_path: Path, plane: Plane, agents: list[ReferenceAgent]
) -> None:
    plane.answers += [
        (200, {}, plane.issue),
        _config(3, level="debug"),
        _config(3, level="debug"),
        (503, {}, _error("storage_unavailable: database is locked")),
        _config(5, level="info"),
    ]
    agent = _agent(tmp_path, plane, agents)
    agent.enrol()
    stored = agent.config.tenant_config_file

    assert agent.poll_config() is True
    assert json.loads(stored.read_text()) == {
        "tenant": "demo",
        "version": 3,
        "config": {"level": "debug"},
    }
    assert agent.poll_config() is False  # the same version: no event
    assert agent.poll_config() is False  # refused for now: the last one stays
    assert agent.tenant_config == {"level": "debug"}
    assert json.loads(stored.read_text())["version"] == 3
    assert agent.poll_config() is True
    assert agent.tenant_config == {"level": "info"}
    assert json.loads(stored.read_text())["config"] == {"level": "info"}
    assert [p.name for p in stored.parent.iterdir() if p.name.startswith("config")] == [
        "config.json"
    ]
    events = [json.loads(payload)["event"] for _, payload in agent.spool.oldest(10)]
    assert events == [
        {"kind": "config.changed", "message": "config version 3"},
        {"kind": "config.changed", "message": "config version 5"},
    ]
    assert [path for _, path, _ in plane.received][1:] == ["/v1/agent/config"] * 4


def test_a_config_poll_slower_than_five_seconds_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="AGENTCELL_CONFIG_POLL=30"):
        AgentConfig.from_environ({"AGENTCELL_CONFIG_POLL": "30"})
    assert AgentConfig.from_environ({}).config_poll == 5.0
