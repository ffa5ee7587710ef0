"""Rendezvous placement: deterministic, balanced, and minimal movement."""

from __future__ import annotations

import collections

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.placement import first, owners, ranking

KEYS = [f"population/job_event_log/job-{i}" for i in range(8_000)]
NODES = [f"n{i}" for i in range(1, 6)]

member_ids = st.lists(
    st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=8),
    min_size=1,
    max_size=12,
    unique=True,
)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(key=st.text(max_size=40), members=member_ids, rf=st.integers(1, 5))
def test_owners_are_distinct_and_independent_of_member_order(
    key: str, members: list[str], rf: int
) -> None:
    got = owners(key, members, rf)
    assert len(got) == min(rf, len(members)) == len(set(got))
    assert got == owners(key, list(reversed(members)), rf)
    assert ranking(key, members)[: len(got)] == got


@settings(max_examples=200, deadline=None, derandomize=True)
@given(key=st.text(max_size=40), members=member_ids)
def test_first_is_the_top_of_the_ranking(key: str, members: list[str]) -> None:
    # The client routes a batch by ``first``; the node coordinates by ``ranking``.
    assert first(key, members) == ranking(key, members)[0]
    assert first(key, [*members, *members]) == first(key, reversed(members))


def test_first_of_no_members_is_none() -> None:
    assert first("k", []) is None


def test_balance_across_five_nodes() -> None:
    counts = collections.Counter(owners(k, NODES, 1)[0] for k in KEYS)
    share = {n: c / len(KEYS) for n, c in counts.items()}
    assert set(share) == set(NODES)
    assert all(abs(s - 0.2) < 0.02 for s in share.values()), share
    replica_counts = collections.Counter(n for k in KEYS for n in owners(k, NODES, 2))
    assert all(abs(c / (2 * len(KEYS)) - 0.2) < 0.02 for c in replica_counts.values())


@pytest.mark.parametrize("rf", [1, 2, 3])
def test_adding_a_member_moves_only_keys_to_it(rf: int) -> None:
    before = {k: set(owners(k, NODES, rf)) for k in KEYS}
    after = {k: set(owners(k, [*NODES, "n6"], rf)) for k in KEYS}
    moved = 0
    for k in KEYS:
        lost = before[k] - after[k]
        gained = after[k] - before[k]
        assert gained <= {"n6"}, k  # only the newcomer gains keys
        assert len(lost) == len(gained) <= 1
        moved += len(gained)
    # Expected share that moves: rf / 6 of the replicas.
    fraction = moved / (len(KEYS) * rf)
    assert abs(fraction - 1 / 6) < 0.02, fraction


@pytest.mark.parametrize("rf", [1, 2, 3])
def test_removing_a_member_moves_only_its_keys(rf: int) -> None:
    survivors = [n for n in NODES if n != "n3"]
    for k in KEYS[:3000]:
        before = owners(k, NODES, rf)
        after = owners(k, survivors, rf)
        if "n3" not in before:
            assert after == before, k
        else:
            assert set(before) - {"n3"} <= set(after), k


def test_rf_must_be_positive() -> None:
    with pytest.raises(ValueError, match="replication factor"):
        owners("k", NODES, 0)
