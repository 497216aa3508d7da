"""The Docker side of the isolation proof.

``verify`` and ``probe`` need a few things only the engine knows: which container a name means,
its host pid and runtime, what the engine recorded for it, and a way to run a program inside
it. This module provides them, and implements :class:`agentcell.verify.probe.ProbeHost`:

* programs go to the cell's own ``python3`` over an exec's stdin (a small bootstrap reads
  exactly the program's length and runs it), so nothing is written into the cell and nothing
  is baked into user images;
* the canary is a hardened container on an internal network of its own, removed afterwards.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, cast

import docker
import pydantic
from docker.models.containers import Container

from agentcell.cell.labels import (
    LABEL_AGENT,
    LABEL_MANAGED,
    LABEL_PROBE,
    LABEL_SOURCE,
    LABEL_SPEC,
    LABEL_TENANT,
    LABEL_UID,
)
from agentcell.cell.names import container_name
from agentcell.cell.network import TENANT_NETWORK, nft_table, tenant_network
from agentcell.cell.paths import (
    CELL_IDENTITY_DIR,
    CELL_RUN_DIR,
    agentcell_state_dirs,
    asset,
    normalize_host_path,
)
from agentcell.errors import (
    BackendError,
    CellConflict,
    CellNotFound,
    HostError,
    Location,
    SpecError,
)
from agentcell.runtime import netfilter
from agentcell.runtime.docker.backend import DockerBackend
from agentcell.runtime.docker.client import translated
from agentcell.runtime.docker.images import BASE_IMAGE
from agentcell.runtime.docker.networks import tenant_net_dir
from agentcell.runtime.docker.translate import RESOLV_CONF
from agentcell.runtime.uids import with_cell_ids
from agentcell.spec.load import SpecDocument, load_paths
from agentcell.spec.model import AgentDocument
from agentcell.verify.compare import Check, VerifyReport, verify
from agentcell.verify.compare.network import TenantNetworkFacts, tenant_network_checks
from agentcell.verify.facts import (
    DOCKER_RUNTIME_STATE,
    CellTarget,
    EngineRecord,
    HostPaths,
    SandboxView,
)
from agentcell.verify.neighbours import CellExposure, neighbour_checks, read_host_processes
from agentcell.verify.probe import Canary, CellState, ExecResult, Neighbour
from agentcell.verify.tenancy import tenant_check

__all__ = ["DockerProbeHost", "DockerProof", "ProofSubject"]

CANARY_PORT = 8080
CANARY_READY_S = 20.0
SNAPSHOT_TIMEOUT_S = 30.0
EXEC_READ_S = 10.0
RUNSC_PS_TIMEOUT_S = 10.0
# A process for verify to start by exec and read from the host; it waits to be read and killed.
_EXEC_WAITER = ["python3", "-c", "import time; time.sleep(30)"]
# Output a cell can send back is bounded: a hostile cell must not exhaust the host's memory.
MAX_OUTPUT_BYTES = 4 * 1024**2
# Runs the program that follows on stdin: exactly N bytes, so no end-of-file is needed.
_BOOTSTRAP = (
    "import sys;n=int(sys.argv[1]);src=sys.stdin.buffer.read(n);"
    'sys.argv=["agentcell-probe"]+sys.argv[2:];'
    'exec(compile(src,"agentcell-probe","exec"),{"__name__":"__main__"})'
)
# The neighbour keeps its secret in a tmpfs file, its environment and its heap, and waits.
_NEIGHBOUR = (
    "import os, time\n"
    "secret = os.environ['NEIGHBOUR_SECRET']\n"
    "open('/tmp/agentcell-neighbour-secret', 'w').write(secret)\n"
    "kept = bytearray(secret.encode() * 64)\n"
    "print('ready', flush=True)\n"
    "while True: time.sleep(3600)\n"
)
_CANARY_SERVER = (
    "import socket\n"
    "s=socket.socket()\n"
    "s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
    f"s.bind(('0.0.0.0',{CANARY_PORT}))\n"
    "s.listen(16)\n"
    "print('listening',flush=True)\n"
    "while True:\n"
    "    c,_=s.accept()\n"
    "    c.sendall(b'agentcell canary\\n')\n"
    "    c.close()\n"
)


@dataclass(frozen=True, kw_only=True)
class ProofSubject:
    """A container to prove, and the spec to hold it to."""

    name: str
    container: Container
    document: AgentDocument
    spec_source: str


class DockerProof:
    """Finds cells and what verify/probe need about them, on one Docker Engine."""

    def __init__(self, backend: DockerBackend) -> None:
        self.backend = backend
        self.client: docker.DockerClient = backend.client

    # -- which containers, held to which spec ---------------------------------------------------

    def subjects(
        self, refs: Sequence[str], *, all_cells: bool = False, spec_file: Path | None = None
    ) -> list[ProofSubject]:
        """The containers named by ``refs`` (or every running cell), each with its spec.

        A cell carries its normalized spec in a label; ``spec_file`` holds any container,
        agentcell's or not, to the spec in that file instead.

        Raises:
            CellNotFound: a name matches no container, or a container is not running.
            SpecError: the spec file or a cell's spec label is invalid.
        """
        if all_cells:
            names = [cell.container for cell in self.backend.cells() if cell.state == "running"]
            if not names:
                raise CellNotFound("no running cell on this engine", fix="start one: agentcell up")
        else:
            names = list(refs)
        if not names:
            raise CellNotFound("name a cell (TENANT/AGENT, AGENT or a container) or pass --all")
        documents = load_paths([spec_file]) if spec_file is not None else []
        subjects = []
        for ref in names:
            container = self._container(ref, any_container=spec_file is not None)
            if container.status != "running":
                raise CellNotFound(
                    f"{container.name} is {container.status}, not running",
                    fix=f"start it first (agentcell up, or docker start {container.name})",
                )
            if spec_file is not None:
                document, source = _pick(documents, container, spec_file)
            else:
                document, source = _label_spec(container, self.backend)
            subjects.append(
                ProofSubject(name=ref, container=container, document=document, spec_source=source)
            )
        return subjects

    def report(self, subject: ProofSubject) -> VerifyReport:
        """``agentcell verify`` of one subject: the kernel's view compared with its spec, and
        what it can reach of its neighbours and whether it sits in its tenant's cgroup parent
        (isolation from the host is not isolation from the next cell).

        Raises:
            BackendError: the engine does not answer.
        """
        started = time.perf_counter()
        report = verify(subject.document, self.target(subject), spec_source=subject.spec_source)
        checks = (
            *report.checks,
            *self.network_checks(subject),
            *self.neighbour_checks(subject),
            *self.tenant_checks(subject),
        )
        # The time covers the engine's part too (for gVisor, an exec in the cell).
        elapsed_ms = (time.perf_counter() - started) * 1000
        return dataclasses.replace(report, checks=checks, elapsed_ms=elapsed_ms)

    def _container(self, ref: str, *, any_container: bool) -> Container:
        if any_container and "/" not in ref:
            try:
                with translated("look up", subject=ref):
                    container: Container = self.client.containers.get(ref)
            except CellNotFound:
                pass
            else:
                return container
        return self.backend.container(ref)

    # -- what verify reads ----------------------------------------------------------------------

    def tenant_checks(self, subject: ProofSubject, paths: HostPaths | None = None) -> list[Check]:
        """Whether the cell sits in its tenant's cgroup parent, which holds the quota agentcell
        wrote there (:mod:`agentcell.verify.tenancy`); nothing for a container that is not a
        cell.

        Raises:
            BackendError: the engine does not answer.
        """
        container = subject.container
        labels = self.backend.trusted(container) or {}
        tenant = labels.get(LABEL_TENANT)
        pid = int((container.attrs.get("State") or {}).get("Pid") or 0)
        if not tenant or not pid:
            return []
        expected = self.backend.tenant_cgroup(tenant).recorded()
        return [tenant_check(tenant=tenant, pid=pid, expected=expected, paths=paths or HostPaths())]

    def network_facts(self, subject: ProofSubject) -> TenantNetworkFacts | None:
        """The host side of a cell on its tenant's network: the tenant's host rules read back
        from the kernel beside those expected, the cell's resolv.conf read from the host, and
        the engine's DNS record; None for a cell without a tenant network.

        Raises:
            BackendError: the engine does not answer.
        """
        container = subject.container
        labels = self.backend.trusted(container) or {}
        tenant = labels.get(LABEL_TENANT)
        if not tenant or subject.document.spec.network != TENANT_NETWORK:
            return None
        attrs = container.attrs
        host = attrs.get("HostConfig") or {}
        joined = (attrs.get("NetworkSettings") or {}).get("Networks") or {}
        try:
            state = self.backend.networks.find(tenant)
        except CellConflict:
            state = None
        if state is None or tenant_network(tenant) not in joined:
            return TenantNetworkFacts(tenant=tenant, gateway=None)
        table = nft_table(tenant)
        rules_source = f"nft -j list table inet|bridge {table}"
        kernel: tuple[str, ...] | None = None
        rules_error: str | None = None
        try:
            kernel = netfilter.read_tables(tenant).lines()
        except HostError as exc:
            rules_error = exc.what
        pid = int((attrs.get("State") or {}).get("Pid") or 0)
        resolv_path = Path(f"/proc/{pid}/root{RESOLV_CONF}")
        resolv: str | None = None
        resolv_error: str | None = None
        try:
            resolv = resolv_path.read_text(errors="replace")[:65536]
        except OSError as exc:
            resolv_error = f"cannot read {resolv_path}: {exc.strerror}"
        return TenantNetworkFacts(
            tenant=tenant,
            gateway=state.gateway,
            expected_rules=self.backend.networks.expected(state).lines(),
            kernel_rules=kernel,
            rules_source=rules_source,
            rules_error=rules_error,
            resolv_conf=resolv,
            resolv_source=str(resolv_path),
            resolv_error=resolv_error,
            engine_dns=tuple(str(server) for server in host.get("Dns") or ()),
        )

    def network_checks(self, subject: ProofSubject) -> list[Check]:
        """``net.host-rules``, ``net.resolver`` and ``net.dns`` of a cell on its tenant's
        network (:func:`agentcell.verify.compare.network.tenant_network_checks`).

        Raises:
            BackendError: the engine does not answer.
        """
        return tenant_network_checks(subject.document.spec, self.network_facts(subject))

    def neighbour_checks(
        self, subject: ProofSubject, paths: HostPaths | None = None
    ) -> list[Check]:
        """What the cell can reach of other cells: shared uids, a host /proc or PID namespace
        with siblings in reach, mounts of agentcell's state (:mod:`agentcell.verify.neighbours`).

        Raises:
            BackendError: the engine does not answer.
        """
        host = paths or HostPaths()
        container = subject.container
        attrs = container.attrs
        host_config = attrs.get("HostConfig") or {}
        binds = [m for m in attrs.get("Mounts") or [] if m.get("Type") == "bind"]
        labels = self.backend.trusted(container) or {}
        tenant, agent = labels.get(LABEL_TENANT), labels.get(LABEL_AGENT)
        own: list[str] = []
        if tenant and agent:
            # What agentcell mounted for this cell itself: its identity, the agents' socket.
            own = [
                str(m.get("Source"))
                for m in binds
                if str(m.get("Destination", "")).startswith(CELL_RUN_DIR + "/")
                and (
                    str(m.get("Source", "")).endswith(f"/identity/{tenant}/{agent}")
                    or str(m.get("Source", "")).endswith("/controlplane")
                )
            ]
            # And, on its tenant's network, the tenant's resolv.conf (the gateway alone).
            resolv = str(tenant_net_dir(tenant) / "resolv.conf")
            own += [
                str(m.get("Source"))
                for m in binds
                if m.get("Destination") == RESOLV_CONF and m.get("Source") == resolv
            ]
        exposure = CellExposure(
            container_id=container.id or "",
            host_proc_targets=tuple(
                str(m.get("Destination"))
                for m in binds
                if normalize_host_path(str(m.get("Source", ""))) == "/proc"
            ),
            host_pid=host_config.get("PidMode") == "host",
            bind_sources=tuple(str(m.get("Source", "")) for m in binds),
            own_sources=tuple(own),
            sandboxed=host_config.get("Runtime") == "runsc",
        )
        with translated("list containers"):
            summaries = self.client.api.containers(all=True)
        names = {}
        for summary in summaries:
            summary_labels = summary.get("Labels") or {}
            shown = (summary.get("Names") or ["?"])[0].lstrip("/")
            if summary_labels.get(LABEL_MANAGED) == "true":
                shown = f"cell {summary_labels.get(LABEL_TENANT)}/{summary_labels.get(LABEL_AGENT)}"
            names[str(summary["Id"])] = shown
        return neighbour_checks(
            exposure,
            read_host_processes(host.proc),
            cell_names=names,
            state_dirs=agentcell_state_dirs(),
            proc=host.proc,
        )

    def target(self, subject: ProofSubject) -> CellTarget:
        """The facts the runtime layer adds to the kernel's: pid, engine record, and for
        gVisor the sandbox's own view.

        Raises:
            BackendError: the engine does not answer.
        """
        container = subject.container
        with translated("inspect", subject=container.name or "?"):
            container.reload()
        attrs = container.attrs
        host = attrs.get("HostConfig") or {}
        runtime = str(host.get("Runtime") or "runc")
        info = self.backend.facts.runtime(runtime)
        seccomp: str | None = None
        for option in host.get("SecurityOpt") or []:
            if option.startswith("seccomp=") or option.startswith("seccomp:"):
                seccomp = option[len("seccomp=") :]
        engine = EngineRecord(
            runtime=runtime,
            runtime_args=info.args if info is not None else (),
            seccomp_profile=seccomp,
            privileged=bool(host.get("Privileged")),
        )
        sandbox: SandboxView | None = None
        problem: str | None = None
        ps: str | None = None
        ps_problem: str | None = None
        exec_pid, exec_status, exec_problem = 0, None, None
        if runtime == "runsc":
            sandbox, problem = self._snapshot(container)
            runsc = info.path if info is not None and info.path else "runsc"
            ps, ps_problem = _runsc_ps(runsc, container.id or "")
        else:
            exec_pid, exec_status, exec_problem = self._exec_status(container)
        return CellTarget(
            name=subject.name,
            container=container.name or "?",
            container_id=container.id or "?",
            host_pid=int((attrs.get("State") or {}).get("Pid") or 0),
            engine=engine,
            sandbox=sandbox,
            sandbox_error=problem,
            sandbox_ps=ps,
            sandbox_ps_error=ps_problem,
            exec_status=exec_status,
            exec_pid=exec_pid,
            exec_error=exec_problem,
        )

    def _exec_status(self, container: Container) -> tuple[int, str | None, str | None]:
        """(pid, the host's /proc/<pid>/status, or why not) of a process started by exec.

        runc and crun put an exec'd process under the container's settings as they start it;
        the host's /proc shows whether they did. The process only waits, and is killed after.
        """
        api = self.client.api
        name = container.name or "?"
        with translated("exec in", subject=name):
            exec_id = str(api.exec_create(container.id, _EXEC_WAITER, stdout=False)["Id"])
            api.exec_start(exec_id, detach=True)
        deadline = time.monotonic() + EXEC_READ_S
        pid = 0
        try:
            while time.monotonic() < deadline:
                with translated("inspect exec in", subject=name):
                    info = api.exec_inspect(exec_id)
                pid = int(info.get("Pid") or 0)
                if pid > 0 and info.get("Running"):
                    try:
                        if (container.id or "") not in Path(f"/proc/{pid}/cgroup").read_text():
                            return pid, None, f"exec'd pid {pid} is not in the cell's cgroup"
                        return pid, Path(f"/proc/{pid}/status").read_text(), None
                    except OSError as exc:
                        return pid, None, f"cannot read /proc/{pid}/status: {exc.strerror}"
                if not info.get("Running") and info.get("ExitCode") is not None:
                    return (
                        pid,
                        None,
                        (
                            f"the exec'd {' '.join(_EXEC_WAITER[:1])} exited {info['ExitCode']} "
                            "before it could be read (has the image python3?)"
                        ),
                    )
                time.sleep(0.05)
            return pid, None, "the exec'd process did not start in time"
        finally:
            _kill_exec(pid, container.id or "")

    def _snapshot(self, container: Container) -> tuple[SandboxView | None, str | None]:
        """gVisor's view of the cell, read by ``assets/probe/snapshot.py`` inside it."""
        host = DockerProbeHost(self.client, container, backend=self.backend)
        program = asset("probe", "snapshot.py").read_bytes()
        outcome = host.run_program(program, [], timeout_s=SNAPSHOT_TIMEOUT_S)
        for line in outcome.stdout.splitlines():
            try:
                return _sandbox_view(json.loads(line)), None
            except (json.JSONDecodeError, UnicodeDecodeError, pydantic.ValidationError):
                continue
        why = outcome.error or f"exit {outcome.exit_code}"
        tail = outcome.stderr.decode(errors="replace").strip().splitlines()[-1:]
        return None, f"could not read the sandbox's view ({why}{': ' + tail[0] if tail else ''})"

    # -- what probe needs -----------------------------------------------------------------------

    def probe_host(self, subject: ProofSubject) -> DockerProbeHost:
        """The :class:`~agentcell.verify.probe.ProbeHost` for one subject."""
        return DockerProbeHost(self.client, subject.container, backend=self.backend)


class _Snapshot(pydantic.BaseModel):
    """What snapshot.py prints; it comes from inside the cell, so it is validated."""

    model_config = pydantic.ConfigDict(extra="ignore", frozen=True)

    status: dict[str, str | None] = pydantic.Field(default_factory=dict)
    mountinfo: str | None = None
    route: str | None = None
    ipv6_route: str | None = None
    dev: str | None = None
    present: dict[str, bool] = pydantic.Field(default_factory=dict)
    no_new_privs: int | None = None
    self_status: str | None = None


def _sandbox_view(data: Any) -> SandboxView:
    snapshot = _Snapshot.model_validate(data)
    statuses = {int(pid): text for pid, text in snapshot.status.items() if pid.isdigit() and text}
    return SandboxView(
        statuses=MappingProxyType(statuses),
        mountinfo=snapshot.mountinfo,
        route=snapshot.route,
        ipv6_route=snapshot.ipv6_route,
        dev=snapshot.dev,
        present=MappingProxyType(dict(snapshot.present)),
        no_new_privs=None if snapshot.no_new_privs is None else snapshot.no_new_privs == 1,
        self_status=snapshot.self_status,
    )


def _label_spec(container: Container, backend: DockerBackend) -> tuple[AgentDocument, str]:
    labels: Mapping[str, str] = container.labels
    raw = labels.get(LABEL_SPEC)
    if backend.trusted(container) is None or raw is None:
        raise SpecError(
            f"container {container.name} carries no agentcell spec (label {LABEL_SPEC}) "
            "that agentcell set",
            fix="pass --spec FILE to hold it to a spec file",
        )
    try:
        document = AgentDocument.model_validate_json(raw)
    except pydantic.ValidationError as exc:
        raise SpecError(
            f"the spec label of {container.name} is not a valid Agent document: "
            f"{exc.error_count()} problems",
            where=Location(field=LABEL_SPEC),
            fix="recreate the cell with this agentcell version (agentcell up)",
        ) from exc
    source = labels.get(LABEL_SOURCE) or "?"
    document = with_cell_ids(document, labels.get(LABEL_UID))
    return document, f"label {LABEL_SPEC} (written from {source})"


def _pick(
    documents: Sequence[SpecDocument], container: Container, spec_file: Path
) -> tuple[AgentDocument, str]:
    if len(documents) == 1:
        doc = documents[0]
        return doc.document, f"{doc.file}:{doc.line}"
    for doc in documents:
        tenant, name = doc.document.key
        if container.name == container_name(tenant, name):
            return doc.document, f"{doc.file}:{doc.line}"
    raise SpecError(
        f"{spec_file} holds {len(documents)} agents and none is {container.name}",
        where=Location(file=str(spec_file)),
        fix="pass a file with the one agent to compare with",
    )


class DockerProbeHost:
    """Runs programs in one container and starts canaries beside it."""

    def __init__(
        self, client: docker.DockerClient, container: Container, *, backend: DockerBackend
    ) -> None:
        self.client = client
        self.container = container
        self.backend = backend
        self.name = container.name or container.id or "?"

    @property
    def runtime(self) -> str:
        """The container's OCI runtime as the engine records it."""
        host = self.container.attrs.get("HostConfig") or {}
        return str(host.get("Runtime") or "runc")

    def state(self) -> CellState:
        """The container's state, freshly read.

        Raises:
            BackendError: the engine does not answer.
        """
        with translated("inspect", subject=self.name):
            self.container.reload()
        state = self.container.attrs.get("State") or {}
        return CellState(
            # A restarting container reports Running too; it cannot take an exec then.
            running=bool(state.get("Running")) and not state.get("Restarting"),
            pid=int(state.get("Pid") or 0),
            restart_count=int(self.container.attrs.get("RestartCount") or 0),
            oom_killed=bool(state.get("OOMKilled")),
            started_at=str(state.get("StartedAt") or ""),
        )

    def run_program(self, source: bytes, argv: Sequence[str], *, timeout_s: float) -> ExecResult:
        """Run ``python3`` in the container on ``source``, read from stdin, with ``argv``.

        Raises:
            BackendError: the engine refuses the exec.
        """
        api = self.client.api
        command = ["python3", "-c", _BOOTSTRAP, str(len(source)), *argv]
        with translated("exec in", subject=self.name):
            exec_id = str(
                api.exec_create(self.container.id, command, stdin=True, stdout=True, stderr=True)[
                    "Id"
                ]
            )
            stream = api.exec_start(exec_id, socket=True)
        # The SDK wraps the hijacked connection; the socket underneath takes timeouts.
        raw = cast("socket.socket", getattr(stream, "_sock", stream))
        deadline = time.monotonic() + timeout_s
        error: str | None = None
        timed_out = False
        try:
            raw.settimeout(2.0)
            raw.sendall(source)
            stdout, stderr, error, timed_out = self._collect(raw, deadline)
        except OSError as exc:
            stdout, stderr, error = b"", b"", f"the exec stream failed: {exc}"
        finally:
            # Closing the SDK's wrapper leaves the hijacked socket open; close both.
            with contextlib.suppress(OSError):
                stream.close()
            with contextlib.suppress(OSError):
                raw.close()
        exit_code = self._finish(exec_id, kill=timed_out)
        return ExecResult(
            exit_code=exit_code, stdout=stdout, stderr=stderr, timed_out=timed_out, error=error
        )

    def _collect(
        self, raw: socket.socket, deadline: float
    ) -> tuple[bytes, bytes, str | None, bool]:
        """Demultiplex the exec's stdout and stderr until it ends, the deadline passes, or the
        cell dies (gVisor's exec stream can stay open after its sandbox is gone)."""
        buffers = {1: bytearray(), 2: bytearray()}
        pending = bytearray()
        start_pid = self.state().pid
        last_check = time.monotonic()
        while True:
            if time.monotonic() > deadline:
                return bytes(buffers[1]), bytes(buffers[2]), "timed out", True
            try:
                chunk = raw.recv(65536)
            except TimeoutError:
                if time.monotonic() - last_check > 5:
                    last_check = time.monotonic()
                    state = self.state()
                    if not state.running or state.pid != start_pid:
                        return bytes(buffers[1]), bytes(buffers[2]), "the cell died", False
                continue
            if not chunk:
                return bytes(buffers[1]), bytes(buffers[2]), None, False
            pending += chunk
            while len(pending) >= 8:
                size = int.from_bytes(pending[4:8], "big")
                if len(pending) < 8 + size:
                    break
                kind = pending[0]
                payload = bytes(pending[8 : 8 + size])
                del pending[: 8 + size]
                target = buffers.get(kind)
                if target is not None and len(target) + len(payload) <= MAX_OUTPUT_BYTES:
                    target += payload

    def _finish(self, exec_id: str, *, kill: bool) -> int | None:
        """The exec's exit code; a timed-out exec's process is killed on the host first."""
        api = self.client.api
        for attempt in range(20):
            try:
                with translated("inspect exec in", subject=self.name):
                    info = api.exec_inspect(exec_id)
            except CellNotFound:
                return None
            if not info.get("Running"):
                code = info.get("ExitCode")
                return None if code is None else int(code)
            if kill and attempt == 0:
                _kill_exec(int(info.get("Pid") or 0), self.container.id or "")
            time.sleep(0.1)
        return None

    @contextlib.contextmanager
    def canary(self) -> Iterator[Canary | None]:
        """A listener on an internal network of its own, removed when the block ends.

        Raises:
            ImageError: the canary's image (agentcell's base image) is not on this host.
            BackendError: the engine refuses the network or the container.
        """
        name = f"agentcell-canary-{secrets.token_hex(4)}"
        labels = {LABEL_PROBE: "canary"}
        with translated("create canary network", subject=name):
            network = self.client.networks.create(
                name, driver="bridge", internal=True, labels=labels
            )
        container: Container | None = None
        try:
            with translated("start canary", subject=name):
                container = self.client.containers.run(
                    BASE_IMAGE,
                    ["python3", "-u", "-c", _CANARY_SERVER],
                    name=name,
                    detach=True,
                    network=name,
                    user="65534:65534",
                    cap_drop=["ALL"],
                    security_opt=["no-new-privileges:true"],
                    read_only=True,
                    mem_limit="32m",
                    pids_limit=16,
                    labels=labels,
                )
            address = self._wait_for_canary(container, name)
            reachable = _connects(address, CANARY_PORT)
            yield Canary(
                host=address, port=CANARY_PORT, network=name, reachable_from_host=reachable
            )
        finally:
            if container is not None:
                with contextlib.suppress(BackendError), translated("remove canary", subject=name):
                    container.remove(force=True)
            with contextlib.suppress(BackendError), translated("remove network", subject=name):
                network.remove()

    @contextlib.contextmanager
    def neighbour(self, uid: int | None) -> Iterator[Neighbour | None]:
        """Run a neighbour cell of another tenant beside the probed one for the block.

        It runs as ``uid``, or as a uid allocated like any cell's (so, by default, one no other
        cell has), keeps a secret in its tmpfs, its environment and its memory, holds its
        stdin open, and has an identity directory laid out as ``up`` lays out a cell's (a
        0400 token in a 0500 directory owned by its uid, mounted read-only).

        Raises:
            ImageError: agentcell's base image is not on this host.
            BackendError: the engine refuses the container.
        """
        name = f"agentcell-neighbour-{secrets.token_hex(4)}"
        secret = secrets.token_hex(16)
        identity = Path(tempfile.mkdtemp(prefix="agentcell-neighbour-"))
        container: Container | None = None
        try:
            with self.backend.spare_uid(uid) as cell_uid:
                (identity / "token").write_text(secret + "\n")
                os.chmod(identity / "token", 0o400)
                os.chown(identity / "token", cell_uid, cell_uid)
                os.chown(identity, cell_uid, cell_uid)
                identity.chmod(0o500)
                with translated("start neighbour", subject=name):
                    container = self.client.containers.run(
                        BASE_IMAGE,
                        ["python3", "-u", "-c", _NEIGHBOUR],
                        name=name,
                        detach=True,
                        stdin_open=True,
                        environment={"NEIGHBOUR_SECRET": secret},
                        network_mode="none",
                        user=f"{cell_uid}:{cell_uid}",
                        cap_drop=["ALL"],
                        security_opt=["no-new-privileges:true"],
                        read_only=True,
                        tmpfs={"/tmp": f"size=1m,mode=0700,uid={cell_uid},gid={cell_uid}"},
                        mounts=[
                            docker.types.Mount(
                                target=CELL_IDENTITY_DIR,
                                source=str(identity),
                                type="bind",
                                read_only=True,
                            )
                        ],
                        mem_limit="32m",
                        pids_limit=16,
                        labels={LABEL_PROBE: "neighbour"},
                    )
                self._wait_for_log(container, b"ready")
            with translated("inspect neighbour", subject=name):
                container.reload()
            yield Neighbour(
                pid=int((container.attrs.get("State") or {}).get("Pid") or 0),
                uid=cell_uid,
                secret=secret,
                identity_host_dir=str(identity),
                container=name,
            )
        finally:
            if container is not None:
                with (
                    contextlib.suppress(BackendError),
                    translated("remove neighbour", subject=name),
                ):
                    container.remove(force=True)
            shutil.rmtree(identity, ignore_errors=True)

    def _wait_for_log(self, container: Container, marker: bytes) -> None:
        deadline = time.monotonic() + CANARY_READY_S
        while time.monotonic() < deadline:
            with translated("read neighbour", subject=container.name or "?"):
                container.reload()
                if marker in container.logs():
                    return
            if container.status == "exited":
                break
            time.sleep(0.1)
        raise BackendError(
            f"the neighbour {container.name} did not start",
            fix="check `docker logs` of it; agentcell's base image must have python3",
        )

    def _wait_for_canary(self, container: Container, network: str) -> str:
        deadline = time.monotonic() + CANARY_READY_S
        while time.monotonic() < deadline:
            with translated("read canary", subject=container.name or "?"):
                container.reload()
                ready = b"listening" in container.logs()
            networks = (container.attrs.get("NetworkSettings") or {}).get("Networks") or {}
            address = str((networks.get(network) or {}).get("IPAddress") or "")
            if ready and address:
                return address
            if container.status == "exited":
                break
            time.sleep(0.1)
        raise BackendError(
            f"the canary {container.name} did not start listening",
            fix="check `docker logs` of a canary; agentcell's base image must have python3",
        )


def _runsc_ps(runsc: str, container_id: str) -> tuple[str | None, str | None]:
    """``runsc ps`` of a container under Docker's runsc state root: gVisor's process table,
    answered by the sandbox over its control socket rather than by anything in the image."""
    command = [runsc, "--root", str(DOCKER_RUNTIME_STATE), "ps", container_id]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=RUNSC_PS_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"{' '.join(command[:4])} failed: {exc}"
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return None, f"runsc ps exited {done.returncode}: {tail[:200]}"
    return done.stdout, None


def _connects(host: str, port: int) -> bool:
    """Whether a TCP connection from here to a container this run started succeeds."""
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def _kill_exec(pid: int, container_id: str) -> None:
    """End a timed-out exec's process, and only if it still belongs to this container."""
    if pid <= 0 or not container_id:
        return
    try:
        cgroups = Path(f"/proc/{pid}/cgroup").read_text()
    except OSError:
        return
    if container_id in cgroups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
