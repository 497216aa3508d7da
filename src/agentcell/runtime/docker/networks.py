"""Each tenant's one network on a Docker Engine, and what the host adds to it.

A tenant's networked cells share the internal engine network ``agentcell_<tenant>`` on the
bridge ``ac-<tenant>``. Around it agentcell keeps, on the host:

* the tenant's nftables tables (:mod:`agentcell.runtime.netfilter`), installed whenever the
  network is ensured and by ``agentcell net check``;
* ``<run>/net/<tenant>/resolv.conf``, which names only the gateway address (the tenant's
  resolver) and is bound read-only over each cell's ``/etc/resolv.conf``;
* ``<run>/net/<tenant>/network.json``, the intra-tenant setting last installed, which ``up``
  keeps when it has no tenant document to read it from (``apply`` always has one);
* no default route in any cell: Docker 20.10 gives a cell on an internal network one via the
  gateway, and agentcell deletes it from the host (``nsenter --net`` + ``ip route del``) after
  each start. A cell restarted by the engine gets it back until ``agentcell net check`` runs.

The network is made when the first networked cell of the tenant comes up and removed with the
tenant, and only when no container is on it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import docker
from docker.models.networks import Network

from agentcell.cell.labels import LABEL_MANAGED, LABEL_TENANT
from agentcell.cell.network import tenant_bridge, tenant_network
from agentcell.cell.paths import run_dir
from agentcell.errors import BackendError, CellConflict, CellNotFound, HostError
from agentcell.runtime import netfilter
from agentcell.runtime.docker.client import translated
from agentcell.runtime.docker.translate import TenantAttachment

__all__ = [
    "NetworkState",
    "TenantNetworks",
    "has_default_route",
    "resolv_conf_text",
    "tenant_net_dir",
]

BRIDGE_NAME_OPTION = "com.docker.network.bridge.name"
IP_TIMEOUT_S = 10.0


def tenant_net_dir(tenant: str, environ: Mapping[str, str] | None = None) -> Path:
    """``<run>/net/<tenant>``: the tenant network's files on the host."""
    return run_dir(environ) / "net" / tenant


def resolv_conf_text(gateway: str) -> str:
    """The resolv.conf of every cell on the tenant's network: the gateway alone, one quick
    try (a query must not wait on a resolver that is not there)."""
    return f"nameserver {gateway}\noptions ndots:0 timeout:1 attempts:2\n"


@dataclass(frozen=True, kw_only=True)
class NetworkState:
    """A tenant network as the engine holds it."""

    tenant: str
    name: str
    gateway: str
    subnets: tuple[str, ...]
    containers: tuple[str, ...]
    """Ids of the containers on it."""

    def rules(self, *, intra_tenant: bool) -> netfilter.TenantRules:
        """The inputs of the tenant's host rules."""
        return netfilter.TenantRules(
            tenant=self.tenant,
            gateway=self.gateway,
            subnets=self.subnets,
            intra_tenant=intra_tenant,
        )

    @property
    def resolv_conf(self) -> Path:
        """The host file bound over the cells' /etc/resolv.conf."""
        return tenant_net_dir(self.tenant) / "resolv.conf"


