"""The launch path without an engine: each step runs for the whole batch before the next, and
any refusal leaves the backend untouched. The backend and the control plane are protocol
implementations that record what they are asked (pure logic; the integration tests run the
same path against the real engine and control plane)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from agentcell.cell.paths import CELL_IDENTITY_DIR
from agentcell.cell.quota import TenantLimits
from agentcell.controlplane.settings import ClientSettings
from agentcell.errors import AdmissionError, HostError
from agentcell.launch import prepare_cell, up_files
from agentcell.policy import AdmittedSpec
from agentcell.runtime.cells import Cell, UpResult
from agentcell.runtime.docker.translate import BindMount
from agentcell.trust.config import TrustConfig

SPEC = """apiVersion: agentcell/v1
kind: Agent
metadata: {{name: {name}, tenant: acme}}
spec:
  image: {image}
  healthcheck: {{command: [python3, -V]}}
{extra}"""


@dataclass
class RecordingBackend:
    """A backend that records the calls of the launch path, in order."""

    labels: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    refuse: str | None = None
    calls: list[str] = field(default_factory=list)
    mounts: dict[str, tuple[BindMount, ...]] = field(default_factory=dict)
    limits: dict[str, TenantLimits | None] = field(default_factory=dict)
    made: list[Cell] = field(default_factory=list)

    def check_spec(self, admitted: AdmittedSpec) -> None:
        self.calls.append(f"check {admitted.doc.name}")
        if admitted.doc.name == self.refuse:
            raise HostError(f"this host cannot run {admitted.doc.name}")

    def image_id(self, reference: str) -> str | None:
        self.calls.append(f"image_id {reference}")
        return "sha256:" + "ab" * 32

    def image_labels(self, reference: str) -> Mapping[str, str]:
        self.calls.append("labels")
        return self.labels.get(reference, {})

    def pull_by_digest(self, reference: str) -> None:
        self.calls.append(f"pull {reference}")

    @contextlib.contextmanager
    def uid_allocation(self, specs: Sequence[AdmittedSpec]) -> Iterator[dict[tuple[str, str], int]]:
        self.calls.append(f"allocate {len(specs)}")
        yield {spec.doc.document.key: 1_000_000_000 + i for i, spec in enumerate(specs)}

    def up(
        self,
        admitted: AdmittedSpec,
        *,
        image: str | None = None,
        extra_mounts: Sequence[BindMount] = (),
        extra_env: Mapping[str, str] | None = None,
        image_trust: str | None = None,
        uid: int | None = None,
        tenant_limits: TenantLimits | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> UpResult:
        self.calls.append(f"up {admitted.doc.name} uid={uid}")
        self.limits[admitted.doc.name] = tenant_limits
        self.mounts[admitted.doc.name] = tuple(extra_mounts)
        cell = Cell(tenant="acme", agent=admitted.doc.name, container="c", container_id="i",
                    state="running", health=None, runtime="runc", image=image or "",
                    image_id=image or "", cpus=0.5, memory=1, memory_swap=1, pids=1,
                    spec_hash="h", source="s")  # fmt: skip
        self.made.append(cell)
        return UpResult(cell=cell, action="created")

    def cells(self, *, tenant: str | None = None) -> list[Cell]:
        return [cell for cell in self.made if tenant is None or cell.tenant == tenant]

    def down(self, tenant: str, name: str) -> bool:
        self.calls.append(f"down {tenant}/{name}")
        return True

    def ensure_tenant_network(self, tenant: str, *, intra_tenant: bool) -> None:
        self.calls.append(f"network {tenant} intra={intra_tenant}")

    def remove_tenant_network(self, tenant: str) -> bool:
        self.calls.append(f"remove network {tenant}")
        return True


@dataclass(frozen=True)
class Token:
    token: str
    spiffe_id: str
    expires_at: float


@dataclass
class RecordingIssuer:
    settings: ClientSettings
    down: bool = False
    issued: list[str] = field(default_factory=list)

    def join_token(self, tenant: str, agent: str) -> Token:
        if self.down:
            raise HostError("cannot reach the control plane")
        self.issued.append(f"{tenant}/{agent}")
        return Token(token="t0ken", spiffe_id=f"spiffe://x/tenant/{tenant}/agent/{agent}",
                     expires_at=0.0)  # fmt: skip


def write(
    tmp_path: Path, *names: str, image: str = "agentcell/sandbox:0.1.0", extra: str = ""
) -> Path:
    path = tmp_path / "cells.yaml"
    path.write_text("---\n".join(SPEC.format(name=n, image=image, extra=extra) for n in names))
    return path


def launch(path: Path, backend: RecordingBackend, issuer: RecordingIssuer | None = None) -> None:
    up_files([path], policy_name="restricted", backend=backend, warn=lambda _: None,
             trust=TrustConfig(), issuer=issuer)  # fmt: skip


def test_each_step_runs_for_the_whole_batch_before_the_next(tmp_path: Path) -> None:
    backend = RecordingBackend()
    launch(write(tmp_path, "a", "b"), backend)
    image = "image_id agentcell/sandbox:0.1.0"
    assert backend.calls == [
        "check a", "check b", image, image, "labels", "labels", "allocate 2",
        "up a uid=1000000000", "up b uid=1000000001",
    ]  # fmt: skip


def test_a_policy_refusal_touches_nothing(tmp_path: Path) -> None:
    backend = RecordingBackend()
    path = write(tmp_path, "a", "b", extra="  security: {user: 0}\n")
    with pytest.raises(AdmissionError, match="AC-005"):
        launch(path, backend)
    assert backend.calls == []


def test_a_host_refusal_stops_before_any_image_or_cell(tmp_path: Path) -> None:
    backend = RecordingBackend(refuse="b")
    with pytest.raises(HostError, match="cannot run b"):
        launch(write(tmp_path, "a", "b"), backend)
    assert backend.calls == ["check a", "check b"]


def test_an_image_with_agentcell_labels_refuses_the_batch(tmp_path: Path) -> None:
    forged = "sha256:" + "ab" * 32
    backend = RecordingBackend(labels={forged: {"org.agentcell.managed": "true"}})
    with pytest.raises(AdmissionError, match="AC-039"):
        launch(write(tmp_path, "a"), backend)
    assert not [call for call in backend.calls if call.startswith(("allocate", "up"))]


def test_a_control_plane_that_is_down_launches_nothing(tmp_path: Path) -> None:
    backend = RecordingBackend()
    settings = ClientSettings.from_environ({"AGENTCELL_HOME": str(tmp_path)}, url="https://x")
    settings.paths.agent_socket_dir.mkdir(parents=True)
    settings.paths.agent_socket.touch()
    issuer = RecordingIssuer(settings=settings, down=True)
    with pytest.raises(HostError, match="control plane"):
        launch(write(tmp_path, "a", extra="  identity: true\n"), backend, issuer)
    assert not [call for call in backend.calls if call.startswith("up")]


def test_an_identity_cell_gets_its_token_directory_read_only(tmp_path: Path) -> None:
    backend = RecordingBackend()
    settings = ClientSettings.from_environ({"AGENTCELL_HOME": str(tmp_path)}, url="https://x")
    settings.paths.agent_socket_dir.mkdir(parents=True)
    settings.paths.agent_socket.touch()
    settings.paths.ca_bundle.parent.mkdir(parents=True, exist_ok=True)
    settings.paths.ca_bundle.write_text("CA")
    issuer = RecordingIssuer(settings=settings)
    launch(write(tmp_path, "a", "b", extra="  identity: true\n"), backend, issuer)
    assert issuer.issued == ["acme/a", "acme/b"]
    (identity, socket) = backend.mounts["a"]
    assert identity.target == CELL_IDENTITY_DIR and identity.read_only and socket.read_only
    assert (Path(identity.source) / "token").read_text() == "t0ken\n"
    assert backend.mounts["a"][0].source != backend.mounts["b"][0].source


def test_prepare_cell_needs_the_agents_socket(tmp_path: Path) -> None:
    from agentcell.identity.errors import IdentityError
    from agentcell.policy import admit
    from agentcell.spec.load import load_paths
    from tests.policies import AdmitAll

    settings = ClientSettings.from_environ({"AGENTCELL_HOME": str(tmp_path)}, url="https://x")
    (doc,) = load_paths([write(tmp_path, "a", extra="  identity: true\n")])
    with pytest.raises(IdentityError, match="agent socket"):
        prepare_cell(admit(doc, AdmitAll()), RecordingIssuer(settings=settings), uid=(1, 1))
