"""Per-client token buckets (node/ratelimit.py)."""

from __future__ import annotations

import pytest

from node.ratelimit import TokenBuckets, client_identity


def test_a_client_gets_its_burst_then_its_rate_and_others_are_unaffected() -> None:
    now = [0.0]
    buckets = TokenBuckets(10, 5, clock=lambda: now[0])
    assert [buckets.take("a") for _ in range(5)] == [0.0] * 5
    assert buckets.take("a") == pytest.approx(0.1)  # the 6th waits for one token
    assert buckets.take("b") == 0.0  # another client has its own bucket
    now[0] += 0.1
    assert buckets.take("a") == 0.0 and buckets.take("a") > 0
    now[0] += 100
    assert [buckets.take("a") for _ in range(6)].count(0.0) == 5  # refills to the burst only
    assert buckets.refused["a"] == 3 and buckets.refused["b"] == 0


def test_the_table_forgets_the_least_recently_seen_client() -> None:
    now = [0.0]
    buckets = TokenBuckets(1, 1, clock=lambda: now[0], max_identities=2)
    buckets.take("a")
    buckets.take("b")
    buckets.take("c")  # "a" is forgotten: it comes back with a full bucket
    assert buckets.take("a") == 0.0
    assert buckets.take("c") > 0  # "c" is still remembered as empty


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="rate must be > 0"):
        TokenBuckets(0, 1)
    with pytest.raises(ValueError, match="burst >= 1"):
        TokenBuckets(1, 0.5)


@pytest.mark.parametrize(
    ("cert", "peer", "who"),
    [
        ("client/ops", "ipv4:10.0.0.7:5000", "client/ops"),
        (None, "ipv4:10.0.0.7:5000", "ipv4:10.0.0.7"),
        (None, "ipv6:[::1]:443", "ipv6:[::1]"),
        (None, "unix:/tmp/sock", "unix:/tmp/sock"),
    ],
)
def test_a_client_is_its_certificate_else_its_address_without_the_port(
    cert: str | None, peer: str, who: str
) -> None:
    assert client_identity(cert, peer) == who