class TenantNetworks:
    """The tenant networks on one engine, and the host state around them."""

    def __init__(self, client: docker.DockerClient) -> None:
        self.client = client

    # -- the engine network ---------------------------------------------------------------------

    def find(self, tenant: str) -> NetworkState | None:
        """The tenant's network, or None when it does not exist.

        Raises:
            CellConflict: a network by that name exists that is not this tenant's.
            BackendError: the engine does not answer.
        """
        network = self._network(tenant_network(tenant))
        return None if network is None else self._state(network, tenant)

    def all(self) -> list[NetworkState]:
        """Every tenant network agentcell made on this engine."""
        with translated("list networks"):
            networks = self.client.networks.list(filters={"label": f"{LABEL_MANAGED}=true"})
        found = []
        for network in networks:
            with translated("inspect network", subject=network.name or "?"):
                network.reload()
            tenant = (network.attrs.get("Labels") or {}).get(LABEL_TENANT, "")
            if tenant and network.name == tenant_network(tenant):
                found.append(self._state(network, tenant))
        return sorted(found, key=lambda state: state.tenant)

    def ensure(self, tenant: str, *, intra_tenant: bool | None = None) -> tuple[NetworkState, bool]:
        """The tenant's network, made if missing, with its host rules and resolv.conf in
        place; and whether it was made now.

        ``intra_tenant`` None keeps the setting last installed (on for a new network).

        Raises:
            CellConflict: the name belongs to another tenant or to something agentcell did
                not make.
            HostError: the host rules could not be installed (a network made now is removed).
            BackendError: the engine refused to make the network.
        """
        state = self.find(tenant)
        created = False
        if state is None:
            name = tenant_network(tenant)
            with translated("create network", subject=name):
                # Internal: no gateway out of the host; the host rules close the host itself.
                network = self.client.networks.create(
                    name,
                    driver="bridge",
                    internal=True,
                    # Two `up`s racing: the engine refuses the second by name, not a twin.
                    check_duplicate=True,
                    options={BRIDGE_NAME_OPTION: tenant_bridge(tenant)},
                    labels={LABEL_MANAGED: "true", LABEL_TENANT: tenant},
                )
                network.reload()
            state = self._state(network, tenant)
            created = True
        try:
            self.install(state, intra_tenant=intra_tenant)
        except HostError:
            if created:
                self.remove(tenant)
            raise
        return state, created

    def attachment(self, state: NetworkState, *, names: Sequence[str]) -> TenantAttachment:
        """What a cell joining ``state`` gets: DNS through the gateway, the resolv.conf file,
        and its tenant's cell names as NO_PROXY."""
        return TenantAttachment(
            gateway=state.gateway,
            resolv_conf=str(state.resolv_conf),
            no_proxy=tuple(sorted(set(names))),
        )

    def remove(self, tenant: str) -> bool:
        """Remove the tenant's network, host rules and files; False when there was no network.

        Raises:
            CellConflict: a container is still on the network (nothing is removed).
            HostError: the host rules could not be removed.
        """
        network = self._network(tenant_network(tenant))
        if network is not None:
            state = self._state(network, tenant)
            if state.containers:
                raise CellConflict(
                    f"network {state.name} of tenant {tenant} still has "
                    f"{len(state.containers)} containers on it",
                    fix=f"remove its cells first (agentcell tenant delete {tenant} --force)",
                )
            with (
                contextlib.suppress(BackendError),
                translated("remove network", subject=state.name),
            ):
                network.remove()
        netfilter.remove(tenant)
        directory = tenant_net_dir(tenant)
        shutil.rmtree(directory, ignore_errors=True)
        with contextlib.suppress(OSError):
            directory.parent.rmdir()  # only when no other tenant network has files there
        return network is not None

    # -- the host around it ---------------------------------------------------------------------

    def intra_tenant(self, tenant: str) -> bool:
        """The intra-tenant setting last installed for the tenant (on when none was)."""
        try:
            record = json.loads((tenant_net_dir(tenant) / "network.json").read_text())
        except (OSError, ValueError):
            return True
        return bool(record.get("intra_tenant", True)) if isinstance(record, dict) else True

    def expected(self, state: NetworkState) -> netfilter.HostRules:
        """The host rules the tenant's network should have now."""
        return netfilter.ruleset(state.rules(intra_tenant=self.intra_tenant(state.tenant)))

    def install(self, state: NetworkState, *, intra_tenant: bool | None = None) -> list[str]:
        """Put the tenant's host rules and files in place; what had to change, one line each.

        Raises:
            HostError: nft failed, or the files cannot be written.
        """
        intra = self.intra_tenant(state.tenant) if intra_tenant is None else intra_tenant
        spec = state.rules(intra_tenant=intra)
        fixed = [
            f"host rules: {problem}"
            for problem in netfilter.differences(
                netfilter.ruleset(spec), netfilter.read_tables(state.tenant)
            )
        ]
        netfilter.install(spec)
        directory = tenant_net_dir(state.tenant)
        try:
            directory.mkdir(parents=True, exist_ok=True, mode=0o755)
            wanted = resolv_conf_text(state.gateway)
            current = state.resolv_conf.read_text() if state.resolv_conf.exists() else None
            if current != wanted:
                _write(state.resolv_conf, wanted)
                fixed.append(f"resolv.conf: {'rewritten' if current is not None else 'written'}")
            _write(directory / "network.json", json.dumps({"intra_tenant": intra}) + "\n")
        except OSError as exc:
            raise HostError(
                f"cannot write the files of tenant network {state.name} in {directory}: "
                f"{exc.strerror}",
                fix="run as root, or set AGENTCELL_HOME to a directory you can write",
            ) from exc
        return fixed

    def drop_default_routes(self, pid: int) -> list[str]:
        """Delete the default routes (IPv4 and IPv6) of the network namespace of host process
        ``pid``; the routes deleted, one line each.

        Raises:
            HostError: ``nsenter`` or ``ip`` is missing, or a route could not be deleted.
        """
        if pid <= 0:
            return []
        removed = []
        for family, table in (("-4", "route"), ("-6", "ipv6_route")):
            if not has_default_route(Path(f"/proc/{pid}/net/{table}"), ipv6=family == "-6"):
                continue
            _ip(pid, [family, "route", "del", "default"])
            removed.append(f"default route ({'IPv6' if family == '-6' else 'IPv4'})")
        return removed

    def check(self, state: NetworkState) -> list[str]:
        """Put everything of the tenant's network back in place: its host rules and files,
        and no default route in any running container on it; what was fixed, one line each.

        Raises:
            HostError: nft, nsenter or ip failed.
            BackendError: the engine does not answer.
        """
        fixed = self.install(state)
        for container_id in state.containers:
            try:
                with translated("inspect", subject=container_id[:12]):
                    attrs = self.client.api.inspect_container(container_id)
            except CellNotFound:
                continue  # removed since the network was read
            pid = int((attrs.get("State") or {}).get("Pid") or 0)
            name = str(attrs.get("Name") or container_id[:12]).lstrip("/")
            fixed += [f"{name}: removed {route}" for route in self.drop_default_routes(pid)]
        return fixed

    # -- internals ------------------------------------------------------------------------------

    def _network(self, name: str) -> Network | None:
        """The network called exactly ``name``: the engine's name filter matches substrings."""
        with translated("look up network", subject=name):
            for network in self.client.networks.list(names=[name]):
                if network.name == name:
                    network.reload()
                    return network
        return None

    @staticmethod
    def _state(network: Network, tenant: str) -> NetworkState:
        attrs = network.attrs
        labels = attrs.get("Labels") or {}
        owner = labels.get(LABEL_TENANT)
        name = network.name or "?"
        if labels.get(LABEL_MANAGED) != "true" or owner != tenant:
            raise CellConflict(
                f"network {name} belongs to "
                + (f"tenant {owner}" if owner else "something agentcell did not create")
                + f", not tenant {tenant}; no cell of tenant {tenant} will join it",
                fix=f"remove or rename that network (docker network rm {name})",
            )
        configs = (attrs.get("IPAM") or {}).get("Config") or []
        gateways = [
            str(c.get("Gateway")) for c in configs if c.get("Gateway") and ":" not in c["Gateway"]
        ]
        if not gateways:
            raise BackendError(
                f"network {name} has no IPv4 gateway address",
                fix=f"remove it (docker network rm {name}); agentcell makes it again",
            )
        return NetworkState(
            tenant=tenant,
            name=name,
            gateway=gateways[0],
            subnets=tuple(str(c["Subnet"]) for c in configs if c.get("Subnet")),
            containers=tuple(sorted((attrs.get("Containers") or {}).keys())),
        )


