"""The bookkeeping behind the limits: connections per peer, attempts per peer, refusal windows."""

from __future__ import annotations

import threading

from agentcell.controlplane.limits import ConnectionTable, PeerRateLimiter, RefusalDigest


def test_each_peer_has_its_own_limit_under_a_total() -> None:
    table = ConnectionTable(max_total=5, max_per_peer=2)
    assert [table.admit("uid 1001") for _ in range(3)] == ["ok", "ok", "peer_limit"]
    assert [table.admit("uid 1002") for _ in range(2)] == ["ok", "ok"]
    assert table.admit("127.0.0.1") == "ok"
    assert table.total == 5
    # Full: a new peer meets the total, a full peer still hears about its own limit.
    assert table.admit("uid 1003") == "total_limit"
    assert table.admit("uid 1001") == "peer_limit"
    table.release("uid 1001")
    assert table.open_from("uid 1001") == 1
    assert table.admit("uid 1003") == "ok"


def test_released_peers_are_forgotten_and_extra_releases_are_harmless() -> None:
    table = ConnectionTable(max_total=10, max_per_peer=10)
    table.admit("a")
    table.release("a")
    table.release("a")
    table.release("never-seen")
    assert table.total == 0
    assert table.open_from("a") == 0
    assert table.admit("b") == "ok"
    assert table.total == 1


def test_rate_limiter_allows_a_burst_then_the_refill_rate() -> None:
    limiter = PeerRateLimiter(burst=3, per_minute=6)  # one attempt every 10 s
    assert [limiter.allow("p", now=0.0) for _ in range(4)] == [True, True, True, False]
    assert limiter.retry_after("p", now=0.0) == 10.0
    assert limiter.allow("other", now=0.0)  # peers do not share a bucket
    assert not limiter.allow("p", now=9.0)
    assert limiter.allow("p", now=10.5)
    assert not limiter.allow("p", now=10.6)
    # Idle long enough, a peer has its whole burst again, and no more.
    assert [limiter.allow("p", now=1000.0) for _ in range(4)] == [True, True, True, False]


def test_rate_limiter_memory_is_bounded() -> None:
    limiter = PeerRateLimiter(burst=1, per_minute=60, max_peers=100)
    for index in range(1000):
        limiter.allow(f"10.0.{index // 256}.{index % 256}", now=float(index))
    assert len(limiter._buckets) <= 100


def test_rate_limiter_is_thread_safe() -> None:
    limiter = PeerRateLimiter(burst=1000, per_minute=0.0001)
    allowed: list[bool] = []

    def attempt() -> None:
        for _ in range(500):
            allowed.append(limiter.allow("p", now=0.0))

    threads = [threading.Thread(target=attempt) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert allowed.count(True) == 1000


def test_refusals_come_back_as_one_summary_per_key_and_window() -> None:
    digest = RefusalDigest(window=60)
    for second in range(50):
        digest.add(tenant="acme", agent="probe", peer="uid 1001", reason="used_token", now=second)
    digest.add(tenant="acme", agent="probe", peer="uid 1001", reason="bad_csr", now=50)
    digest.add(tenant="acme", agent="probe", peer="10.0.0.9", reason="used_token", now=30)
    assert digest.due(now=59) == []
    (summary,) = digest.due(now=60)
    assert (summary.peer, summary.count) == ("uid 1001", 51)
    assert summary.message() == (
        "51 refused enrolments from uid 1001 in the last 60 s (bad_csr: 1, used_token: 50)"
    )
    assert digest.due(now=61) == []  # taken once
    digest.add(tenant="acme", agent="probe", peer="uid 1001", reason="used_token", now=70)
    drained = sorted((s.peer, s.count) for s in digest.drain(now=75))
    assert drained == [("10.0.0.9", 1), ("uid 1001", 1)]
    assert digest.drain(now=80) == []


def test_a_single_refusal_reads_naturally() -> None:
    digest = RefusalDigest(window=60)
    digest.add(tenant="a", agent="b", peer="uid 7", reason="expired_token", now=0)
    (summary,) = digest.drain(now=12)
    assert summary.message() == (
        "1 refused enrolment from uid 7 in the last 12 s (expired_token: 1)"
    )
