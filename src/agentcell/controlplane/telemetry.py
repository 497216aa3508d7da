"""The control plane's Prometheus metrics, in a registry of its own (one per server).

``agentcell_reports_total`` is the counter to take ``rate()`` of; the
``agentcell_reports_per_second`` gauge is the same over the last ten seconds, for a person
looking at ``/metrics`` without a Prometheus. Gauges that describe stored state (agents up,
certificate expiry) are filled from the database when ``/metrics`` is scraped.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from agentcell.controlplane.store import AgentRecord

__all__ = ["CONTENT_TYPE", "Telemetry"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
RATE_WINDOW_S = 10.0


class Telemetry:
    """Counters the request handlers bump, and gauges refreshed at scrape time."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.reports = Counter(
            "agentcell_reports",
            "Reports stored for the first time (duplicates excluded).",
            ["kind"],
            registry=self.registry,
        )
        self.duplicate_reports = Counter(
            "agentcell_duplicate_reports",
            "Reports received again after they were stored (resends); not stored twice.",
            registry=self.registry,
        )
        self.report_requests = Counter(
            "agentcell_report_requests",
            "Report batches received, by outcome.",
            ["outcome"],
            registry=self.registry,
        )
        self.report_latency = Histogram(
            "agentcell_report_request_seconds",
            "Time from a report batch's arrival to its durable storage.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0),
            registry=self.registry,
        )
        self.reports_per_second = Gauge(
            "agentcell_reports_per_second",
            f"Reports stored per second over the last {RATE_WINDOW_S:g} s.",
            registry=self.registry,
        )
        self.enrolments = Counter(
            "agentcell_enrolments", "Agents enrolled with a join token.", registry=self.registry
        )
        self.enrol_failures = Counter(
            "agentcell_enrol_failures",
            "Refused enrolments, by reason (unknown, used or expired token, bad CSR, ...).",
            ["reason"],
            registry=self.registry,
        )
        self.renewals = Counter(
            "agentcell_certificate_renewals", "Certificates renewed.", registry=self.registry
        )
        self.auth_failures = Counter(
            "agentcell_auth_failures",
            "Requests refused for their credentials, by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.connections_open = Gauge(
            "agentcell_connections_open",
            "Connections open now, by listener (tcp, unix).",
            ["listener"],
            registry=self.registry,
        )
        self.connections_refused = Counter(
            "agentcell_connections_refused",
            "Connections closed at accept because a limit was reached, by listener and limit "
            "(peer_limit, total_limit).",
            ["listener", "reason"],
            registry=self.registry,
        )
        self.connection_timeouts = Counter(
            "agentcell_connection_timeouts",
            "Connections closed for being too slow, by phase (tls_handshake, request_head, "
            "request_body).",
            ["phase"],
            registry=self.registry,
        )
        self.agents_enrolled = Gauge(
            "agentcell_agents_enrolled",
            "Agents known to the control plane.",
            registry=self.registry,
        )
        self.agents_up = Gauge(
            "agentcell_agents_up",
            "Agents that reported or sent a heartbeat within the agents-up window.",
            registry=self.registry,
        )
        self.certificate_expiry = Gauge(
            "agentcell_certificate_expiry_timestamp_seconds",
            "Expiry of each agent's newest unrevoked certificate (epoch seconds).",
            ["tenant", "agent"],
            registry=self.registry,
        )
        self.certificate_soonest_expiry = Gauge(
            "agentcell_certificate_soonest_expiry_seconds",
            "Seconds until the soonest expiry among agents' unrevoked certificates.",
            registry=self.registry,
        )
        self._window: deque[tuple[float, int]] = deque()

    def stored(self, metrics: int, events: int) -> None:
        """Count newly stored reports and feed the per-second window."""
        if metrics:
            self.reports.labels(kind="metrics").inc(metrics)
        if events:
            self.reports.labels(kind="event").inc(events)
        now = time.monotonic()
        self._window.append((now, metrics + events))
        while self._window and self._window[0][0] < now - RATE_WINDOW_S:
            self._window.popleft()

    def render(self, agents: Sequence[AgentRecord], *, up_since: float, now: float) -> bytes:
        """The text exposition, with state gauges set from ``agents``."""
        cutoff = time.monotonic() - RATE_WINDOW_S
        recent = sum(count for at, count in self._window if at >= cutoff)
        self.reports_per_second.set(recent / RATE_WINDOW_S)
        self.agents_enrolled.set(len(agents))
        self.agents_up.set(sum(1 for a in agents if a.last_seen and a.last_seen >= up_since))
        self.certificate_expiry.clear()
        expiries = []
        for agent in agents:
            if agent.certificate_expires_at is not None:
                self.certificate_expiry.labels(tenant=agent.tenant, agent=agent.agent).set(
                    agent.certificate_expires_at
                )
                expiries.append(agent.certificate_expires_at)
        self.certificate_soonest_expiry.set(min(expiries) - now if expiries else 0)
        return generate_latest(self.registry)
