"""The host service as a user meets it: a real ``agentcell daemon serve`` process over real
TLS (verified against its own CA) and its Unix socket, driving the real sandbox engine on the
real Docker Engine."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import ssl
import stat
import subprocess
import sys
import time
from pathlib import Path

import docker
import pytest

from agentcell.daemon.app import ROUTES

from .conftest import MakeDaemon, TwoTenants
from .daemon_harness import AGENTCELL, DaemonClient, new_tenant, template_yaml

FILE = "/tmp/secret.txt"


def _create(client: DaemonClient, template: str = "py", **extra: object) -> dict[str, object]:
    reply = client.request("POST", "/v1/sandboxes", json_body={"template": template, **extra})
    assert reply.status == 201, reply.body
    body: dict[str, object] = reply.json()
    return body


def test_tls_socket_record_and_file_modes(make_daemon: MakeDaemon) -> None:
    daemon = make_daemon()
    assert daemon.client(None).request("GET", "/healthz").json() == {"ok": True}
    assert daemon.client(None, via="unix").request("GET", "/healthz").status == 200
    # Another CA's client refuses the service: the certificate really is checked.
    other = ssl.create_default_context()
    with (
        pytest.raises(ssl.SSLCertVerificationError),
        other.wrap_socket(
            __import__("socket").create_connection(("127.0.0.1", daemon.port)),
            server_hostname="127.0.0.1",
        ),
    ):
        pass
    record = json.loads((daemon.directory / "daemon.json").read_text())
    assert record == {
        "pid": daemon.process.process.pid if daemon.process.process else 0,
        "url": daemon.url,
        "socket": str(daemon.socket),
        "ca": str(daemon.ca),
    }
    assert stat.S_IMODE(os.stat(daemon.socket).st_mode) == 0o660
    assert stat.S_IMODE(os.stat(daemon.directory / "admin.token").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(daemon.directory / "daemon.db").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(daemon.directory).st_mode) == 0o700
    status = daemon.cli("daemon", "status")
    assert status.returncode == 0 and daemon.url in status.stdout

    assert daemon.process.stop() == 0
    assert not (daemon.directory / "daemon.json").exists()
    assert not daemon.socket.exists()
    assert daemon.cli("daemon", "status").returncode == 1


def test_the_unix_socket_holds_each_peer_to_its_connection_limit(
    make_daemon: MakeDaemon,
) -> None:
    daemon = make_daemon(env={"AGENTCELL_MAX_CONNECTIONS_PER_PEER": "4"})
    held = []
    try:
        for _ in range(4):  # idle connections that never send a request head
            sock = socket.socket(socket.AF_UNIX)
            sock.connect(str(daemon.socket))
            held.append(sock)
        over = socket.socket(socket.AF_UNIX)
        over.connect(str(daemon.socket))
        held.append(over)
        over.settimeout(10)
        # The fifth from this uid is closed at once, before a byte of HTTP.
        with contextlib.suppress(ConnectionResetError):
            assert over.recv(1) == b""
    finally:
        for sock in held:
            sock.close()
    # The places are freed when they close: the same uid is served again.
    deadline = time.monotonic() + 10
    while True:
        try:
            reply = daemon.client(None, via="unix").request("GET", "/healthz")
        except OSError:
            reply = None
        if reply is not None and reply.status == 200:
            break
        assert time.monotonic() < deadline, "the socket did not serve again"
        time.sleep(0.1)


def test_a_second_service_on_the_same_state_is_refused(make_daemon: MakeDaemon) -> None:
    daemon = make_daemon()
    pid = daemon.process.process.pid if daemon.process.process else 0
    second = subprocess.run(
        [AGENTCELL, "daemon", "serve", "--listen", "127.0.0.1:1", "--no-network-services"],
        env=daemon.env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert second.returncode == 3
    assert f"pid {pid}" in second.stderr and daemon.url in second.stderr
    # The first one is untouched: its socket and record are still there and it serves.
    assert daemon.client(None, via="unix").request("GET", "/healthz").status == 200
    assert (daemon.directory / "daemon.json").exists()


def test_openapi_shows_each_route_with_its_audience(make_daemon: MakeDaemon) -> None:
    daemon = make_daemon()
    document = daemon.client(None).request("GET", "/openapi.json").json()
    for route in ROUTES:
        operation = document["paths"][route.path][route.method.lower()]
        assert operation["x-agentcell-audience"] == route.audience


def test_tokens_are_refused_outside_their_audience(two_tenants: TwoTenants) -> None:
    daemon = two_tenants.daemon
    for route in ROUTES:
        path = route.path.replace("{id}", "sbx-0000000000000000").replace("{cid}", "cmd-00")
        if route.audience == "public":
            continue
        anonymous = daemon.client(None).request(route.method, path, json_body={})
        assert anonymous.status == 401, (route.path, anonymous.body)
        forged = daemon.client("acs_" + "x" * 43).request(route.method, path, json_body={})
        assert forged.status == 401, route.path
        if route.audience == "admin":
            tenant = two_tenants.client_a.request(route.method, path, json_body={})
            assert tenant.status == 401 and tenant.json()["reason"] == "admin_only", route.path


def test_tenant_b_is_refused_on_tenant_a_sandbox_on_every_route(two_tenants: TwoTenants) -> None:
    a, b = two_tenants.client_a, two_tenants.client_b
    sandbox = _create(a)
    sandbox_id = str(sandbox["id"])
    written = a.request("PUT", "/v1/sandboxes/" + sandbox_id + "/files", query={"path": FILE},
                        body=b"tenant a only\n")  # fmt: skip
    assert written.status == 200, written.body
    started = a.request(
        "POST", f"/v1/sandboxes/{sandbox_id}/commands",
        json_body={"argv": ["sleep", "300"], "background": True},
    )  # fmt: skip
    assert started.status == 200, started.body
    command_id = started.json()["id"]
    unknown = b.request("GET", "/v1/sandboxes/sbx-0123456789abcdef").json()

    bodies: dict[str, object] = {
        "set_timeout": {"timeout_s": 60},
        "run_command": {"argv": ["cat", FILE]},
    }
    checked: set[str] = set()
    for route in ROUTES:
        if route.audience != "tenant" or "{id}" not in route.path:
            continue
        path = route.path.replace("{id}", sandbox_id).replace("{cid}", command_id)
        query = {"path": FILE} if any(q.name == "path" for q in route.query) else None
        if route.body == "raw":
            reply = b.request(route.method, path, query=query, body=b"overwritten by b\n")
        else:
            reply = b.request(route.method, path, query=query, json_body=bodies.get(route.handler))
        assert reply.status == 404, (route.method, route.path, reply.body)
        answer = reply.json()
        # Exactly what an unknown id gets: no oracle.
        assert answer == {**unknown, "error": answer["error"]}, route.path
        assert sandbox_id in answer["error"] or "sbx-" in answer["error"]
        checked.add(route.handler)

    # The routes without a sandbox id: B sees and makes only its own.
    listed = b.request("GET", "/v1/sandboxes").json()["items"]
    assert sandbox_id not in [item["id"] for item in listed]
    templates = b.request("GET", "/v1/templates").json()["items"]
    assert {t["tenant"] for t in templates} == {two_tenants.b}
    refused = b.request(
        "POST", "/v1/sandboxes", json_body={"template": "py", "tenant": two_tenants.a}
    )
    assert refused.status == 400 and refused.json()["reason"] == "tenant_not_allowed"
    own = _create(b)
    assert own["tenant"] == two_tenants.b
    checked |= {"list_sandboxes", "templates", "create_sandbox"}
    tenant_routes = {r.handler for r in ROUTES if r.audience == "tenant"}
    assert checked == tenant_routes, f"routes not checked: {tenant_routes - checked}"

    # A's sandbox, file and command are as A left them.
    assert a.request("GET", f"/v1/sandboxes/{sandbox_id}").json()["state"] == "running"
    content = a.request("GET", f"/v1/sandboxes/{sandbox_id}/files", query={"path": FILE})
    assert content.body == b"tenant a only\n"
    command = a.request("GET", f"/v1/sandboxes/{sandbox_id}/commands/{command_id}").json()
    assert command["state"] == "running"


def test_a_sandbox_from_create_to_kill(two_tenants: TwoTenants) -> None:
    a = two_tenants.client_a
    sandbox = _create(a)
    sandbox_id = str(sandbox["id"])
    assert sandbox["warm"] is True and sandbox["tenant"] == two_tenants.a
    script = "for i in $(seq 1 200); do echo line $i; done; echo oops >&2; exit 7"
    frames = a.request(
        "POST", f"/v1/sandboxes/{sandbox_id}/commands", json_body={"shell": script}
    ).frames()
    assert [f["seq"] for f in frames] == list(range(len(frames)))
    assert frames[0]["type"] == "start" and frames[-1]["type"] == "end"
    assert frames[-1]["exit_code"] == 7 and frames[-1]["reason"] == "exited"
    import base64

    out = b"".join(base64.b64decode(f["data"]) for f in frames if f["type"] == "stdout")
    assert out.decode().splitlines() == [f"line {i}" for i in range(1, 201)]
    command_id = frames[0]["command"]
    # Resuming after frame N gives exactly the frames after it.
    resumed = a.request(
        "GET", f"/v1/sandboxes/{sandbox_id}/commands/{command_id}/output", query={"after": "5"}
    ).frames()
    assert resumed == frames[6:]

    # A file streamed in chunks (the body is never read whole) comes back the same.
    payload = os.urandom(8 * 1024 * 1024)
    chunks = (payload[i : i + 65536] for i in range(0, len(payload), 65536))
    written = a.request("PUT", f"/v1/sandboxes/{sandbox_id}/files",
                        query={"path": "/tmp/blob"}, body=chunks)  # fmt: skip
    assert written.json() == {"path": "/tmp/blob", "size": len(payload)}
    assert a.request("GET", f"/v1/sandboxes/{sandbox_id}/files",
                     query={"path": "/tmp/blob"}).body == payload  # fmt: skip
    listing = a.request("GET", f"/v1/sandboxes/{sandbox_id}/files/list", query={"path": "/tmp"})
    assert "blob" in [item["name"] for item in listing.json()["items"]]
    removed = a.request("DELETE", f"/v1/sandboxes/{sandbox_id}/files", query={"path": "/tmp/blob"})
    assert removed.status == 204

    assert a.request("DELETE", f"/v1/sandboxes/{sandbox_id}").status == 204
    after = a.request("GET", f"/v1/sandboxes/{sandbox_id}")
    assert after.status == 404 or after.json()["state"] == "killed"
    gone = a.request("POST", f"/v1/sandboxes/{sandbox_id}/commands", json_body={"argv": ["true"]})
    assert gone.status in (404, 409)


def test_bad_input_gets_one_clear_error_and_the_service_keeps_serving(
    two_tenants: TwoTenants,
) -> None:
    a = two_tenants.client_a
    sandbox_id = str(_create(a)["id"])
    base = f"/v1/sandboxes/{sandbox_id}"
    cases = [
        (a.request("POST", "/v1/sandboxes", json_body={"template": "nope"}), 404),
        (a.request("POST", "/v1/sandboxes", json_body={"template": "py", "timeout_s": 3600}), 400),
        (a.request("POST", "/v1/sandboxes", body=b"{not json", headers={}), 422),
        (a.request("POST", "/v1/sandboxes", json_body={"template": "py", "x": 1}), 422),
        (a.request("POST", f"{base}/timeout", json_body={"timeout_s": -1}), 422),
        (a.request("GET", f"{base}/files", query={"path": "/etc/passwd"}), 400),
        (a.request("GET", f"{base}/files", query={"path": "/tmp/../etc/passwd"}), 400),
        (a.request("GET", f"{base}/files", query={"path": "/tmp/absent"}), 404),
        (a.request("GET", f"{base}/files"), 400),
        (a.request("GET", f"{base}/commands/cmd-00", query={"wait": "x"}), 400),
        (a.request("POST", "/v1/sandboxes", body=b"{" + b" " * (5 * 1024 * 1024) + b"}"), 413),
        (a.request("GET", "/v1/unknown"), 404),
    ]
    for reply, status in cases:
        assert reply.status == status, reply.body
        body = reply.json()
        assert set(body) == {"error", "reason", "fix"} and body["error"] and body["reason"]
        assert b"Traceback" not in reply.body
    assert a.request("GET", base).json()["state"] == "running"


def test_an_upload_larger_than_the_tmpfs_is_refused_and_nothing_is_left(
    make_daemon: MakeDaemon,
) -> None:
    tenant = new_tenant("du")
    daemon = make_daemon(
        templates={"t.yaml": template_yaml(tenant, tmpfs_mib=16)}, tenants=(tenant,)
    )
    client = daemon.client(daemon.token(tenant))
    sandbox_id = str(_create(client)["id"])
    chunk = b"\0" * (1024 * 1024)
    reply = client.request("PUT", f"/v1/sandboxes/{sandbox_id}/files",
                           query={"path": "/tmp/big"}, body=(chunk for _ in range(64)))  # fmt: skip
    assert reply.status == 413, reply.body
    assert reply.json()["reason"] == "too_large"
    listed = client.request("GET", f"/v1/sandboxes/{sandbox_id}/files/list", query={"path": "/tmp"})
    assert "big" not in [item["name"] for item in listed.json()["items"]]
    assert client.request("GET", "/healthz").status == 200


def test_sigterm_keeps_sandboxes_and_the_next_start_adopts_them(
    two_tenants: TwoTenants, docker_client: docker.DockerClient
) -> None:
    daemon, a = two_tenants.daemon, two_tenants.client_a
    sandbox = _create(a)
    sandbox_id = str(sandbox["id"])
    assert daemon.process.stop() == 0
    container = docker_client.containers.get(str(sandbox["cell"]))
    assert container.status == "running"
    daemon.process.start()
    again = a.request("GET", f"/v1/sandboxes/{sandbox_id}")
    assert again.status == 200 and again.json()["state"] == "running"
    frames = a.request(
        "POST", f"/v1/sandboxes/{sandbox_id}/commands", json_body={"argv": ["echo", "back"]}
    ).frames()
    assert frames[-1]["exit_code"] == 0


def test_a_revoked_token_is_refused_at_once(two_tenants: TwoTenants) -> None:
    daemon = two_tenants.daemon
    listing = daemon.cli("daemon", "token", "list", "-o", "json")
    assert two_tenants.token_a not in listing.stdout  # only digests are kept
    items = json.loads(listing.stdout)["items"]
    token_id = next(item["id"] for item in items if item["tenant"] == two_tenants.a)
    assert two_tenants.client_a.request("GET", "/v1/sandboxes").status == 200
    revoked = daemon.cli("daemon", "token", "revoke", token_id)
    assert revoked.returncode == 0, revoked.stderr
    time.sleep(0.1)
    assert two_tenants.client_a.request("GET", "/v1/sandboxes").status == 401
    again = daemon.cli("daemon", "token", "revoke", token_id)
    assert again.returncode == 2 and again.stderr.startswith("error:")
    raw = (daemon.directory / "daemon.db").read_bytes()
    assert two_tenants.token_b.encode() not in raw


def test_the_network_services_run_inside_the_service(make_daemon: MakeDaemon) -> None:
    daemon = make_daemon(network_services=True)
    assert daemon.client(None).request("GET", "/healthz").status == 200
    time.sleep(2)  # a few polls of the engine's tenant networks
    assert daemon.process.running
    assert "network services stopped" not in daemon.process.log.read_text()
    assert daemon.process.stop() == 0


def test_the_thin_path_up_ps_down_through_the_admin_routes(make_daemon: MakeDaemon) -> None:
    tenant = new_tenant("dt")
    daemon = make_daemon(tenants=(tenant,))
    admin = daemon.admin()
    spec = (Path(__file__).resolve().parents[3] / "examples" / "sandbox.yaml").read_text()
    spec = spec.replace("tenant: demo", f"tenant: {tenant}")
    up = admin.request(
        "POST", "/v1/admin/cells/up", json_body={"files": [{"name": "sandbox.yaml", "text": spec}]}
    )
    assert up.status == 200, up.body
    (item,) = up.json()["items"]
    assert (item["tenant"], item["agent"], item["action"]) == (tenant, "sandbox", "created")
    listed = admin.request("GET", "/v1/admin/cells", query={"tenant": tenant}).json()["items"]
    assert [(c["tenant"], c["agent"], c["state"]) for c in listed] == [
        (tenant, "sandbox", "running")
    ]
    refused = admin.request(
        "POST", "/v1/admin/cells/up",
        json_body={"files": [{"name": "bad.yaml", "text": spec.replace("cpus: 0.5", "cpus: x")}]},
    )  # fmt: skip
    assert refused.status == 400 and "bad.yaml" in refused.json()["error"]
    down = admin.request(
        "POST", "/v1/admin/cells/down", json_body={"tenant": tenant, "name": "sandbox"}
    )
    assert down.json() == {"tenant": tenant, "agent": "sandbox", "removed": True}
    assert admin.request("GET", "/v1/admin/cells", query={"tenant": tenant}).json()["items"] == []


MANY_PROBLEMS = """\
apiVersion: agentcell/v1
kind: Agent
metadata: {name: bad, tenant: thin}
spec:
  image: agentcell/sandbox:0.1.0
  security:
    privileged: true
    capabilities: {add: [SYS_ADMIN]}
  mounts:
    - {source: /var/run/docker.sock, target: /var/run/docker.sock}
