"""``agentcell audit``: judge every container on a host by the same rules as specs. Pure.

The runtime layer reads the containers (:mod:`agentcell.runtime.docker.facts`) and hands over
:class:`ObservedContainer` values; this module scores them and lays the verdicts out by CIS
Docker Benchmark v1.6.0 control, the way docker-bench does.

Scores
    A container's score is the share of the rules that apply to it which it passes, 0-100. A
    rule passes when it found nothing at warning or error level, or when a written exception
    covers what it found. The overall score is the mean of the containers' scores, so one
    container with many findings cannot hide behind many clean ones, nor the other way round.

CIS view
    Each control shows PASS, WARN (some container breaks a rule that serves the control),
    INFO (only informational findings) or NOTE (agentcell does not judge this control, and
    says why). Exceptions do not turn a WARN into a PASS: CIS knows nothing of them, so the
    offending container is listed with its written reason instead. Where agentcell's verdict
    differs from docker-bench's on purpose, the row carries the reason (:data:`CIS_DEVIATIONS`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from agentcell.policy.admission import Finding, except_findings
from agentcell.policy.presets import RulePolicy, RuleVerdict
from agentcell.policy.view import CellView

__all__ = [
    "CIS_CONTROLS",
    "CIS_DEVIATIONS",
    "CIS_NOT_JUDGED",
    "AuditReport",
    "CisRow",
    "ContainerAudit",
    "ObservedContainer",
    "audit",
]

CisStatus = Literal["PASS", "WARN", "INFO", "NOTE"]

# CIS Docker Benchmark v1.6.0, sections 4 (images, as far as a container shows them) and 5.
CIS_CONTROLS: tuple[tuple[str, str], ...] = (
    ("4.1", "Ensure that a user for the container has been created"),
    ("4.6", "Ensure that HEALTHCHECK instructions have been added to container images"),
    ("5.1", "Ensure swarm mode is not Enabled, if not needed"),
    ("5.2", "Ensure that, if applicable, an AppArmor Profile is enabled"),
    ("5.3", "Ensure that, if applicable, SELinux security options are set"),
    ("5.4", "Ensure that Linux kernel capabilities are restricted within containers"),
    ("5.5", "Ensure that privileged containers are not used"),
    ("5.6", "Ensure sensitive host system directories are not mounted on containers"),
    ("5.7", "Ensure sshd is not run within containers"),
    ("5.8", "Ensure privileged ports are not mapped within containers"),
    ("5.9", "Ensure that only needed ports are open on the container"),
    ("5.10", "Ensure that the host's network namespace is not shared"),
    ("5.11", "Ensure that the memory usage for containers is limited"),
    ("5.12", "Ensure that CPU priority is set appropriately on containers"),
    ("5.13", "Ensure that the container's root filesystem is mounted as read only"),
    ("5.14", "Ensure that incoming container traffic is bound to a specific host interface"),
    ("5.15", "Ensure that the 'on-failure' container restart policy is set to '5'"),
    ("5.16", "Ensure that the host's process namespace is not shared"),
    ("5.17", "Ensure that the host's IPC namespace is not shared"),
    ("5.18", "Ensure that host devices are not directly exposed to containers"),
    ("5.19", "Ensure that the default ulimit is overwritten at runtime if needed"),
    ("5.20", "Ensure mount propagation mode is not set to shared"),
    ("5.21", "Ensure that the host's UTS namespace is not shared"),
    ("5.22", "Ensure the default seccomp profile is not Disabled"),
    ("5.23", "Ensure that docker exec commands are not used with the privileged option"),
    ("5.24", "Ensure that docker exec commands are not used with the user=root option"),
    ("5.25", "Ensure that cgroup usage is confirmed"),
    ("5.26", "Ensure that the container is restricted from acquiring additional privileges"),
    ("5.27", "Ensure that container health is checked at runtime"),
    ("5.28", "Ensure that Docker commands always make use of the latest version of their image"),
    ("5.29", "Ensure that the PIDs cgroup limit is used"),
    ("5.30", "Ensure that Docker's default bridge 'docker0' is not used"),
    ("5.31", "Ensure that the host's user namespaces are not shared"),
    ("5.32", "Ensure that the Docker socket is not mounted inside any containers"),
)

# Controls no rule judges, and why.
CIS_NOT_JUDGED: dict[str, str] = {
    "5.1": "a host setting, not a container's: `docker info` shows Swarm: inactive or active",
    "5.3": "not judged: SELinux is not active on this host, and docker-bench passes any "
    "security option (even no-new-privileges) as an SELinux label; agentcell will judge "
    "SELinux labels on hosts that enforce SELinux",
    "5.7": "needs a process listing from inside each container (docker exec); agentcell "
    "cells run one process and have no shell to run ps in",
    "5.9": "manual in CIS: which ports an agent needs is for its owner to decide; published "
    "ports are judged under 5.8 and 5.14",
    "5.19": "manual in CIS; the PIDs limit (5.29) and memory limit (5.11) bound what ulimits would",
    "5.23": "a property of `docker exec` calls, which the engine does not record on the "
    "container; see the engine's event log",
    "5.24": "a property of `docker exec` calls, which the engine does not record on the "
    "container; see the engine's event log",
    "5.25": "deliberately not judged: docker-bench warns about any --cgroup-parent, but "
    "agentcell may place each tenant's cells under the tenant's own cgroup parent to enforce "
    "its quota; that limits are in force is judged under 5.11, 5.12 and 5.29",
}

# Where a judged control's verdict differs from docker-bench's on purpose.
CIS_DEVIATIONS: dict[str, str] = {
    "5.4": "stricter than docker-bench: a container that did not drop ALL capabilities "
    "warns even if it added none, and NET_RAW or SYS_ADMIN added are errors (AC-002/003)",
    "5.6": "stricter: read-only mounts of system directories warn too (AC-025), as do "
    "directories that contain one (/var holds /var/lib/docker)",
    "5.12": "stricter: CPU shares alone do not pass; a CPU quota (--cpus) is required (AC-013)",
    "5.15": "unbounded restart policies warn (always, unless-stopped, on-failure:0); "
    "on-failure with more than 5 retries is informational",
    "5.22": "as docker-bench for unconfined; that the default profile allows io_uring is "
    "reported separately (AC-009) and does not fail 5.22",
    "5.27": "judged from the configured healthcheck (the image's or the container's), not "
    "from the current health status",
    "5.28": "judged as pinning: a reference by digest passes, a tag warns",
    "5.32": "stricter: any engine socket (docker, containerd, CRI-O, podman), and any "
    "directory that contains one, counts; read-only does not pass",
}


@dataclass(frozen=True, kw_only=True)
class ObservedContainer:
    """A container as the engine reports it, translated into a view."""

    view: CellView
    container_id: str
    state: str
    """``running``, ``exited``, ``created``, ..."""
    managed: bool
    """Created by agentcell (it carries agentcell's labels)."""


@dataclass(frozen=True, kw_only=True)
class ContainerAudit:
    """One container's verdicts and score."""

    container: ObservedContainer
    verdicts: tuple[RuleVerdict, ...]
    findings: tuple[Finding, ...]
    """Every finding, with the container's written exceptions applied."""

    @property
    def applicable(self) -> int:
        """How many rules had something to judge."""
        return sum(1 for verdict in self.verdicts if verdict.applicable)

    @property
    def failed_rules(self) -> tuple[str, ...]:
        """Ids of the rules whose un-excepted warnings or errors count against the score."""
        return tuple(
            sorted({f.rule for f in self.findings if f.severity != "info" and f.excepted is None})
        )

    @property
    def score(self) -> float:
        """Share of applicable rules passed, 0-100."""
        if not self.applicable:
            return 100.0
        return 100.0 * (self.applicable - len(self.failed_rules)) / self.applicable


@dataclass(frozen=True, kw_only=True)
class CisOffender:
    """One container's finding under one CIS control."""

    container: str
    finding: Finding


@dataclass(frozen=True, kw_only=True)
class CisRow:
    """One CIS control's status across every container."""

    id: str
    title: str
    status: CisStatus
    rules: tuple[str, ...]
    offenders: tuple[CisOffender, ...]
    note: str | None
    """Why the control is not judged, or how agentcell's verdict differs from docker-bench's."""


@dataclass(frozen=True, kw_only=True)
class AuditReport:
    """Every container's audit, an overall score, and the CIS view."""

    policy: str
    containers: tuple[ContainerAudit, ...]
    cis_rules: dict[str, tuple[str, ...]]
    """CIS control id -> the ids of the rules of this policy that serve it."""

    @property
    def overall(self) -> float | None:
        """Mean container score; None when the host has no containers."""
        if not self.containers:
            return None
        return sum(c.score for c in self.containers) / len(self.containers)

    def cis(self) -> tuple[CisRow, ...]:
        """The CIS view: one row per control."""
        rows = []
        for control, title in CIS_CONTROLS:
            rules = self.cis_rules.get(control, ())
            if not rules:
                reason = CIS_NOT_JUDGED.get(control, "no agentcell rule serves this control")
                rows.append(
                    CisRow(
                        id=control, title=title, status="NOTE", rules=(), offenders=(), note=reason
                    )
                )
                continue
            offenders = tuple(
                CisOffender(container=audit.container.view.name, finding=finding)
                for audit in self.containers
                for finding in audit.findings
                if finding.rule in rules
            )
            status: CisStatus
            if not self.containers:
                status = "NOTE"
            elif any(o.finding.severity != "info" for o in offenders):
                status = "WARN"
            elif offenders:
                status = "INFO"
            else:
                status = "PASS"
            note = CIS_DEVIATIONS.get(control)
            if not self.containers:
                note = "no containers on this host"
            rows.append(
                CisRow(
                    id=control,
                    title=title,
                    status=status,
                    rules=rules,
                    offenders=offenders,
                    note=note,
                )
            )
        return tuple(rows)


def audit(containers: Iterable[ObservedContainer], policy: RulePolicy) -> AuditReport:
    """Judge every container by ``policy`` and score it."""
    audits = []
    for container in containers:
        verdicts = policy.verdicts(container.view)
        findings = except_findings(
            [finding for verdict in verdicts for finding in verdict.findings],
            container.view.exception_reasons,
        )
        audits.append(
            ContainerAudit(container=container, verdicts=verdicts, findings=tuple(findings))
        )
    cis_rules: dict[str, list[str]] = {}
    for rule in policy.rules:
        for control in rule.cis:
            cis_rules.setdefault(control, []).append(rule.id)
    return AuditReport(
        policy=policy.name,
        containers=tuple(sorted(audits, key=lambda a: a.container.view.name)),
        cis_rules={control: tuple(ids) for control, ids in cis_rules.items()},
    )