def _write(path: Path, text: str) -> None:
    """Replace ``path`` atomically: a cell's bind mount keeps the old inode, so the new
    content must land in place, not by rename."""
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(path, 0o644)


def has_default_route(path: Path, *, ipv6: bool) -> bool:
    """Whether the routing table at ``path`` (a netns's ``net/route`` or ``net/ipv6_route``)
    holds a default route out of an interface (the kernel's reject route on lo does not)."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return False
    if ipv6:
        # dest (32 hex) prefix-len ... ; a default route is ::/0 (not the unreachable lo one)
        return any(
            parts[0] == "0" * 32 and parts[1] == "00" and parts[9] != "lo"
            for parts in (line.split() for line in lines)
            if len(parts) >= 10
        )
    return any(
        parts[1] == "00000000" and parts[7] == "00000000"
        for parts in (line.split() for line in lines[1:])
        if len(parts) >= 8
    )


def _ip(pid: int, arguments: Sequence[str]) -> None:
    nsenter, ip = shutil.which("nsenter"), shutil.which("ip")
    if nsenter is None or ip is None:
        raise HostError(
            "cannot remove a cell's default route: nsenter or ip is not installed",
            fix="install util-linux and iproute2 (scripts/setup.sh does)",
        )
    command = [nsenter, f"--net=/proc/{pid}/ns/net", ip, *arguments]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=IP_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise HostError(f"{' '.join(command[2:])} failed: {exc}", fix="run as root") from exc
    if done.returncode != 0:
        raise HostError(
            f"cannot remove the default route of pid {pid}: {done.stderr.strip()[:200]}",
            fix="run as root",
        )
