"""The generic property suite: every CRDT type, the same laws.

Each test is parametrised over :data:`kinds.KINDS`; states are never built by
hand but produced by random runs (ops, duplicated / reordered / lost deltas,
partial syncs) so they are reachable states.
"""

from __future__ import annotations

import functools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import crdt
from crdt import CRDTBase

from .kinds import KINDS, Kind, Sim, histories

PROPS = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

kinds = pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.name)


def three(sim: Sim) -> tuple[CRDTBase, CRDTBase, CRDTBase]:
    return sim.states[0], sim.states[1], sim.states[2]


def same(x: CRDTBase, y: CRDTBase) -> None:
    """Equal as values *and* as bytes."""
    assert x == y
    assert x.to_bytes() == y.to_bytes()


@kinds
@PROPS
@given(data=st.data())
def test_merge_is_commutative(kind: Kind, data: st.DataObject) -> None:
    a, b, _ = three(data.draw(histories(kind)))
    same(a.merge(b), b.merge(a))


@kinds
@PROPS
@given(data=st.data())
def test_merge_is_associative(kind: Kind, data: st.DataObject) -> None:
    a, b, c = three(data.draw(histories(kind)))
    same(a.merge(b).merge(c), a.merge(b.merge(c)))


@kinds
@PROPS
@given(data=st.data())
def test_merge_is_idempotent_with_empty_identity(kind: Kind, data: st.DataObject) -> None:
    a, _, _ = three(data.draw(histories(kind)))
    same(a.merge(a), a)
    empty = kind.empty()
    same(a.merge(empty), a)
    same(empty.merge(a), a)
    assert empty.leq(a)


@kinds
@PROPS
@given(data=st.data())
def test_merge_is_least_upper_bound(kind: Kind, data: st.DataObject) -> None:
    a, b, c = three(data.draw(histories(kind)))
    ab = a.merge(b)
    assert a.leq(ab) and b.leq(ab)
    upper = ab.merge(c)  # any upper bound of a and b ...
    assert ab.leq(upper)  # ... is above their join
    if not b.leq(a):
        assert not ab.leq(a)


@kinds
@PROPS
@given(data=st.data())
def test_mutators_inflate_and_deltas_are_states(kind: Kind, data: st.DataObject) -> None:
    sim = data.draw(histories(kind))
    for rec in sim.records:
        assert type(rec.delta) is type(kind.empty())
        owner = sim.states[int(rec.replica[1:])]
        assert rec.delta.leq(owner), "an issued delta is included in its issuer's state"
    a, _, _ = three(sim)
    op = data.draw(kind.ops)
    try:
        delta, _meta = kind.apply(a, "r9", op, sim.clocks[0])
    except crdt.InvalidOperationError:
        return
    after = a.apply_delta(delta)
    assert a.leq(after) and delta.leq(after)
    same(after, a.merge(delta))


@kinds
@PROPS
@given(data=st.data())
def test_replicas_converge_byte_identical_to_the_model(kind: Kind, data: st.DataObject) -> None:
    sim = data.draw(histories(kind, max_steps=30))
    sim.full_sync()
    first = sim.states[0].to_bytes()
    for state in sim.states[1:]:
        assert state == sim.states[0]
        assert state.to_bytes() == first
    assert kind.observe(sim.states[0]) == kind.model(sim.records)


@kinds
@PROPS
@given(data=st.data())
def test_deltas_alone_converge_in_any_order(kind: Kind, data: st.DataObject) -> None:
    """Delivering every delta (shuffled, some twice) equals the full-state join."""
    sim = data.draw(histories(kind))
    deltas = [rec.delta for rec in sim.records]
    order = data.draw(st.permutations(deltas + deltas[: len(deltas) // 2]))
    from_deltas = functools.reduce(lambda s, d: s.apply_delta(d), order, kind.empty())
    sim.full_sync()
    same(from_deltas, sim.states[0])


@kinds
@PROPS
@given(data=st.data())
def test_codec_round_trip_is_byte_identical(kind: Kind, data: st.DataObject) -> None:
    a, b, _ = three(data.draw(histories(kind)))
    for state in (a, b, a.merge(b)):
        blob = state.to_bytes()
        back = type(state).from_bytes(blob)
        assert back == state
        assert back.to_bytes() == blob
        assert crdt.decode(blob) == state
        assert crdt.encode(state) == blob
        assert hash(back) == hash(state)
        assert back.value() == state.value() or kind.name == "CapabilityVector"
    assert a.merge(b).to_bytes() == b.merge(a).to_bytes()


@kinds
def test_empty_state_round_trips(kind: Kind) -> None:
    empty = kind.empty()
    assert type(empty).from_bytes(empty.to_bytes()) == empty
    assert empty.apply_delta(empty) == empty
