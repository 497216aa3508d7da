"""The settings the engine actually holds for a container, as ``agentcell inspect`` shows them.

Read from ``docker inspect``; what the kernel enforces is the business of ``verify``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agentcell.cell.labels import (
    LABEL_EXCEPTIONS,
    LABEL_IMAGE_REQUESTED,
    LABEL_IMAGE_TRUST,
    LABEL_SOURCE,
)
from agentcell.spec.units import format_bytes

__all__ = ["cpu_limit", "effective_settings"]


def _bytes(value: Any) -> str:
    return format_bytes(int(value)) if value and int(value) > 0 else "unlimited"


def cpu_limit(host_config: Mapping[str, Any]) -> float:
    """Cores the engine allows (``--cpus`` or a CFS quota); 0.0 when unlimited."""
    nano = host_config.get("NanoCpus") or 0
    quota, period = host_config.get("CpuQuota") or 0, host_config.get("CpuPeriod") or 100_000
    return float(nano / 1e9 if nano else (quota / period if quota > 0 else 0.0))


def effective_settings(attrs: Mapping[str, Any]) -> dict[str, str]:
    """Setting name -> value, in the order a reviewer reads them."""
    host = attrs.get("HostConfig") or {}
    config = attrs.get("Config") or {}
    labels = config.get("Labels") or {}
    cores = cpu_limit(host)
    cpus = f"{cores:g}" if cores else "unlimited"
    restart = host.get("RestartPolicy") or {}
    health = config.get("Healthcheck") or {}
    mounts = [
        f"{m.get('Source')} -> {m.get('Destination')} ({'rw' if m.get('RW') else 'ro'})"
        for m in attrs.get("Mounts") or []
    ]
    security = [
        opt if len(opt) < 60 else opt[:40] + "...(inline profile)"
        for opt in host.get("SecurityOpt") or []
    ]
    return {
        "container": str(attrs.get("Name", "?")).lstrip("/"),
        "image": str(labels.get(LABEL_IMAGE_REQUESTED) or config.get("Image", "?")),
        "runs image": str(config.get("Image", "?")),
        "image trust": str(labels.get(LABEL_IMAGE_TRUST) or "not checked"),
        "image id": str(attrs.get("Image", "?")),
        "runtime": str(host.get("Runtime") or "runc"),
        "user": str(config.get("User") or "root (image default)"),
        "capabilities dropped": ",".join(host.get("CapDrop") or []) or "none",
        "capabilities added": ",".join(host.get("CapAdd") or []) or "none",
        "privileged": str(bool(host.get("Privileged"))).lower(),
        "security options": "; ".join(security) or "none",
        "read-only rootfs": str(bool(host.get("ReadonlyRootfs"))).lower(),
        "tmpfs": "; ".join(f"{k} ({v})" for k, v in (host.get("Tmpfs") or {}).items()) or "none",
        "cpus": cpus,
        "memory": _bytes(host.get("Memory")),
        "memory+swap": _bytes(host.get("MemorySwap")),
        "pids": str(host.get("PidsLimit") or "unlimited"),
        "network": str(host.get("NetworkMode") or "default"),
        "pid namespace": str(host.get("PidMode") or "private"),
        "host mounts": "; ".join(mounts) or "none",
        "restart": f"{restart.get('Name') or 'no'}"
        + (f":{restart.get('MaximumRetryCount')}" if restart.get("Name") == "on-failure" else ""),
        "healthcheck": " ".join(health.get("Test") or []) or "none",
        "policy exceptions": labels.get(LABEL_EXCEPTIONS) or "none",
        "spec": str(labels.get(LABEL_SOURCE) or "not an agentcell cell"),
    }
