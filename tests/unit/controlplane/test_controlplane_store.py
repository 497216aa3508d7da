"""The data layer on a real SQLite file: exactly-once reports, one-time tokens, revocation."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agentcell.controlplane.store import EventRow, MetricRow, StorageError, Store, TokenRow


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = Store.open(f"sqlite:///{tmp_path / 'cp.db'}")
    yield opened
    opened.close()


def _metrics(agent: str, *sequences: int, tenant: str = "acme") -> list[MetricRow]:
    return [
        MetricRow(tenant=tenant, agent=agent, sequence=s, sampled_at=float(s), metrics={"x": s})
        for s in sequences
    ]


def test_database_runs_in_wal_mode(store: Store) -> None:
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


def test_each_sequence_is_stored_once_whatever_is_resent(store: Store) -> None:
    store.enrol_agent("acme", "probe", now=1.0)
    assert store.store_reports(_metrics("probe", 1, 2, 3), (), now=2.0) == {
        ("acme", "probe", 1),
        ("acme", "probe", 2),
        ("acme", "probe", 3),
    }
    assert store.store_reports(_metrics("probe", 2, 3, 4), (), now=3.0) == {("acme", "probe", 4)}
    event = EventRow(
        tenant="acme", agent="probe", sequence=5, at=4.0, source="agent", kind="k", message="m"
    )
    assert store.store_reports((), [event, event], now=4.0) == {("acme", "probe", 5)}
    assert store.stored_sequences("acme", "probe") == [1, 2, 3, 4, 5]
    # The same sequence from another agent or tenant is another report.
    store.store_reports(_metrics("probe", 1, tenant="other"), (), now=5.0)
    assert store.stored_sequences("acme", "probe") == [1, 2, 3, 4, 5]
    assert store.stored_sequences("other", "probe") == [1]


def test_re_enrolment_continues_after_the_last_stored_sequence(store: Store) -> None:
    assert store.enrol_agent("acme", "probe", now=1.0) == 1
    store.store_reports(_metrics("probe", 1, 2, 7), (), now=2.0)
    assert store.enrol_agent("acme", "probe", now=3.0) == 8
    # A late resend of an older batch does not move the high-water mark back.
    store.store_reports(_metrics("probe", 3), (), now=4.0)
    assert store.enrol_agent("acme", "probe", now=5.0) == 8


def test_a_token_is_consumed_once_and_not_after_expiry(store: Store) -> None:
    row = TokenRow(
        digest="d1", tenant="acme", agent="probe", issued_at=0, expires_at=10, used_at=None
    )
    store.add_token(row)
    assert store.consume_token("d1", now=5) is True
    assert store.consume_token("d1", now=6) is False
    store.add_token(TokenRow(**{**row.__dict__, "digest": "d2"}))
    assert store.consume_token("d2", now=10) is False  # expired at 10
    assert store.consume_token("missing", now=1) is False
    found = store.token("d1")
    assert found is not None and found.used_at == 5


def test_revocation_by_serial_and_by_agent(store: Store) -> None:
    from agentcell.controlplane.store import CertificateRecord

    for serial, agent in (("AA", "one"), ("BB", "one"), ("CC", "two")):
        store.add_certificate(
            CertificateRecord(
                serial=serial,
                tenant="acme",
                agent=agent,
                spiffe_id=f"spiffe://t/tenant/acme/agent/{agent}",
                kind="enrol",
                not_before=0,
                not_after=100,
                issued_at=0,
                revoked_at=None,
                revoke_reason=None,
            )
        )
    assert store.revoke(serial="aa", reason="lost", now=1) == ["AA"]
    assert store.revoke(serial="AA", reason="again", now=2) == []
    assert store.revoke(tenant="acme", agent="one", reason="gone", now=3) == ["BB"]
    assert store.revoked_serials() == {"AA", "BB"}
    assert [c.serial for c in store.certificates(agent="two") if c.revoked_at is None] == ["CC"]


def test_metric_series_and_names(store: Store) -> None:
    store.enrol_agent("acme", "probe", now=0)
    store.store_reports(_metrics("probe", *range(1, 41)), (), now=1)
    points = store.metric_series("x", tenant="acme", limit=5)
    assert [p.value for p in points] == [36.0, 37.0, 38.0, 39.0, 40.0]
    assert store.metric_names() == ["x"]
    assert store.metric_series("missing") == []


def _tenant(name: str = "acme", **spec: object) -> dict[str, object]:
    return {
        "apiVersion": "agentcell/v1",
        "kind": "Tenant",
        "metadata": {"name": name},
        "spec": spec,
    }


def test_every_change_of_a_tenant_is_a_new_version_with_who_and_when(store: Store) -> None:
    first, changed = store.put_tenant("acme", _tenant(config={"a": "1"}), by="alice", now=1)
    assert changed and (first.version, first.updated_by, first.updated_at) == (1, "alice", 1)
    second, changed = store.put_tenant("acme", _tenant(config={"a": "2"}), by="bob", now=2)
    assert changed and (second.version, second.updated_by) == (2, "bob")
    assert store.tenant("acme") == second
    history = store.tenant_versions("acme")
    assert [(v.version, v.by, v.at) for v in history] == [(1, "alice", 1), (2, "bob", 2)]
    assert [v.document for v in history] == [_tenant(config={"a": "1"}), _tenant(config={"a": "2"})]


def test_an_identical_document_makes_no_new_version(store: Store) -> None:
    store.put_tenant("acme", _tenant(config={"a": "1", "b": "2"}), by="alice", now=1)
    # The same document with its keys in another order is the same document.
    again, changed = store.put_tenant("acme", _tenant(config={"b": "2", "a": "1"}), by="bob", now=2)
    assert not changed
    assert (again.version, again.updated_by, again.updated_at) == (1, "alice", 1)
    assert len(store.tenant_versions("acme")) == 1


def test_the_config_version_moves_only_when_the_config_changes(store: Store) -> None:
    assert store.config("acme") == ({}, 0)
    store.put_tenant("acme", _tenant(config={"interval": "5"}), by="a", now=1)
    assert store.config("acme") == ({"interval": "5"}, 1)
    store.put_tenant("acme", _tenant(config={"interval": "5"}, isolation="strict"), by="a", now=2)
    assert store.config("acme") == ({"interval": "5"}, 1)
    store.put_tenant("acme", _tenant(config={"interval": "10"}, isolation="strict"), by="a", now=3)
    assert store.config("acme") == ({"interval": "10"}, 3)
    assert store.config("other") == ({}, 0)


def test_deleting_a_tenant_keeps_its_history_and_records_the_deletion(store: Store) -> None:
    store.put_tenant("acme", _tenant(config={"a": "1"}), by="alice", now=1)
    store.put_tenant("other", _tenant("other"), by="alice", now=1)
    assert store.delete_tenant("acme", by="bob", now=2) == 2
    assert store.tenant("acme") is None
    assert [row.name for row in store.tenants()] == ["other"]
    assert store.delete_tenant("acme", by="bob", now=3) is None
    history = store.tenant_versions("acme")
    assert [(v.version, v.by, v.document is None) for v in history] == [
        (1, "alice", False),
        (2, "bob", True),
    ]
    # Its agents now read no config, at a new version; made again, it continues the numbers.
    assert store.config("acme") == ({}, 2)
    again, changed = store.put_tenant("acme", _tenant(config={"a": "1"}), by="carol", now=4)
    assert changed and again.version == 3 and store.config("acme") == ({"a": "1"}, 3)


def test_unsupported_or_malformed_urls_are_clear_errors() -> None:
    with pytest.raises(StorageError):
        Store.open("not a url")


def test_readers_skip_values_that_are_not_finite(store: Store) -> None:
    """Stored by a server that did not refuse them yet: they must not break every reader."""
    store.enrol_agent("acme", "probe", now=1.0)
    rows = [
        MetricRow(tenant="acme", agent="probe", sequence=s, sampled_at=float(s), metrics={"x": v})
        for s, v in ((1, 1.0), (2, float("nan")), (3, float("inf")), (4, float("-inf")), (5, 5.0))
    ]
    rows.append(
        MetricRow(tenant="acme", agent="probe", sequence=6, sampled_at=float("inf"), metrics={})
    )
    store.store_reports(rows, (), now=2.0)
    store.add_event(
        EventRow(
            tenant="acme",
            agent="probe",
            sequence=7,
            at=float("inf"),
            source="agent",
            kind="odd",
            message="from the future",
        )
    )
    assert [p.value for p in store.metric_series("x", tenant="acme")] == [1.0, 5.0]
    assert store.metric_names(tenant="acme") == []  # the newest report carries none
    assert [e.kind for e in store.events(tenant="acme")] == []
