"""Namespaces and network: the host's pid, net, ipc, uts and user namespaces, devices,
ports, the default bridge."""

from __future__ import annotations

from agentcell.policy.rules.base import Check, Rule, Violation
from agentcell.policy.view import CellView

__all__ = [
    "DEFAULT_BRIDGE",
    "HOST_DEVICE",
    "HOST_IPC",
    "HOST_NETWORK",
    "HOST_PID",
    "HOST_USERNS",
    "HOST_UTS",
    "PORT_ON_EVERY_INTERFACE",
    "PRIVILEGED_PORT",
    "RULES",
]


def _namespace(flag: str, what: str) -> Check:
    def check(view: CellView) -> list[Violation]:
        if not getattr(view, flag):
            return []
        return [Violation(message=f"shares the host's {what} namespace", fact=flag)]

    return check


HOST_NETWORK = Rule(
    id="AC-016",
    severity="error",
    title="Host network namespace",
    rationale="A cell in the host's network namespace reaches every host service on "
    "loopback, every interface and every tenant network, and bypasses egress control.",
    remediation="Drop host.network (--network host); use a tenant network.",
    cis=("5.10",),
    pss="baseline",
    security_severity=8.0,
    check=_namespace("host_network", "network"),
)


HOST_PID = Rule(
    id="AC-017",
    severity="error",
    title="Host PID namespace",
    rationale="A cell in the host's PID namespace sees every process on the host and, with "
    "the wrong capability, can signal or trace them.",
    remediation="Drop host.pid (--pid host). A monitoring agent can read processes from a "
    "read-only /proc mount instead.",
    cis=("5.16",),
    pss="baseline",
    security_severity=7.0,
    check=_namespace("host_pid", "PID"),
)


HOST_IPC = Rule(
    id="AC-018",
    severity="error",
    title="Host IPC namespace",
    rationale="The host's IPC namespace exposes host processes' shared memory and message queues.",
    remediation="Do not pass --ipc host.",
    cis=("5.17",),
    pss="baseline",
    security_severity=7.0,
    check=_namespace("host_ipc", "IPC"),
)


HOST_UTS = Rule(
    id="AC-019",
    severity="error",
    title="Host UTS namespace",
    rationale="In the host's UTS namespace the cell sees the host's hostname and, with "
    "SYS_ADMIN, can change it for everyone on the host.",
    remediation="Do not pass --uts host.",
    cis=("5.21",),
    security_severity=4.0,
    check=_namespace("host_uts", "UTS"),
)


HOST_USERNS = Rule(
    id="AC-020",
    severity="error",
    title="Host user namespace",
    rationale="On an engine that remaps users, --userns host turns the cell's root back "
    "into the host's root.",
    remediation="Do not pass --userns host.",
    cis=("5.31",),
    security_severity=7.0,
    check=_namespace("host_userns", "user"),
)


def _devices(view: CellView) -> list[Violation]:
    return [
        Violation(
            message=f"host device {device.host_path} is passed in as {device.container_path}",
            fact="devices",
            item=device.field,
        )
        for device in view.devices
    ]


HOST_DEVICE = Rule(
    id="AC-021",
    severity="error",
    title="Host device exposed",
    rationale="A host device node gives the cell direct access to hardware or kernel "
    "interfaces (disks, /dev/mem, GPUs) beyond any container boundary.",
    remediation="Do not pass --device. If hardware access is the point, write a reasoned "
    "exception naming the device.",
    cis=("5.18",),
    security_severity=8.0,
    check=_devices,
)


# Host addresses that mean "every interface" in a port binding (not a bind made here).
_WILDCARD_ADDRESSES = frozenset({"", "0.0.0.0", "::"})  # noqa: S104


def _wildcard_ports(view: CellView) -> list[Violation]:
    return [
        Violation(
            message=f"port {port.container_port} is published on every host interface",
            fact="ports",
            item=port.field,
            fix="bind it to one address, e.g. -p 127.0.0.1:8080:8080",
        )
        for port in view.ports
        if port.host_ip in _WILDCARD_ADDRESSES
    ]


PORT_ON_EVERY_INTERFACE = Rule(
    id="AC-032",
    severity="warning",
    title="Port published on every interface",
    rationale="A port bound to 0.0.0.0 is reachable from every network the host is on.",
    remediation="Publish the port on one address (-p 127.0.0.1:PORT:PORT).",
    cis=("5.14",),
    security_severity=4.0,
    check=_wildcard_ports,
)


def _privileged_ports(view: CellView) -> list[Violation]:
    return [
        Violation(
            message=f"port {port.container_port} is published on privileged host port "
            f"{port.host_port}",
            fact="ports",
            item=port.field,
        )
        for port in view.ports
        if port.host_port is not None and 0 < port.host_port < 1024
    ]


PRIVILEGED_PORT = Rule(
    id="AC-033",
    severity="warning",
    title="Privileged host port published",
    rationale="Host ports below 1024 are reserved for services the host trusts.",
    remediation="Publish on a host port above 1023.",
    cis=("5.8",),
    security_severity=3.0,
    check=_privileged_ports,
)


def _default_bridge(view: CellView) -> list[Violation]:
    if not view.default_bridge:
        return []
    return [
        Violation(
            message="attached to the default bridge, where every such container reaches "
            "every other",
            fact="network",
        )
    ]


DEFAULT_BRIDGE = Rule(
    id="AC-034",
    severity="warning",
    title="Default bridge network",
    rationale="Containers on docker0 can reach each other, whoever owns them; tenant "
    "networks keep tenants apart.",
    remediation="Attach the container to a user-defined (tenant) network, or none.",
    cis=("5.30",),
    security_severity=4.0,
    check=_default_bridge,
)


def _host_rules(view: CellView) -> list[Violation]:
    if view.host_rules is None:
        return []
    return [
        Violation(
            message=f"the host rules of tenant network {view.network} are missing or altered: "
            f"{view.host_rules}; its cells can reach the host's services and what is routed",
            fact="network",
        )
    ]


TENANT_NETWORK_RULES = Rule(
    id="AC-042",
    severity="error",
    title="Tenant network without its host rules",
    rationale="Docker 20.10's internal networks filter forwarding only: without agentcell's "
    "nftables rules a cell on a tenant bridge reaches every service on the host's addresses "
    "(its gateway, other bridges' gateways) and, with intra-tenant traffic off, its siblings.",
    remediation="Run `agentcell net check` to re-apply the tenant networks' host rules.",
    security_severity=8.0,
    check=_host_rules,
    applies=lambda view: view.kind == "container",
)


RULES: tuple[Rule, ...] = (
    HOST_NETWORK,
    HOST_PID,
    HOST_IPC,
    HOST_UTS,
    HOST_USERNS,
    HOST_DEVICE,
    PORT_ON_EVERY_INTERFACE,
    PRIVILEGED_PORT,
    DEFAULT_BRIDGE,
    TENANT_NETWORK_RULES,
)
