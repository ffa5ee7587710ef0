"""Tier ops (node.tiers.ops): the PN-counter's range and request validation."""

from __future__ import annotations

import pytest

from crdt import PNCounter, Timestamp
from node.errors import InvalidArgument
from node.tiers.ops import COUNTER_MAX, COUNTER_MIN, Op, apply_op
from node.tiers.validation import check_consistency

TS = Timestamp(1, 0)


def add(state: PNCounter | None, amount: int, node: str = "n1") -> PNCounter:
    new, _ = apply_op(state, Op("counter_add", amount=amount), node, TS)
    assert isinstance(new, PNCounter)
    return new


def test_adding_the_int64_maximum_twice_is_refused_and_changes_nothing() -> None:
    """Issue 17, defect 4: two adds of 2**63 - 1 read 18446744073709551614."""
    state = add(None, COUNTER_MAX)
    with pytest.raises(InvalidArgument, match="outside its range"):
        add(state, COUNTER_MAX)
    assert state.value() == COUNTER_MAX
    assert add(state, -COUNTER_MAX).value() == 0


def test_the_counter_reaches_both_ends_of_its_range_exactly() -> None:
    low = add(add(None, -COUNTER_MAX), -1)
    assert low.value() == COUNTER_MIN
    with pytest.raises(InvalidArgument):
        add(low, -1)
    assert add(None, COUNTER_MAX).value() == COUNTER_MAX


def test_a_replicas_running_total_stays_encodable_even_when_the_value_would_fit() -> None:
    state = None
    for amount in (COUNTER_MAX, -COUNTER_MAX, COUNTER_MAX, -COUNTER_MAX):
        state = add(state, amount)
    assert state is not None and state.value() == 0 and state.incs["n1"] == 2**64 - 2
    with pytest.raises(InvalidArgument, match="running total of increments"):
        add(state, 2)
    assert add(state, 1).value() == 1  # exactly at the codec's limit
    assert add(state, 2, node="n2").value() == 2  # another replica's total is its own


@pytest.mark.parametrize("value", [0, 1, 2, 3])
def test_known_consistencies_pass(value: int) -> None:
    assert check_consistency(value) == value


@pytest.mark.parametrize("value", [-1, 4, 42])
def test_an_unknown_consistency_is_refused_by_name(value: int) -> None:
    """Issue 17, defect 4: consistency 42 on a tier update was accepted and applied."""
    with pytest.raises(InvalidArgument, match=f"unknown consistency {value}"):
        check_consistency(value)
