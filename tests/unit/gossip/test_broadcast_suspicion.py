from __future__ import annotations

import pytest

from gossip.broadcast import BroadcastQueue
from gossip.messages import Delta
from gossip.suspicion import Suspicion


def d(key: str, v: int = 1) -> Delta:
    return Delta(key, v, "n", b"")


def test_newest_first_then_least_sent() -> None:
    q = BroadcastQueue()
    for k in "abc":
        q.queue(k, d(k), 10)
    assert [u.key for u in q.take(25, limit=5)] == ["c", "b"]  # type: ignore[union-attr]
    # "a" has never been sent: it goes before the twice-sent ones.
    assert [u.key for u in q.take(100, limit=5)] == ["a", "c", "b"]  # type: ignore[union-attr]


def test_retired_after_limit() -> None:
    q = BroadcastQueue()
    q.queue("a", d("a"), 10)
    for _ in range(3):
        assert len(q.take(100, limit=3)) == 1
    assert len(q) == 0
    assert q.take(100, limit=3) == []


def test_newer_update_in_same_slot_replaces_older() -> None:
    q = BroadcastQueue()
    q.queue("a", d("a", 1), 10)
    q.take(100, limit=5)
    q.queue("a", d("a", 2), 10)
    assert len(q) == 1
    assert q.pending("a") == d("a", 2)
    assert q.take(100, limit=5) == [d("a", 2)]


def test_budget_skips_big_items_but_takes_smaller_ones() -> None:
    q = BroadcastQueue()
    q.queue("small", d("small"), 10)
    q.queue("big", d("big"), 500)
    assert q.take(100, limit=5) == [d("small")]


def test_shrinking_limit_drops_oversent() -> None:
    q = BroadcastQueue()
    q.queue("a", d("a"), 10)
    q.take(100, limit=10)
    q.take(100, limit=10)
    assert q.take(100, limit=2) == []
    assert len(q) == 0


@pytest.mark.parametrize(
    ("confirmations", "timeout"),
    [(0, 60.0), (1, 35.0), (2, 20.4), (3, 10.0), (9, 10.0)],
)
def test_suspicion_shrinks_with_confirmations(confirmations: int, timeout: float) -> None:
    s = Suspicion(incarnation=0, start=100.0, min_s=10.0, max_s=60.0, k=3, first_src="a")
    for i in range(confirmations):
        s.confirm(f"c{i}")
    assert s.timeout_s() == pytest.approx(timeout, abs=0.1)
    assert s.deadline() == pytest.approx(100.0 + timeout, abs=0.1)


def test_suspicion_ignores_repeats_and_the_first_accuser() -> None:
    s = Suspicion(incarnation=0, start=0.0, min_s=1.0, max_s=6.0, k=2, first_src="a")
    assert not s.confirm("a")
    assert s.confirm("b")
    assert not s.confirm("b")
    assert s.confirmations == 1


def test_suspicion_without_k_uses_min() -> None:
    s = Suspicion(incarnation=0, start=0.0, min_s=4.0, max_s=24.0, k=0, first_src="a")
    assert s.timeout_s() == 4.0
