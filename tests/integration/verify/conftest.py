"""Cells for the proof tests: every example on every runtime this engine offers.

They are started once per module (all at the same time, so their healthchecks run while the
tests do) and removed afterwards, pass or fail. Tenants are random, so nothing here touches a
demo cell or another test's cells.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator

import pytest

from agentcell.errors import Error, HostError
from agentcell.runtime.docker.backend import DockerBackend
from agentcell.runtime.docker.proof import DockerProof
from agentcell.spec.load import load_bundle
from tests.conftest import EXAMPLES
from tests.integration.verify.cells import (
    EXAMPLE_NAMES,
    RUNTIMES,
    Cells,
    admitted,
    for_runtime,
    unavailable,
)


@pytest.fixture(scope="session")
def backend() -> Iterator[DockerBackend]:
    try:
        engine = DockerBackend.connect()
    except HostError as exc:
        unavailable(f"no Docker Engine: {exc.what}")
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def proof(backend: DockerBackend) -> DockerProof:
    return DockerProof(backend)


@pytest.fixture(scope="module")
def cells(backend: DockerBackend) -> Iterator[Cells]:
    available = [name for name in RUNTIMES if backend.facts.runtime(name) is not None]
    examples = {doc.name: doc for doc in load_bundle([EXAMPLES]).agents}
    token = secrets.token_hex(2)
    record = Cells(tenants={rt: f"pv{rt}{token}" for rt in available}, documents={})
    try:
        for runtime in available:
            for name in EXAMPLE_NAMES:
                doc = for_runtime(examples[name], runtime, record.tenants[runtime])
                backend.up(admitted(doc))
                record.documents[(runtime, name)] = doc
        yield record
    finally:
        for runtime, name in list(record.documents):
            with contextlib.suppress(Error):
                backend.down(record.tenants[runtime], name)
