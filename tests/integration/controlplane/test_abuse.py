"""The control plane under abuse, against a real server subprocess over real TLS.

Floods of connections from one peer, peers too slow to handshake or to send a request, reports
with numbers JSON does not have, a spent token retried in a loop, and a renewed certificate
used again. Traffic goes only to loopback and to the server's Unix socket.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import resource
import select
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from agentcell.controlplane.store import MetricRow
from agentcell.identity.ca import SERVER_NAME

from .cp_harness import ControlPlane, Identity

pytestmark = pytest.mark.integration

MiB = 1024 * 1024
FLOOD = 3000

MakePlane = Callable[[Mapping[str, str]], ControlPlane]


def _rss(pid: int) -> int:
    """Resident memory of a process, in bytes, from /proc/<pid>/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def _pid(plane: ControlPlane) -> int:
    assert plane.server.process is not None
    return plane.server.process.pid


def _prometheus(plane: ControlPlane) -> str:
    context = ssl.create_default_context(cafile=str(plane.paths.ca_bundle))
    connection = http.client.HTTPSConnection("127.0.0.1", plane.server.port, context=context)
    try:
        connection.request(
            "GET", "/metrics", headers={"Authorization": f"Bearer {plane.admin.token}"}
        )
        response = connection.getresponse()
        assert response.status == 200
        return response.read().decode()
    finally:
        connection.close()


def _sample(text: str, name: str, **labels: str) -> float:
    """One sample of the exposition, 0 when absent."""
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        metric, _, value = line.rpartition(" ")
        found = dict(re.findall(r'(\w+)="([^"]*)"', metric))
        if metric.split("{")[0] == name and found == labels:
            return float(value)
    return 0.0


