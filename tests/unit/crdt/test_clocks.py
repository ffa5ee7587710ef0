"""Hybrid logical clock, vector clock and causal-context laws."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crdt import (
    CausalContext,
    ClockDriftError,
    CRDTError,
    HybridLogicalClock,
    InvalidOperationError,
    Ordering,
    Timestamp,
    VectorClock,
)

LAWS = settings(max_examples=150, deadline=None, derandomize=True, database=None)

# --- HLC ----------------------------------------------------------------------------------


@LAWS
@given(st.lists(st.integers(0, 50), min_size=1, max_size=40))
def test_hlc_now_is_strictly_monotonic_even_if_physical_time_goes_back(pts: list[int]) -> None:
    clock = HybridLogicalClock()
    stamps = [clock.now(pt) for pt in pts]
    assert all(a < b for a, b in itertools.pairwise(stamps))
    for pt, ts in zip(pts, stamps, strict=True):
        assert ts.wall_ns >= pt
        assert ts.wall_ns == max(pts[: stamps.index(ts) + 1])


# A step: (node, kind, physical time, message index)
STEPS = st.lists(
    st.tuples(
        st.integers(0, 2),
        st.sampled_from(["local", "send", "recv"]),
        st.integers(0, 30),
        st.integers(0, 99),
    ),
    max_size=60,
)


@LAWS
@given(STEPS)
def test_hlc_preserves_causality_and_stays_close_to_physical_time(steps: list[tuple]) -> None:
    drift = 1_000
    clocks = [HybridLogicalClock(max_drift_ns=drift) for _ in range(3)]
    last_event = [Timestamp(0, 0)] * 3  # program order
    sent: list[Timestamp] = []
    max_pt = 0
    for node, kind, pt, msg in steps:
        max_pt = max(max_pt, pt)
        if kind == "recv" and sent:
            remote = sent[msg % len(sent)]
            ts = clocks[node].update(remote, pt)
            assert ts > remote  # message send happens-before its receipt
        else:
            ts = clocks[node].now(pt)
            if kind == "send":
                sent.append(ts)
        assert ts > last_event[node]  # program order
        assert ts.wall_ns >= pt
        assert ts.wall_ns <= max_pt  # wall part never exceeds the largest physical time seen
        last_event[node] = ts


def test_hlc_update_cases_follow_kulkarni() -> None:
    clock = HybridLogicalClock(last=Timestamp(10, 3))
    assert clock.update(Timestamp(10, 7), 5) == Timestamp(10, 8)  # all equal walls: max+1
    assert clock.update(Timestamp(9, 99), 5) == Timestamp(10, 9)  # local wall wins
    assert clock.update(Timestamp(20, 4), 5) == Timestamp(20, 5)  # remote wall wins
    assert clock.update(Timestamp(20, 1), 30) == Timestamp(30, 0)  # physical wins
    assert clock.last == Timestamp(30, 0)


def test_hlc_rejects_remote_beyond_drift_and_stays_unchanged() -> None:
    clock = HybridLogicalClock(max_drift_ns=100)
    before = clock.now(1_000)
    assert clock.update(Timestamp(1_100, 0), 1_000) == Timestamp(1_100, 1)  # exactly at bound
    with pytest.raises(ClockDriftError) as info:
        clock.update(Timestamp(1_201, 0), 1_100)
    assert isinstance(info.value, CRDTError)
    assert info.value.remote_wall_ns == 1_201
    assert info.value.max_drift_ns == 100
    assert "ahead" in str(info.value)
    assert clock.last == Timestamp(1_100, 1) and clock.last > before


def test_hlc_and_timestamp_reject_bad_arguments() -> None:
    with pytest.raises(InvalidOperationError):
        HybridLogicalClock(max_drift_ns=-1)
    for args in [(-1, 0), (0, -1), (True, 0), (0, 1.5)]:
        with pytest.raises(InvalidOperationError):
            Timestamp(*args)  # type: ignore[arg-type]


def test_timestamps_order_by_wall_then_logical() -> None:
    assert Timestamp(1, 9) < Timestamp(2, 0) < Timestamp(2, 1)
    assert Timestamp.from_wire(Timestamp(5, 6).to_wire()) == Timestamp(5, 6)


# --- vector clocks --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ({}, {}, Ordering.EQUAL),
        ({"a": 1}, {"a": 1}, Ordering.EQUAL),
        ({}, {"a": 1}, Ordering.BEFORE),
        ({"a": 1}, {"a": 2}, Ordering.BEFORE),
        ({"a": 2, "b": 1}, {"a": 2}, Ordering.AFTER),
        ({"a": 1}, {"b": 1}, Ordering.CONCURRENT),
        ({"a": 2, "b": 1}, {"a": 1, "b": 2}, Ordering.CONCURRENT),
    ],
)
def test_vector_clock_compare_table(
    a: dict[str, int], b: dict[str, int], expected: Ordering
) -> None:
    mirror = {
        Ordering.BEFORE: Ordering.AFTER,
        Ordering.AFTER: Ordering.BEFORE,
        Ordering.EQUAL: Ordering.EQUAL,
        Ordering.CONCURRENT: Ordering.CONCURRENT,
    }
    assert VectorClock(a).compare(VectorClock(b)) is expected
    assert VectorClock(b).compare(VectorClock(a)) is mirror[expected]


VC_RUNS = st.lists(st.tuples(st.integers(0, 2), st.booleans(), st.integers(0, 2)), max_size=30)


@LAWS
@given(VC_RUNS)
def test_vector_clocks_capture_happened_before(run: list[tuple[int, bool, int]]) -> None:
    """Tick on each event, merge on receipt: compare() matches the real causal history."""
    clocks = [VectorClock() for _ in range(3)]
    history: list[tuple[VectorClock, frozenset[int]]] = []  # (clock, causal past event ids)
    past: list[set[int]] = [set(), set(), set()]
    for node, receive, src in run:
        if receive and src != node:
            clocks[node] = clocks[node].merge(clocks[src])
            past[node] |= past[src]
        clocks[node] = clocks[node].increment(f"n{node}")
        past[node].add(len(history))
        history.append((clocks[node], frozenset(past[node])))
    for i, (ci, pi) in enumerate(history):
        for j, (cj, pj) in enumerate(history):
            if i == j:
                assert ci.compare(cj) is Ordering.EQUAL
            elif i in pj:
                assert ci.compare(cj) is Ordering.BEFORE
            elif j in pi:
                assert ci.compare(cj) is Ordering.AFTER
            else:
                assert ci.compare(cj) is Ordering.CONCURRENT


def test_vector_clock_increment_and_merge() -> None:
    a = VectorClock().increment("a").increment("a")
    b = VectorClock().increment("b")
    m = a.merge(b)
    assert m.value() == {"a": 2, "b": 1}
    assert m.get("z") == 0
    assert a.compare(m) is Ordering.BEFORE
    assert m.increment("b").compare(m) is Ordering.AFTER
    with pytest.raises(InvalidOperationError):
        a.increment("")


# --- causal context ---------------------------------------------------------------------------

DOTS = st.sets(st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(1, 8)), max_size=20)


@LAWS
@given(DOTS, DOTS)
def test_causal_context_is_a_canonical_set_of_dots(
    xs: set[tuple[str, int]], ys: set[tuple[str, int]]
) -> None:
    cx, cy = CausalContext.of(xs), CausalContext.of(ys)
    assert set(cx.dots()) == xs
    assert cx.dot_count() == len(xs)
    union = cx.union(cy)
    assert union == CausalContext.of(xs | ys) == cy.union(cx)
    assert union == cx.add(ys)
    for node in "abc":
        counters = [c for n, c in xs if n == node]
        assert cx.max_counter(node) == max(counters, default=0)
        assert cx.next_dot(node) == (node, max(counters, default=0) + 1)
        # compaction: no cloud dot is contiguous with the version vector
        assert (node, cx.vv.get(node, 0) + 1) not in cx.cloud
    assert all((d in cx) == (d in xs) for d in [(n, c) for n in "abc" for c in range(1, 10)])
    assert CausalContext.from_wire(cx.to_wire()) == cx


def test_causal_context_compacts_to_a_version_vector() -> None:
    ctx = CausalContext.of([("a", 3), ("a", 1)])
    assert dict(ctx.vv) == {"a": 1} and ctx.cloud == {("a", 3)}
    ctx = ctx.add([("a", 2)])
    assert dict(ctx.vv) == {"a": 3} and not ctx.cloud
    assert ctx.union(CausalContext()) is ctx
    assert CausalContext().union(ctx) is ctx
