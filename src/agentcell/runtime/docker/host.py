"""What this Docker host offers: runtimes, cgroup version, security options.

Read from ``docker info`` once per backend, so every launch can check its runtime without
another round trip.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from agentcell.errors import HostError

__all__ = ["KNOWN_RUNTIMES", "HostFacts", "RuntimeInfo"]

KNOWN_RUNTIMES = ("runc", "crun", "runsc")


@dataclass(frozen=True, kw_only=True)
class RuntimeInfo:
    """One OCI runtime as the engine knows it."""

    name: str
    available: bool
    path: str | None
    args: tuple[str, ...]
    networking: bool
    note: str

    @property
    def sandboxed(self) -> bool:
        """Whether the runtime puts a user-space kernel between the cell and the host."""
        return self.name == "runsc"


@dataclass(frozen=True, kw_only=True)
class HostFacts:
    """What ``docker info`` says about isolation features on this host."""

    engine_version: str
    api_version: str
    cgroup_version: Literal["1", "2"]
    cgroup_driver: str
    security_options: tuple[str, ...]
    runtimes: tuple[RuntimeInfo, ...]
    default_runtime: str
    kernel: str

    @classmethod
    def from_info(cls, info: Mapping[str, Any], *, api_version: str) -> HostFacts:
        """Parse the engine's ``/info`` answer."""
        registered = info.get("Runtimes") or {}
        runtimes = []
        for name in (*KNOWN_RUNTIMES, *sorted(set(registered) - set(KNOWN_RUNTIMES))):
            entry = registered.get(name)
            if entry is None:
                if name not in KNOWN_RUNTIMES:
                    continue
                runtimes.append(
                    RuntimeInfo(
                        name=name,
                        available=False,
                        path=None,
                        args=(),
                        networking=False,
                        note="not registered with the engine (scripts/setup.sh registers it)",
                    )
                )
                continue
            args = tuple(entry.get("runtimeArgs") or ())
            # gVisor's own network stack fails on this kind of host; with --network=none the
            # sandbox has loopback only, so agentcell refuses network for such cells.
            networking = "--network=none" not in args
            note = "gVisor user-space kernel" if name == "runsc" else ""
            if name == "runsc" and not networking:
                note += "; cells without network only (--network=none)"
            if name == "runsc":
                note += (
                    "; spec seccomp profile applied in the sandbox (--oci-seccomp)"
                    if "--oci-seccomp" in args
                    else "; spec seccomp profile NOT applied (no --oci-seccomp)"
                )
            if name.startswith("io.containerd."):
                continue
            runtimes.append(
                RuntimeInfo(
                    name=name,
                    available=True,
                    path=entry.get("path"),
                    args=args,
                    networking=networking,
                    note=note,
                )
            )
        cgroup = str(info.get("CgroupVersion") or "1")
        return cls(
            engine_version=str(info.get("ServerVersion", "?")),
            api_version=api_version,
            cgroup_version="2" if cgroup == "2" else "1",
            cgroup_driver=str(info.get("CgroupDriver", "?")),
            security_options=tuple(info.get("SecurityOptions") or ()),
            runtimes=tuple(runtimes),
            default_runtime=str(info.get("DefaultRuntime", "runc")),
            kernel=str(info.get("KernelVersion", "?")),
        )

    def runtime(self, name: str) -> RuntimeInfo | None:
        """The runtime called ``name``, or None when the engine does not know it."""
        return next((rt for rt in self.runtimes if rt.name == name and rt.available), None)

    def require_runtime(
        self, name: str, *, networked: bool, host_paths: Sequence[str] = ()
    ) -> RuntimeInfo:
        """The runtime a cell asks for, refusing what this host cannot honour.

        Raises:
            HostError: the runtime is absent, cannot give the cell a network here, or (gVisor)
                cannot serve the host's /proc or /sys through a bind mount.
        """
        runtime = self.runtime(name)
        if runtime is None:
            raise HostError(
                f"runtime {name!r} is not available on this host",
                fix="install and register it (scripts/setup.sh), or choose another runtime; "
                "`agentcell runtimes` lists what this host has",
            )
        if networked and not runtime.networking:
            raise HostError(
                f"runtime {name!r} runs without networking on this host "
                f"(registered with {' '.join(runtime.args)}), but the spec asks for a network",
                fix="set network: none for this cell, or use runc/crun",
            )
        unreadable = [path for path in host_paths if _is_kernel_fs(path)]
        if runtime.sandboxed and unreadable:
            raise HostError(
                f"gVisor cannot serve host {', '.join(unreadable)} through a bind mount (its "
                "gofer answers EINVAL), so the cell would see nothing there",
                fix="run this cell with runc or crun, or remove the mount",
            )
        return runtime


def _is_kernel_fs(path: str) -> bool:
    """Whether ``path`` is the host's procfs or sysfs, or inside them."""
    return any(path == root or path.startswith(root + "/") for root in ("/proc", "/sys"))
