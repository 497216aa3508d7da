"""Report ingest of the control plane: N simulated agents over mTLS on loopback.

The control plane runs as a subprocess (SQLite in WAL mode, its default). Each simulated agent
has its own key and a certificate from the control plane's CA (enrolled with a real join token)
and keeps one TLS connection alive, sending report batches back to back. Agents are spread over
worker processes so the load generator is not one GIL. Scenarios:

- ``healthz``: the same clients, connections and TLS against ``GET /healthz`` (no identity,
  no body, no database): the raw ceiling of this HTTP/TLS stack on this machine, the baseline.
- ``reports xB``: ``POST /v1/agent/reports`` with B reports per batch: certificate identity,
  revocation check, body validation, group-committed INSERT ... ON CONFLICT.

Load generator and server share the machine's cores, so the figures are a floor for the server.
Usage: python bench/ingest.py [--agents 32] [--workers 2] [--seconds 8]
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import select
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from agentcell.controlplane.client import AdminClient
from agentcell.controlplane.server import init_state
from agentcell.controlplane.settings import ClientSettings, ControlPlanePaths

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "ingest.json"
SERVER_NAME = "agentcell-controlplane"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_server(home: Path, port: int, agents: int) -> subprocess.Popen[bytes]:
    # Every simulated agent connects from 127.0.0.1, where real agents would each be a peer of
    # their own: lift the per-peer limits to the number of agents (and their enrolments).
    limits = {
        "AGENTCELL_MAX_CONNECTIONS_PER_PEER": str(max(64, 2 * agents)),
        "AGENTCELL_ENROL_BURST": str(max(10, agents)),
    }
    process = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("agentcell")),
            "server",
            "--listen",
            f"127.0.0.1:{port}",
        ],
        env={**os.environ, "AGENTCELL_HOME": str(home), **limits},
        stdout=subprocess.PIPE,
        stderr=open(home / "server.log", "wb"),  # noqa: SIM115 - the child owns it
        stdin=subprocess.DEVNULL,
    )
    assert process.stdout is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], 0.2)
        if ready and process.stdout.readline().startswith(b"ready"):
            return process
    process.kill()
    raise RuntimeError((home / "server.log").read_text())


def enrol(admin: AdminClient, ca_file: Path, port: int, home: Path, index: int) -> dict[str, str]:
    """A real enrolment: join token, key made here, CSR over TLS; returns file paths."""
    token = admin.join_token("bench", f"agent-{index}").token
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench")]))
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
        .decode()
    )
    context = ssl.create_default_context(cafile=str(ca_file))
    connection = http.client.HTTPSConnection("127.0.0.1", port, context=context)
    connection.request("POST", "/v1/agent/enrol", json.dumps({"token": token, "csr": csr}))
    answer = json.loads(connection.getresponse().read())
    connection.close()
    key_path = home / "clients" / f"{index}.key"
    cert_path = home / "clients" / f"{index}.pem"
    key_path.parent.mkdir(exist_ok=True)
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    cert_path.write_text(answer["certificate"])
    return {"key": str(key_path), "cert": str(cert_path), "next": str(answer["next_sequence"])}


def worker(
    identities: list[dict[str, str]],
    ca_file: str,
    port: int,
    path: str,
    batch: int,
    start_at: float,
    stop_at: float,
    first_sequence: int,
    results: Any,
) -> None:
    """Drive ``identities`` round-robin from one process, each on its own kept-alive
    connection; one request in flight per agent (threads)."""
    import threading

    latencies: list[float] = []
    counts = [0]
    errors = [0]
    lock = threading.Lock()

    def agent(identity: dict[str, str]) -> None:
        context = ssl.create_default_context(cafile=ca_file)
        context.load_cert_chain(identity["cert"], identity["key"])
        connection = http.client.HTTPSConnection("127.0.0.1", port, context=context)
        sequence = first_sequence
        mine: list[float] = []
        sent = failed = 0
        metrics = {f"m{i}": float(i) for i in range(20)}
        while time.time() < start_at:
            time.sleep(0.001)
        while time.time() < stop_at:
            if path == "/healthz":
                body = None
                method = "GET"
            else:
                reports = [
                    {"sequence": sequence + i, "kind": "metrics", "sampled_at": time.time(),
                     "metrics": metrics}
                    for i in range(batch)
                ]  # fmt: skip
                sequence += batch
                body = json.dumps({"reports": reports})
                method = "POST"
            began = time.perf_counter()
            try:
                connection.request(method, path, body=body)
                response = connection.getresponse()
                response.read()
                ok = response.status == 200
            except (OSError, http.client.HTTPException):
                ok = False
                connection.close()
            mine.append(time.perf_counter() - began)
            if ok:
                sent += 1
            else:
                failed += 1
        connection.close()
        with lock:
            latencies.extend(mine)
            counts[0] += sent
            errors[0] += failed

    threads = [threading.Thread(target=agent, args=(identity,)) for identity in identities]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    results.put({"latencies": latencies, "ok": counts[0], "errors": errors[0]})


def scenario(
    name: str,
    identities: list[dict[str, str]],
    *,
    ca_file: Path,
    port: int,
    path: str,
    batch: int,
    workers: int,
    seconds: float,
    first_sequence: int,
) -> dict[str, Any]:
    queue: Any = multiprocessing.Queue()
    start_at = time.time() + 1.0
    stop_at = start_at + seconds
    shares = [identities[i::workers] for i in range(workers)]
    processes = [
        multiprocessing.Process(
            target=worker,
            args=(share, str(ca_file), port, path, batch, start_at, stop_at, first_sequence, queue),
        )
        for share in shares
    ]
    for process in processes:
        process.start()
    gathered = [queue.get(timeout=seconds + 60) for _ in processes]
    for process in processes:
        process.join(timeout=30)
    latencies = sorted(x for part in gathered for x in part["latencies"])
    requests = sum(part["ok"] for part in gathered)
    errors = sum(part["errors"] for part in gathered)
    return {
        "scenario": name,
        "agents": len(identities),
        "batch": batch,
        "requests_per_s": requests / seconds,
        "reports_per_s": requests * batch / seconds if path != "/healthz" else 0.0,
        "p50_ms": statistics.median(latencies) * 1000 if latencies else 0.0,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000 if latencies else 0.0,
        "errors": errors,
        "seconds": seconds,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 10])
    options = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="ac-bench-", dir="/tmp"))
    server: subprocess.Popen[bytes] | None = None
    try:
        paths = ControlPlanePaths.from_environ({"AGENTCELL_HOME": str(home)})
        init_state(paths, trust_domain="bench.local")
        port = free_port()
        server = start_server(home, port, options.agents)
        admin = AdminClient(
            ClientSettings.from_environ(
                {"AGENTCELL_HOME": str(home)}, url=f"https://127.0.0.1:{port}"
            )
        )
        identities = [enrol(admin, paths.ca_bundle, port, home, i) for i in range(options.agents)]
        common = {
            "ca_file": paths.ca_bundle,
            "port": port,
            "workers": options.workers,
            "seconds": options.seconds,
        }
        rows = [scenario("healthz (baseline)", identities, path="/healthz", batch=1,
                         first_sequence=1, **common)]  # fmt: skip
        next_sequence = 1
        for batch in options.batches:
            rows.append(
                scenario(
                    f"reports x{batch}",
                    identities,
                    path="/v1/agent/reports",
                    batch=batch,
                    first_sequence=next_sequence,
                    **common,
                )
            )
            next_sequence += 10_000_000
    finally:
        if server is not None:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)
        shutil.rmtree(home, ignore_errors=True)

    print(f"{'scenario':<20} {'agents':>6} {'req/s':>9} {'reports/s':>10} {'p50 ms':>8} "
          f"{'p99 ms':>8} {'errors':>6}")  # fmt: skip
    for row in rows:
        print(
            f"{row['scenario']:<20} {row['agents']:>6} {row['requests_per_s']:>9.0f} "
            f"{row['reports_per_s']:>10.0f} {row['p50_ms']:>8.1f} {row['p99_ms']:>8.1f} "
            f"{row['errors']:>6}"
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "benchmark": "ingest",
                "cpus": os.cpu_count(),
                "database": "sqlite (WAL)",
                "load_generator": f"{options.workers} processes on the same host",
                "goal": {"reports_per_s": 5000, "p99_ms": 50},
                "results": rows,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {RESULTS.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