"""
REFUSED = """\
apiVersion: agentcell/v1
kind: Agent
metadata: {name: refused, tenant: thin}
spec:
  image: agentcell/sandbox:0.1.0
  security:
    capabilities: [SYS_ADMIN]
    no_new_privileges: false
"""
# The thin path alone: exit 99 if it would hand the command line to the full one.
THIN_ONLY = (
    "import sys; from agentcell.cli.fast import dispatch; "
    "code = dispatch(sys.argv[1:]); sys.exit(99 if code is None else code)"
)


@pytest.mark.parametrize("text", [MANY_PROBLEMS, REFUSED], ids=["three-problems", "refused"])
def test_the_thin_path_words_a_refused_spec_as_the_full_command_line(
    make_daemon: MakeDaemon, tmp_path: Path, text: str
) -> None:
    daemon = make_daemon()
    spec = tmp_path / "spec.yaml"
    spec.write_text(text)
    thin = subprocess.run(
        [sys.executable, "-c", THIN_ONLY, "up", "-f", str(spec)],
        env=daemon.env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    full = subprocess.run(
        [AGENTCELL, "up", "-f", str(spec)],
        env={**daemon.env(), "AGENTCELL_NO_DAEMON": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (thin.returncode, full.returncode) == (2, 2)
    assert thin.stderr == full.stderr
    assert f"{spec}:" in thin.stderr
