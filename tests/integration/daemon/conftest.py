"""Fixtures for tests of the host service; the machinery is in ``daemon_harness``.

- ``make_daemon(templates=..., tenants=..., env=...)`` starts services (each on its own state
  directory and port); every one is stopped, its tenants' cells removed and its files deleted
  afterwards, pass or fail.
- ``two_tenants``: one service with a ``py`` template (pool min 1) for each of two fresh
  tenants, and a token of each.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pytest

from .daemon_harness import (
    Daemon,
    DaemonClient,
    make_home,
    new_tenant,
    remove_tenant_cells,
    start_daemon,
    template_yaml,
)

MakeDaemon = Callable[..., Daemon]


@pytest.fixture
def make_daemon(docker_client: Any) -> Iterator[MakeDaemon]:
    """Start host services; all are stopped and cleaned up afterwards."""
    started: list[Daemon] = []

    def make(
        *,
        templates: Mapping[str, str] | None = None,
        tenants: tuple[str, ...] = (),
        env: Mapping[str, str] | None = None,
        network_services: bool = False,
    ) -> Daemon:
        home = make_home()
        try:
            daemon = start_daemon(
                home,
                templates=templates,
                tenants=tenants,
                env=env,
                network_services=network_services,
            )
        except BaseException:
            remove_tenant_cells(tenants)
            shutil.rmtree(home, ignore_errors=True)
            raise
        started.append(daemon)
        return daemon

    try:
        yield make
    finally:
        for daemon in started:
            daemon.process.stop()
        for daemon in started:
            remove_tenant_cells(daemon.tenants)
            shutil.rmtree(daemon.home, ignore_errors=True)


@dataclass
class TwoTenants:
    """A service serving tenants ``a`` and ``b``, each with a ``py`` template."""

    daemon: Daemon
    a: str
    b: str
    token_a: str
    token_b: str

    @property
    def client_a(self) -> DaemonClient:
        return self.daemon.client(self.token_a)

    @property
    def client_b(self) -> DaemonClient:
        return self.daemon.client(self.token_b)


@pytest.fixture
def two_tenants(make_daemon: MakeDaemon) -> TwoTenants:
    a, b = new_tenant("da"), new_tenant("db")
    daemon = make_daemon(
        templates={"a.yaml": template_yaml(a), "b.yaml": template_yaml(b)}, tenants=(a, b)
    )
    return TwoTenants(daemon=daemon, a=a, b=b, token_a=daemon.token(a), token_b=daemon.token(b))