def _eventually(check: Callable[[], bool], *, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@contextlib.contextmanager
def _file_limit(at_least: int) -> Iterator[None]:
    """Raise this process's soft file limit for the block (the server inherits its own
    limit at start, so this is only for the test's sockets)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < at_least:
        pytest.skip(f"the hard file limit {hard} is below the {at_least} this test needs")
    if soft != resource.RLIM_INFINITY and soft < at_least:
        resource.setrlimit(resource.RLIMIT_NOFILE, (at_least, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _closed(sock: socket.socket, *, within: float) -> bool:
    """Whether the server closes ``sock`` within ``within`` seconds (reading and dropping
    whatever it sends before that)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        ready, _, _ = select.select([sock], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            continue
        try:
            if not sock.recv(65536):
                return True
        except ssl.SSLWantReadError:
            continue
        except OSError:  # a reset, or TLS ending without close_notify
            return True
    return False


def _tls_client(plane: ControlPlane, identity: Identity | None = None) -> ssl.SSLSocket:
    context = ssl.create_default_context(cafile=str(plane.paths.ca_bundle))
    if identity is not None:
        context.load_cert_chain(identity.cert, identity.key)
    raw = socket.create_connection(("127.0.0.1", plane.server.port), timeout=10)
    return context.wrap_socket(raw, server_hostname=SERVER_NAME)


def test_a_connection_flood_from_one_peer_leaves_the_server_answering(
    make_control_plane: MakePlane,
) -> None:
    # Long handshake timeouts: the flood's admitted connections stay open while we look.
    plane = make_control_plane(
        {"AGENTCELL_TLS_HANDSHAKE_TIMEOUT": "120s", "AGENTCELL_MAX_CONNECTIONS_PER_PEER": "64"}
    )
    plane.enrol("acme", "probe", via="unix")  # the server has done real work before the baseline
    assert plane.call(None, "GET", "/healthz").status == 200
    baseline = _rss(_pid(plane))

    flood: list[socket.socket] = []
    with _file_limit(FLOOD + 1000):
        try:
            for _ in range(FLOOD):
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                flood.append(sock)
                sock.connect(str(plane.paths.agent_socket))
            # This process (uid 0 on the socket) now holds its limit of connections; another
            # client, on TCP, is answered at once, the admin API included.
            started = time.monotonic()
            assert plane.call(None, "GET", "/healthz").status == 200
            assert [c.serial for c in plane.admin.certificates(tenant="acme").certificates]
            assert time.monotonic() - started < 1.0
            during = _prometheus(plane)
            assert _sample(during, "agentcell_connections_open", listener="unix") == 64
            refused = _sample(
                during,
                "agentcell_connections_refused_total",
                listener="unix",
                reason="peer_limit",
            )
            assert refused >= FLOOD - 64 - 1
        finally:
            for sock in flood:
                sock.close()

    _eventually(
        lambda: _sample(_prometheus(plane), "agentcell_connections_open", listener="unix") == 0,
        seconds=10,
        what="the flood's connections to be released",
    )
    after = _rss(_pid(plane))
    assert after - baseline < 30 * MiB, f"RSS {baseline / MiB:.0f} -> {after / MiB:.0f} MiB"
    # Thousands of refusals, a handful of lines (and a count of the rest).
    log = plane.server.log.read_text()
    lines = [line for line in log.splitlines() if "refused a connection" in line]
    assert 0 < len(lines) < 100, len(lines)
    _eventually(
        lambda: "suppressed" in plane.server.log.read_text(),
        seconds=10,
        what="the summary of suppressed log lines",
    )
    assert "Too many open files" not in plane.server.log.read_text()


def test_memory_of_closed_connections_goes_back_to_the_system(
    make_control_plane: MakePlane,
) -> None:
    """1,000 admitted connections at once (the limits raised for it), then closed: the server
    returns to about its size before, instead of keeping its peak."""
    plane = make_control_plane(
        {"AGENTCELL_TLS_HANDSHAKE_TIMEOUT": "120s", "AGENTCELL_MAX_CONNECTIONS_PER_PEER": "2000"}
    )
    assert plane.call(None, "GET", "/healthz").status == 200
    baseline = _rss(_pid(plane))
    held: list[socket.socket] = []
    with _file_limit(3000):
        try:
            for _ in range(1000):
                held.append(socket.create_connection(("127.0.0.1", plane.server.port)))
            _eventually(
                lambda: (
                    _sample(_prometheus(plane), "agentcell_connections_open", listener="tcp")
                    >= 1000
                ),
                seconds=10,
                what="1000 open connections",
            )
            peak = _rss(_pid(plane))
        finally:
            for sock in held:
                sock.close()
    _eventually(
        lambda: _rss(_pid(plane)) - baseline < 30 * MiB,
        seconds=10,
        what=f"RSS back near {baseline / MiB:.0f} MiB (peak {peak / MiB:.0f} MiB)",
    )


def test_slow_peers_are_closed_within_the_timeouts(make_control_plane: MakePlane) -> None:
    plane = make_control_plane(
        {
            "AGENTCELL_TLS_HANDSHAKE_TIMEOUT": "1s",
            "AGENTCELL_REQUEST_HEAD_TIMEOUT": "2s",
            "AGENTCELL_REQUEST_BODY_TIMEOUT": "2s",
            "AGENTCELL_IDLE_TIMEOUT": "3s",
        }
    )
    slack = 5.0

    # Connects and never starts TLS, on either listener.
    with socket.create_connection(("127.0.0.1", plane.server.port)) as silent:
        assert _closed(silent, within=1 + slack)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as silent_unix:
        silent_unix.connect(str(plane.paths.agent_socket))
        assert _closed(silent_unix, within=1 + slack)

    # Finishes TLS (no client certificate) and then says nothing.
    with _tls_client(plane) as idle:
        assert _closed(idle, within=2 + slack)

    # Sends its request head at one byte a second: closed long before it is complete.
    head = b"GET /healthz HTTP/1.1\r\nHost: agentcell-controlplane\r\nX-Slow: " + b"a" * 40
    with _tls_client(plane) as slow:
        sent = 0
        closed = False
        for byte in head:
            try:
                slow.sendall(bytes([byte]))
            except OSError:
                closed = True
                break
            sent += 1
            if _closed(slow, within=1.0):
                closed = True
                break
        assert closed, "a 1 byte/s request head was never cut off"
        assert sent <= 2 + slack, sent

    # A request body at one byte a second: answered 408 and closed.
    with _tls_client(plane) as slow_body:
        slow_body.sendall(
            b"POST /v1/agent/enrol HTTP/1.1\r\nHost: agentcell-controlplane\r\n"
            b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
        )
        answer = b""
        for _ in range(20):
            with contextlib.suppress(OSError):
                slow_body.sendall(b"{")
            ready, _, _ = select.select([slow_body], [], [], 1.0)
            if ready:
                with contextlib.suppress(OSError):
                    answer += slow_body.recv(65536)
                break
        assert answer.startswith(b"HTTP/1.1 408"), answer[:100]
        assert _closed(slow_body, within=slack)

    # A kept-alive connection that goes quiet after an answer is closed at the idle timeout.
    with _tls_client(plane) as kept:
        kept.sendall(b"GET /healthz HTTP/1.1\r\nHost: agentcell-controlplane\r\n\r\n")
        assert kept.recv(65536).startswith(b"HTTP/1.1 200")
        assert _closed(kept, within=3 + slack)

    text = _prometheus(plane)
    assert _sample(text, "agentcell_connection_timeouts_total", phase="tls_handshake") >= 2
    assert _sample(text, "agentcell_connection_timeouts_total", phase="request_head") >= 2
    assert _sample(text, "agentcell_connection_timeouts_total", phase="request_body") == 1
    # After all that, the server serves as before.
    assert plane.call(None, "GET", "/healthz").status == 200


def _agentcell(plane: ControlPlane, *args: str) -> subprocess.CompletedProcess[str]:
    """The real CLI, as a user runs it."""
    return subprocess.run(
        [str(Path(sys.executable).with_name("agentcell")), *args, "--url", plane.server.url],
        env={**os.environ, "AGENTCELL_HOME": str(plane.home)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_reports_with_numbers_json_does_not_have_are_refused(
    control_plane: ControlPlane,
) -> None:
    plane = control_plane
    identity = plane.enrol("acme", "probe")
    other = plane.enrol("other", "probe")
    assert plane.report(identity, [1]).status == 200
    assert plane.report(other, [1]).status == 200

    def send(sequence: str, value: str, sampled_at: str = "1800000000") -> int:
        # Written out, not json.dumps'd: the point is text that no JSON encoder would make.
        report = f'"sequence": {sequence}, "kind": "metrics", "sampled_at": {sampled_at}'
        body = f'{{"reports": [{{{report}, "metrics": {{"x": {value}}}}}]}}'

        transport = plane.transport(identity)
        try:
            return transport.request("POST", "/v1/agent/reports", body.encode()).status
        finally:
            transport.close()

    for value in ("NaN", "Infinity", "-Infinity", "1e999", "-1e999"):
        assert send("2", value) == 422, value
    assert send("2", "1", sampled_at="1e999") == 422
    for sequence in (2**62, 2**53, 2**63 + 1):
        assert send(str(sequence), "1") == 422, sequence
    assert send("3", "3") == 200  # a proper report still goes through
    store = plane.store()
    try:
        assert store.stored_sequences("acme", "probe") == [1, 3]
        assert [a.last_sequence for a in store.agents(tenant="acme")] == [3]
        # What an older server could have stored: the readers must survive it.
        store.store_reports(
            [
                MetricRow(
                    tenant="acme",
                    agent="probe",
                    sequence=sequence,
                    sampled_at=1800000000.0,
                    metrics={"x": value},
                )
                for sequence, value in ((4, float("nan")), (5, float("inf")))
            ],
            (),
            now=time.time(),
        )
    finally:
        store.close()

    shown = _agentcell(plane, "metrics", "x")
    assert shown.returncode == 0, shown.stderr
    assert "acme/probe" in shown.stdout
    assert "other/probe" in shown.stdout
    listing = _agentcell(plane, "metrics", "x", "--json")
    assert listing.returncode == 0, listing.stderr
    points = {
        f"{s['tenant']}/{s['agent']}": [p[2] for p in s["points"]]
        for s in json.loads(listing.stdout)["items"]
    }
    assert points == {"acme/probe": [1.0, 3.0], "other/probe": [1.0]}


def _enrol_body(plane: ControlPlane, token: str) -> bytes:
    key, _ = plane.new_key("refused")
    return json.dumps({"token": token, "csr": plane.csr(key)}).encode()


def test_refused_enrolments_are_one_event_per_window(make_control_plane: MakePlane) -> None:
    plane = make_control_plane(
        {"AGENTCELL_ENROL_REFUSAL_WINDOW": "2s", "AGENTCELL_ENROL_BURST": "10000"}
    )
    token = plane.admin.join_token("acme", "probe").token
    body = _enrol_body(plane, token)
    transport = plane.transport(None)

    def refused_events() -> list[str]:
        events = plane.admin.events(tenant="acme", limit=1000).events
        return [e.message for e in events if e.kind == "enrolment.refused"]

    try:
        assert transport.request("POST", "/v1/agent/enrol", body).status == 200
        for _ in range(300):  # a cell retrying its spent token in a loop
            answer = transport.request("POST", "/v1/agent/enrol", body)
            assert answer.status == 403
            assert answer.reason == "used_token"
        _eventually(lambda: len(refused_events()) == 1, seconds=10, what="the first summary")
        assert refused_events() == [
            "300 refused enrolments from 127.0.0.1 in the last 2 s (used_token: 300)"
        ]
        for _ in range(20):
            assert transport.request("POST", "/v1/agent/enrol", body).status == 403
        _eventually(lambda: len(refused_events()) == 2, seconds=10, what="the next window")
        assert refused_events()[1].startswith("20 refused enrolments from 127.0.0.1")
    finally:
        transport.close()
    text = _prometheus(plane)
    assert _sample(text, "agentcell_enrol_failures_total", reason="used_token") == 320
    events = plane.admin.events(tenant="acme", limit=1000).events
    assert len(events) == 3  # enrolled, and two summaries for 320 refusals


def test_enrolment_attempts_are_rate_limited_per_peer(make_control_plane: MakePlane) -> None:
    plane = make_control_plane({"AGENTCELL_ENROL_BURST": "3", "AGENTCELL_ENROL_RATE": "1"})
    body = _enrol_body(plane, "acjt_guessed")
    for _ in range(3):
        assert plane.call(None, "POST", "/v1/agent/enrol", json.loads(body)).status == 403
    connection = plane.transport(None)._connect()
    try:
        connection.request(
            "POST", "/v1/agent/enrol", body=body, headers={"Content-Type": "application/json"}
        )
        response = connection.getresponse()
        assert response.status == 429
        assert json.loads(response.read())["reason"] == "rate_limited"
        assert int(response.headers["Retry-After"]) >= 1
    finally:
        connection.close()
    # Another peer (this process's uid, on the agents' socket) has its own allowance.
    other = plane.call(None, "POST", "/v1/agent/enrol", json.loads(body), via="unix")
    assert other.status == 403
    assert other.reason == "unknown_token"
    text = _prometheus(plane)
    assert _sample(text, "agentcell_enrol_failures_total", reason="rate_limited") == 1


def test_renewal_revokes_the_certificate_it_replaces(control_plane: ControlPlane) -> None:
    plane = control_plane
    old = plane.enrol("acme", "probe")
    assert plane.report(old, [1]).status == 200
    key, key_path = plane.new_key("renewed")
    answer = plane.call(old, "POST", "/v1/agent/renew", {"csr": plane.csr(key)})
    assert answer.status == 200
    cert = key_path.with_suffix(".pem")
    cert.write_text(answer.body["certificate"])
    new = Identity(cert=cert, key=key_path, serial=answer.body["serial"])

    refused = plane.report(old, [2])
    assert refused.status == 403
    assert refused.reason == "certificate_revoked"
    assert plane.report(new, [2]).status == 200
    records = {c.serial: c for c in plane.admin.certificates(tenant="acme").certificates}
    assert records[old.serial].revoke_reason == f"superseded by renewal ({new.serial})"
    assert records[new.serial].revoked_at is None


def test_enrolment_removes_the_spent_token_from_the_cell_s_directory(
    control_plane: ControlPlane,
) -> None:
    plane = control_plane
    token = plane.admin.join_token("acme", "probe").token
    directory = plane.paths.cell_identity_dir("acme", "probe")
    directory.mkdir(parents=True)
    (directory / "token").write_text(token + "\n")
    (directory / "ca.pem").write_bytes(plane.paths.ca_bundle.read_bytes())
    if os.geteuid() == 0:
        # As `up` leaves it: the cell's uid owns a read-only directory; the server is root.
        for path in (directory / "token", directory):
            os.chown(path, 1001, 1001)
        (directory / "token").chmod(0o400)
        directory.chmod(0o500)
    try:
        key, _ = plane.new_key("cell")
        answer = plane.call(
            None, "POST", "/v1/agent/enrol", {"token": token, "csr": plane.csr(key)}, via="unix"
        )
        assert answer.status == 200
        assert sorted(p.name for p in directory.iterdir()) == ["ca.pem"]
    finally:
        directory.chmod(0o700)
