"""The bodies of the control plane's HTTP API: pydantic models at the boundary.

Every request body is validated here before anything else sees it; unknown fields are errors,
and so are numbers that are not finite (``NaN``, ``Infinity``, ``-Infinity``, or ``1e999``,
which parses to infinity): JSON has no such numbers, SQLite stores NaN as NULL, and one of them
stored would break every reader of that metric.
No body carries a tenant or agent for an agent endpoint: those come from the verified client
certificate. Times are seconds since the Unix epoch (UTC), which the standard-library agent
handles without a date parser.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from agentcell.spec.tenant import TenantDocument

__all__ = [
    "AgentEvent",
    "CellList",
    "CellView",
    "CertificateList",
    "CertificateView",
    "EnrolRequest",
    "EnrolResponse",
    "ErrorBody",
    "EventList",
    "EventView",
    "HeartbeatRequest",
    "HeartbeatResponse",
    "IssuedCertificateBody",
    "JoinTokenRequest",
    "JoinTokenResponse",
    "MetricSeries",
    "MetricSeriesList",
    "RenewRequest",
    "Report",
    "ReportAck",
    "ReportBatch",
    "RevokeRequest",
    "RevokeResponse",
    "TenantConfig",
    "TenantDeleted",
    "TenantList",
    "TenantPutRequest",
    "TenantRecord",
    "TenantVersion",
    "TenantVersionList",
]

MAX_BATCH = 1000
MAX_METRICS = 256
# The largest integer every JSON parser holds exactly (JavaScript's MAX_SAFE_INTEGER); the
# stored last sequence + 1 stays far inside SQLite's and PostgreSQL's 64-bit integers.
MAX_SEQUENCE = 2**53 - 1

DnsLabel = Annotated[
    str, StringConstraints(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", min_length=1, max_length=40)
]
TenantName = Annotated[
    str, StringConstraints(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", min_length=1, max_length=12)
]
MetricName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_.]{0,63}$")]
EventKind = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_.-]{0,63}$")]
Pem = Annotated[str, StringConstraints(min_length=1, max_length=16384)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


# -- agent endpoints -----------------------------------------------------------------------


class EnrolRequest(_Body):
    """A new cell's one-time join token and a CSR for a key it made in its tmpfs."""

    token: str = Field(min_length=1, max_length=200, description="The join token from `up`.")
    csr: Pem = Field(description="PEM certificate signing request (EC P-256/P-384 or RSA).")


class RenewRequest(_Body):
    """A CSR for the agent's next key; sent over mTLS with the current certificate."""

    csr: Pem = Field(description="PEM certificate signing request for the new key.")


class IssuedCertificateBody(_Body):
    """A certificate the CA signed for the caller."""

    certificate: str = Field(description="PEM client certificate.")
    ca_certificate: str = Field(description="PEM CA certificate that signed it.")
    spiffe_id: str = Field(description="The identity in the certificate's URI SAN.")
    serial: str = Field(description="Serial number, upper-case hex.")
    not_before: float = Field(description="Validity start, epoch seconds.")
    not_after: float = Field(description="Expiry, epoch seconds; renew well before it.")


class EnrolResponse(IssuedCertificateBody):
    """The new certificate, and where the agent's sequence numbers continue."""

    next_sequence: int = Field(description="Sequence number of the agent's next report.")


class HeartbeatRequest(_Body):
    """An agent saying it is alive."""

    agent_version: str | None = Field(default=None, max_length=64)
    buffered: int | None = Field(default=None, ge=0, description="Reports waiting to be sent.")


class HeartbeatResponse(_Body):
    """The control plane's clock and the tenant configuration's version."""

    server_time: float
    config_version: int


class AgentEvent(_Body):
    """Something the agent wants recorded, e.g. that it dropped reports."""

    kind: EventKind
    message: str = Field(max_length=2000)


class Report(_Body):
    """One sequenced record: a metrics sample or an event. (agent, sequence) is stored once."""

    sequence: int = Field(ge=1, le=MAX_SEQUENCE, description="Per-agent, increasing.")
    kind: Literal["metrics", "event"]
    sampled_at: float = Field(ge=0, description="When it was taken, epoch seconds.")
    metrics: dict[MetricName, float] | None = Field(default=None, max_length=MAX_METRICS)
    event: AgentEvent | None = None

    @model_validator(mode="after")
    def _payload_matches_kind(self) -> Report:
        if self.kind == "metrics" and (self.metrics is None or self.event is not None):
            raise ValueError("a metrics report carries 'metrics' and no 'event'")
        if self.kind == "event" and (self.event is None or self.metrics is not None):
            raise ValueError("an event report carries 'event' and no 'metrics'")
        return self


class ReportBatch(_Body):
    """Reports in sequence order; resending a batch is always safe."""

    reports: list[Report] = Field(min_length=1, max_length=MAX_BATCH)


class ReportAck(_Body):
    """Which sequences are now stored (new or from an earlier send)."""

    acknowledged: list[int]
    stored: int = Field(description="How many were new.")
    duplicates: int = Field(description="How many were already stored.")


class TenantConfig(_Body):
    """A tenant's configuration as its agents read it: its Tenant document's ``spec.config``.

    ``version`` is the tenant version at which that config last changed (0 before the tenant
    had a document), so it moves exactly when what the agents read changes.
    """

    tenant: str
    version: int
    config: dict[str, str]


