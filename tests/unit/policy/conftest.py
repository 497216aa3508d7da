"""Secure baselines for policy tests: a spec and a ``docker inspect`` document that every rule
passes, and factories that apply one change to either and return the view the rules judge."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Mapping
from typing import Any

import pytest
import yaml

from agentcell.policy.audit import ObservedContainer
from agentcell.policy.view import CellView, view_of_spec
from agentcell.runtime.docker.container_view import view_of_container
from agentcell.spec.load import SpecDocument, load_text

DIGEST = "sha256:" + "ab" * 32
IMAGE = f"agentcell/sandbox@{DIGEST}"

# A profile that refuses everything but what it names, like agentcell's strict one.
STRICT_PROFILE = {
    "defaultAction": "SCMP_ACT_ERRNO",
    "syscalls": [{"names": ["read", "write", "exit_group"], "action": "SCMP_ACT_ALLOW"}],
}

SECURE_SPEC: dict[str, Any] = {
    "apiVersion": "agentcell/v1",
    "kind": "Agent",
    "metadata": {"name": "probe", "tenant": "t1"},
    "spec": {
        "image": IMAGE,
        "security": {"seccomp": "strict"},
        "healthcheck": {"command": ["python3", "/opt/agentcell/health.py"]},
    },
}

# What agentcell asks the engine for, as `docker inspect` reports it.
SECURE_INSPECT: dict[str, Any] = {
    "Id": "c0ffee" * 10 + "beef",
    "Name": "/agentcell-t1-probe",
    "Image": DIGEST,
    "State": {"Status": "running"},
    "AppArmorProfile": "docker-default",
    "Config": {
        "User": "1001:1001",
        "Image": IMAGE,
        "Labels": {"org.agentcell.managed": "true", "org.agentcell.tenant": "t1"},
        "Healthcheck": {"Test": ["CMD", "python3", "/opt/agentcell/health.py"]},
    },
    "HostConfig": {
        "Privileged": False,
        "CapAdd": None,
        "CapDrop": ["ALL"],
        "ReadonlyRootfs": True,
        "SecurityOpt": ["no-new-privileges:true", "seccomp=" + json.dumps(STRICT_PROFILE)],
        "Runtime": "runc",
        "Memory": 256 * 1024**2,
        "MemorySwap": 256 * 1024**2,
        "NanoCpus": 500_000_000,
        "CpuQuota": 0,
        "CpuPeriod": 0,
        "PidsLimit": 128,
        "Tmpfs": {"/tmp": "size=67108864,mode=1777,noexec,nosuid,nodev"},
        "Mounts": None,
        "NetworkMode": "none",
        "PidMode": "",
        "IpcMode": "private",
        "UTSMode": "",
        "UsernsMode": "",
        "Devices": [],
        "RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": 5},
        "PortBindings": {},
    },
    "Mounts": [],
}


def merged(base: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``patch`` laid over it; nested mappings merge, everything else replaces."""
    out = copy.deepcopy(dict(base))
    for key, value in patch.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merged(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def spec_text(patch: Mapping[str, Any] | None = None) -> str:
    """The secure spec with ``patch`` applied, as YAML."""
    return yaml.safe_dump(merged(SECURE_SPEC, patch or {}), sort_keys=False)


def load_spec(patch: Mapping[str, Any] | None = None) -> SpecDocument:
    (doc,) = load_text(spec_text(patch), file="agent.yaml")
    return doc


@pytest.fixture
def spec_view() -> Callable[..., CellView]:
    """``spec_view({"spec": {...}})``: the view of the secure spec with one change."""

    def make(patch: Mapping[str, Any] | None = None) -> CellView:
        return view_of_spec(load_spec(patch))

    return make


@pytest.fixture
def spec_doc() -> Callable[..., SpecDocument]:
    """``spec_doc({"spec": {...}})``: the secure spec with one change, loaded."""
    return load_spec


@pytest.fixture
def container_view() -> Callable[..., CellView]:
    """``container_view({"HostConfig": {...}})``: the view of the secure container with one
    change to its inspect document."""

    def make(patch: Mapping[str, Any] | None = None) -> CellView:
        return view_of_container(merged(SECURE_INSPECT, patch or {})).view

    return make


@pytest.fixture
def spec_yaml() -> Callable[..., str]:
    """``spec_yaml({"spec": {...}})``: the secure spec with one change, as YAML text."""
    return spec_text


@pytest.fixture
def observed() -> Callable[..., ObservedContainer]:
    """``observed({"Name": "/web", ...})``: the secure container with one change, translated."""

    def make(patch: Mapping[str, Any] | None = None) -> ObservedContainer:
        return view_of_container(merged(SECURE_INSPECT, patch or {}))

    return make