class CellView(_Body):
    """An enrolled agent and its cell's identity state."""

    tenant: str
    agent: str
    spiffe_id: str
    enrolled_at: float
    last_seen: float | None
    last_sequence: int
    certificate_expires_at: float | None
    up: bool = Field(description="Seen within the control plane's agents-up window.")


class CellList(_Body):
    """Enrolled agents."""

    cells: list[CellView]


# -- admin endpoints -----------------------------------------------------------------------


class JoinTokenRequest(_Body):
    """Ask for a one-time token that enrols exactly this agent of this tenant."""

    tenant: TenantName
    agent: DnsLabel
    ttl_seconds: float | None = Field(
        default=None, gt=0, le=86400, description="Defaults to the server's token lifetime."
    )


class JoinTokenResponse(_Body):
    """The token (shown once; only its hash is stored) and what it grants."""

    token: str
    spiffe_id: str
    expires_at: float


class CertificateView(_Body):
    """An issued certificate."""

    serial: str
    tenant: str
    agent: str
    spiffe_id: str
    kind: Literal["enrol", "renew"]
    not_before: float
    not_after: float
    issued_at: float
    revoked_at: float | None
    revoke_reason: str | None


class CertificateList(_Body):
    """Issued certificates, newest first."""

    certificates: list[CertificateView]


class RevokeRequest(_Body):
    """Revoke one certificate by serial, or every current certificate of one agent."""

    serial: str | None = Field(default=None, pattern=r"^[0-9A-Fa-f]{1,64}$")
    tenant: TenantName | None = None
    agent: DnsLabel | None = None
    reason: str = Field(default="revoked by an administrator", max_length=200)

    @model_validator(mode="after")
    def _one_target(self) -> RevokeRequest:
        by_agent = self.tenant is not None and self.agent is not None
        if (self.serial is None) == (not by_agent):
            raise ValueError("give either 'serial' or both 'tenant' and 'agent'")
        return self


class RevokeResponse(_Body):
    """The serials now revoked."""

    revoked: list[str]


class MetricSeries(_Body):
    """The recent values of one metric from one agent: [sequence, sampled_at, value] each."""

    tenant: str
    agent: str
    points: list[tuple[int, float, float]]


class MetricSeriesList(_Body):
    """One metric across agents."""

    name: str
    series: list[MetricSeries]
    available: list[str] = Field(description="Metric names the newest reports carry.")


class EventView(_Body):
    """One event, from an agent or from the control plane."""

    tenant: str
    agent: str
    sequence: int | None
    at: float
    source: str
    kind: str
    message: str


class EventList(_Body):
    """Events, oldest first."""

    events: list[EventView]


class TenantPutRequest(_Body):
    """A tenant's whole new document, and who is changing it (kept in its history)."""

    document: TenantDocument = Field(description="The Tenant document; keys given as pem.")
    changed_by: str = Field(min_length=1, max_length=200, description="Who makes the change.")

    def check_for(self, tenant: str) -> None:
        """Refuse a document the stored state cannot hold for ``tenant``.

        The path names the tenant, so the document must too; key files are relative to the
        YAML the client read, which the server never sees, so keys arrive as ``pem``.

        Raises:
            pydantic.ValidationError: located at the offending field of the body.
        """
        problems: list[InitErrorDetails] = []
        if self.document.metadata.name != tenant:
            problems.append(
                InitErrorDetails(
                    type=PydanticCustomError(
                        "tenant_mismatch",
                        "the document names tenant {named} but the path names {tenant}",
                        {"named": self.document.metadata.name, "tenant": tenant},
                    ),
                    loc=("document", "metadata", "name"),
                    input=self.document.metadata.name,
                )
            )
        for index, key in enumerate(self.document.spec.trust.keys):
            if key.path is not None:
                problems.append(
                    InitErrorDetails(
                        type=PydanticCustomError(
                            "key_path",
                            "key {name} is given as a path; send its contents as pem",
                            {"name": key.name},
                        ),
                        loc=("document", "spec", "trust", "keys", index, "path"),
                        input=key.path,
                    )
                )
        if problems:
            raise ValidationError.from_exception_data("TenantPutRequest", problems)


class TenantRecord(_Body):
    """A tenant's current document and its version."""

    name: str
    version: int = Field(description="Increases with every change, deletions included.")
    config_version: int = Field(description="The version at which spec.config last changed.")
    document: TenantDocument
    updated_at: float
    updated_by: str
    changed: bool = Field(
        default=False, description="Whether this request made a new version (PUT only)."
    )


class TenantList(_Body):
    """Every tenant with a current document, by name."""

    tenants: list[TenantRecord]


class TenantVersion(_Body):
    """One change of a tenant: the document it left, or none for a deletion."""

    name: str
    version: int
    change: Literal["put", "delete"]
    document: TenantDocument | None
    config_version: int
    at: float
    by: str


class TenantVersionList(_Body):
    """A tenant's history, oldest first; kept after the tenant is deleted."""

    name: str
    versions: list[TenantVersion]


class TenantDeleted(_Body):
    """A tenant removed; its history keeps the deletion as ``version``."""

    name: str
    version: int


class ErrorBody(_Body):
    """Every error answer: what went wrong, a machine tag, and what to do."""

    error: str
    reason: str
    fix: str | None = None
