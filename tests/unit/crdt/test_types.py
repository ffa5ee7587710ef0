"""Type-specific behaviour: the semantics each type promises beyond the shared laws."""

from __future__ import annotations

import ast
import functools
import random
import struct
import sys
from pathlib import Path

import pytest

import crdt
from crdt import (
    CapabilityVector,
    CausalContext,
    ClockDriftError,
    CodecError,
    CRDTError,
    EventLog,
    GCounter,
    GSet,
    IncompatibleStateError,
    InvalidOperationError,
    LWWMap,
    LWWRegister,
    MVRegister,
    ORMap,
    ORSet,
    PNCounter,
    Timestamp,
    UnsupportedVersionError,
)

T = Timestamp


def apply(state, delta):  # type: ignore[no-untyped-def]
    return state.apply_delta(delta)


# --- package hygiene ------------------------------------------------------------------------


def test_crdt_imports_only_stdlib_and_msgpack() -> None:
    root = Path(crdt.__file__).parent
    for path in root.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                assert top in sys.stdlib_module_names or top == "msgpack", (path.name, name)


def test_exception_tree() -> None:
    for exc in (InvalidOperationError, IncompatibleStateError, ClockDriftError, CodecError):
        assert issubclass(exc, CRDTError)
    assert issubclass(UnsupportedVersionError, CodecError)
    assert issubclass(CodecError, ValueError) and issubclass(InvalidOperationError, ValueError)
    assert "UnsupportedVersionError" in (crdt._errors.__doc__ or "")


# --- counters -------------------------------------------------------------------------------


def test_counters_count_and_reject_bad_amounts() -> None:
    g = GCounter()
    g = apply(g, g.increment("a", 3))
    g = apply(g, g.increment("b"))
    assert g.value() == 4 and g.increment("a").counts == {"a": 4}
    p = PNCounter()
    p = apply(p, p.increment("a", 5))
    p = apply(p, p.decrement("b", 7))
    assert p.value() == -2
    for bad in (0, -1, True, 1.5):
        with pytest.raises(InvalidOperationError):
            g.increment("a", bad)  # type: ignore[arg-type]
        with pytest.raises(InvalidOperationError):
            p.decrement("a", bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidOperationError):
        g.increment("")


# --- sets -----------------------------------------------------------------------------------


def test_gset_and_element_validation() -> None:
    s = GSet()
    s = apply(s, s.add_all(["x", 1, b"y"]))
    assert "x" in s and len(s) == 3 and s.value() == {"x", 1, b"y"}
    assert s.merge(s.add("x")) is s
    for bad in (True, 1.5, None, 2**63, ("t",)):
        with pytest.raises(InvalidOperationError):
            s.add(bad)  # type: ignore[arg-type]


def test_orset_add_wins_over_concurrent_remove() -> None:
    a = ORSet()
    a = apply(a, a.add("A", "x"))
    b = a  # B has seen the add
    remove = b.remove("x")
    readd = a.add("A", "x")  # concurrent with the remove
    for order in ([remove, readd], [readd, remove]):
        s = functools.reduce(apply, order, a)
        assert s.value() == {"x"}
    # a remove that observed the re-add does win
    s = apply(apply(a, readd), remove)
    s = apply(s, s.remove("x"))
    assert s.value() == frozenset()


def test_orset_remove_only_removes_observed_adds() -> None:
    a, b = ORSet(), ORSet()
    add_a = a.add("A", "x")
    add_b = b.add("B", "x")
    a = apply(a, add_a)
    rm = a.remove("x")  # saw only A's add
    merged = functools.reduce(apply, [add_b, rm], a)
    assert merged.value() == {"x"}
    assert merged.entries["x"] == {("B", 1)}
    assert b.remove("nothing") == ORSet()


def test_orset_add_all_and_clear() -> None:
    s = ORSet()
    s = apply(s, s.add_all("A", ["x", "y", "x"]))
    assert s.value() == {"x", "y"} and s.context.vv == {"A": 2}
    s = apply(s, s.add_all("A", ["x"]))
    assert s.entries["x"] == {("A", 3)}
    s = apply(s, s.clear())
    assert s.value() == frozenset() and len(s) == 0 and "x" not in s


def test_orset_state_stays_bounded_under_10000_add_remove_cycles() -> None:
    a, b = ORSet(), ORSet()
    sizes = []
    for i in range(10_000):
        if i % 2:
            d1 = a.add("A", "x")
            a = apply(a, d1)
            d2 = a.remove("x")
            a = apply(a, d2)
            b = apply(apply(b, d1), d2)
        else:
            d1 = b.add("B", "x")
            b = apply(b, d1)
            d2 = b.remove("x")
            b = apply(b, d2)
            a = apply(apply(a, d1), d2)
        if i % 1000 == 999:
            sizes.append(len(a.to_bytes()))
    assert a == b and a.value() == frozenset()
    assert not a.entries and not a.context.cloud
    assert a.context.vv == {"A": 5_000, "B": 5_000}
    assert max(sizes) < 40, sizes  # one version-vector entry per node, no tombstones


def test_orset_small_and_general_joins_agree() -> None:
    rng = random.Random(7)
    big = ORSet()
    big = apply(big, big.add_all("A", range(2000)))
    other = big
    for _ in range(200):
        e = rng.randrange(2100)
        op = other.remove(e) if rng.random() < 0.4 else other.add(rng.choice("BC"), e)
        small = op
        assert len(small.entries) <= 1
        fast = big.merge(small)  # indexed path
        slow = big._join_general(small)
        assert fast == slow
        assert small.merge(big) == slow
        other = apply(other, op)
        big = fast
        assert big._dot_index() == {d: e for e, ds in big.entries.items() for d in ds}
    assert big == other


# --- registers ------------------------------------------------------------------------------


def test_lww_register_orders_by_timestamp_then_node() -> None:
    r = LWWRegister()
    assert r.value() is None and not r.is_set
    w1 = r.assign("old", T(5, 0), "z")
    w2 = r.assign("new", T(6, 0), "a")
    tie = r.assign("tie", T(6, 0), "b")  # same timestamp, greater node id wins
    for order in ([w1, w2, tie], [tie, w2, w1], [w2, tie, w1]):
        assert functools.reduce(apply, order, r).value() == "tie"
    same_key = [r.assign(v, T(7, 0), "n") for v in ("p", "q")]  # misuse still converges
    assert same_key[0].merge(same_key[1]) == same_key[1].merge(same_key[0])
    with pytest.raises(InvalidOperationError):
        r.assign("x", (1, 2), "n")  # type: ignore[arg-type]


def test_lww_register_value_is_a_fresh_copy() -> None:
    r = apply(LWWRegister(), LWWRegister().assign({"b": [1], "a": (2,)}, T(1), "n"))
    v = r.value()
    assert v == {"a": [2], "b": [1]} and list(v) == ["a", "b"]
    v["a"].append(3)
    assert r.value() == {"a": [2], "b": [1]}


def test_mv_register_keeps_concurrent_values_until_overwritten() -> None:
    m = MVRegister()
    d1 = m.assign("A", "one")
    d2 = m.assign("B", "two")
    both = functools.reduce(apply, [d1, d2], m)
    assert both.value() == ("one", "two") or set(both.value()) == {"one", "two"}
    assert both.value() == tuple(sorted(both.value(), key=lambda v: crdt._values.pack_payload(v)))
    over = both.assign("C", "three")
    assert apply(both, over).value() == ("three",)
    assert apply(apply(m, over), d1).value() == ("three",)  # late old delta is ignored


@pytest.mark.parametrize(
    "bad",
    [
        {1: "x"},
        {1, 2},
        object(),
        2**64,
    ],
)
def test_payload_validation(bad: object) -> None:
    deep: object = []
    for _ in range(70):
        deep = [deep]
    for value in (bad, deep):
        with pytest.raises(InvalidOperationError):
            LWWRegister().assign(value, T(1), "n")
    assert LWWRegister().assign(-(2**63), T(1), "n").value() == -(2**63)
    assert LWWRegister().assign(2**64 - 1, T(1), "n").value() == 2**64 - 1


# --- maps -----------------------------------------------------------------------------------


def test_ormap_nested_counters_and_sets() -> None:
    m = ORMap()
    m = apply(m, m.update("A", "hits", lambda c: c.increment("A", 2), GCounter()))
    m = apply(m, m.update("B", "hits", lambda c: c.increment("B"), GCounter()))
    m = apply(m, m.update("A", "tags", lambda s: s.add("A", "fast"), ORSet()))
    assert m.value() == {"hits": 3, "tags": frozenset({"fast"})}
    assert m.keys() == {"hits", "tags"} and "hits" in m and len(m) == 2
    assert list(m) == ["hits", "tags"]
    assert m.get("nope") is None
    with pytest.raises(InvalidOperationError):
        m.update("A", "hits", lambda s: s.add("A", "x"), ORSet())
    with pytest.raises(InvalidOperationError):
        m.update("A", "new", lambda c: ORSet(), GCounter())  # type: ignore[arg-type,return-value]
    with pytest.raises(InvalidOperationError):
        m.remove(3)  # type: ignore[arg-type]


def test_ormap_remove_drops_observed_state_and_update_wins_concurrently() -> None:
    base = ORMap()
    base = apply(base, base.update("A", "k", lambda c: c.increment("A", 5), GCounter()))
    base = apply(base, base.update("B", "k", lambda c: c.increment("B", 1), GCounter()))
    rm = base.remove("k")
    upd = base.update("B", "k", lambda c: c.increment("B", 10), GCounter())
    for order in ([rm, upd], [upd, rm]):
        s = functools.reduce(apply, order, base)
        # B's contribution (its whole history, 11) survives; A's observed one is gone
        assert s.value() == {"k": 11}
    gone = apply(base, rm)
    assert gone.value() == {} and not gone.entries  # no tombstone kept for the key
    again = apply(gone, gone.update("A", "k", lambda c: c.increment("A"), GCounter()))
    assert again.value() == {"k": 1}  # a fresh incarnation starts from zero


def test_ormap_update_keeps_other_replicas_contributions_for_a_later_remove() -> None:
    """C saw only A's second update; its remove must not drop B's unseen contribution."""
    m = ORMap()
    b_upd = m.update("B", "k", lambda c: c.increment("B"), GCounter())
    a_state = apply(m, b_upd)
    a_upd = a_state.update("A", "k", lambda c: c.increment("A"), GCounter())
    c_state = apply(m, a_upd)
    rm = c_state.remove("k")
    final = functools.reduce(apply, [b_upd, a_upd, rm], m)
    assert final.value() == {"k": 1}  # B's increment, unseen by the remover, survives


def test_ormap_concurrent_types_resolve_deterministically() -> None:
    m = ORMap()
    d1 = m.update("A", "k", lambda c: c.increment("A"), GCounter())
    d2 = m.update("B", "k", lambda s: s.add("B", "x"), ORSet())
    s1, s2 = apply(apply(m, d1), d2), apply(apply(m, d2), d1)
    assert s1 == s2 and s1.value() == {"k": frozenset({"x"})}  # ORSet's tag is higher
    assert isinstance(s1.get("k"), ORSet)


def test_lww_map_puts_removes_and_tombstones() -> None:
    m = LWWMap()
    put = m.put("k", 1, T(1), "a")
    rm = m.remove("k", T(2), "a")
    late = m.put("k", 2, T(2), "b")  # same time, greater node: beats the remove
    assert apply(apply(m, put), rm).value() == {}
    assert "k" not in apply(apply(m, put), rm)
    s = functools.reduce(apply, [late, rm, put], m)
    assert s.value() == {"k": 2} and s.get("k") == 2 and "k" in s and s.keys() == {"k"}
    assert s.get("missing", "dflt") == "dflt"
    assert apply(m, rm).get("k", 0) == 0 and apply(m, rm).keys() == frozenset()
    tomb_vs_put = m.remove("j", T(3), "x").merge(m.put("j", None, T(3), "x"))
    assert tomb_vs_put.value() == {"j": None}  # at an identical (ts, node) a put wins
    with pytest.raises(InvalidOperationError):
        m.put(1, "v", T(1), "a")  # type: ignore[arg-type]
    with pytest.raises(InvalidOperationError):
        m.put("k", "v", 5, "a")  # type: ignore[arg-type]


# --- event log ------------------------------------------------------------------------------


def test_event_log_orders_dedups_and_compacts_convergently() -> None:
    log = EventLog()
    d1 = log.append(T(5), "n2", "e1", {"what": "started"})
    d2 = log.append(T(5), "n1", "e2", "tie on hlc, node breaks it")
    d3 = log.append(T(3), "n3", "e3", None)
    retry = log.append(T(9), "n2", "e1", {"what": "started"})  # same id, later stamp
    s = functools.reduce(apply, [d1, d2, d3, retry, d1], log)
    assert [e.entry_id for e in s.value()] == ["e3", "e2", "e1"]
    assert len(s) == 3 and "e1" in s and s.entries["e1"].hlc == T(9)
    assert [e.entry_id for e in s] == ["e3", "e2", "e1"]
    assert [e.entry_id for e in s.since(T(5))] == ["e1"]
    assert s.entries["e1"].payload() == {"what": "started"}
    cut = s.compact(T(5))
    compacted = apply(s, cut)
    assert [e.entry_id for e in compacted.value()] == ["e2", "e1"]
    assert compacted.watermark == T(5)
    # replicas that compact independently and see entries in any order converge
    other = functools.reduce(apply, [cut, d3, d2, retry], log)
    assert other == compacted.merge(other) == compacted
    assert compacted.merge(log.compact(T(1))) == compacted
    with pytest.raises(InvalidOperationError):
        compacted.append(T(4), "n1", "late", 1)
    for bad in [(5, "n", "e", 1), (T(6), "n", "", 1), (T(6), "", "e", 1)]:
        with pytest.raises(InvalidOperationError):
            compacted.append(*bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidOperationError):
        log.compact(7)  # type: ignore[arg-type]


def test_event_log_compaction_of_a_smaller_side() -> None:
    big = EventLog()
    for i in range(5):
        big = apply(big, big.append(T(i), "n", f"e{i}", i))
    small = EventLog().compact(T(3))
    assert [e.entry_id for e in big.merge(small).value()] == ["e3", "e4"]
    small = apply(small, small.append(T(4), "m", "x", 0))
    merged = big.merge(small)
    assert [e.entry_id for e in merged.value()] == ["e3", "x", "e4"]  # (hlc, node) order
    assert merged == small.merge(big)


# --- capability vector ----------------------------------------------------------------------


def test_capability_vector_256_dims_16_replicas_converge_byte_exactly() -> None:
    rng = random.Random(2024)
    replicas = [f"agent-{i:02d}" for i in range(16)]
    states = [CapabilityVector() for _ in replicas]
    deltas = []
    exact = [0] * 256
    for _step in range(400):
        i = rng.randrange(16)
        edits = {rng.randrange(256): rng.uniform(-1, 1) for _ in range(rng.randint(1, 4))}
        delta = states[i].add_many(replicas[i], edits)
        states[i] = apply(states[i], delta)
        deltas.append(delta)
        for dim, amount in edits.items():
            exact[dim] += round(amount * 2**24)
    views = []
    for seed in range(6):
        order = deltas[:]
        random.Random(seed).shuffle(order)
        views.append(functools.reduce(apply, order + order[:50], CapabilityVector()))
    full = functools.reduce(CapabilityVector.merge, states)
    expected = struct.pack("<256f", *(t / 2**24 for t in exact))
    for view in [*views, full]:
        assert view == full and view.to_bytes() == full.to_bytes()
        assert view.to_float32_bytes() == expected
    assert full.totals() == tuple(exact)
    assert len(full.value()) == 256
    assert full.value() == struct.unpack("<256f", expected)


def test_capability_vector_float_sums_would_not_converge_but_quanta_do() -> None:
    amounts = [0.1, 0.2, 0.3, 1e-3, 7.77]
    assert sum(amounts) != sum(reversed(amounts))  # why floats alone are not enough
    fwd, back = CapabilityVector(dims=1), CapabilityVector(dims=1)
    for n, a in enumerate(amounts):
        fwd = apply(fwd, fwd.add(f"r{n}", 0, a))
    for n, a in reversed(list(enumerate(amounts))):
        back = apply(back, back.add(f"r{n}", 0, a))
    assert fwd.to_float32_bytes() == back.to_float32_bytes()


def test_capability_vector_set_is_a_commutative_adjustment() -> None:
    v = CapabilityVector(dims=4)
    v = apply(v, v.add("a", 1, 1.5))
    s1 = v.set("a", 1, 2.0)
    s2 = v.set("b", 1, 3.0)
    assert apply(v, s1).value()[1] == 2.0
    both = functools.reduce(apply, [s2, s1], v)
    assert both.value()[1] == 1.5 + 0.5 + 1.5  # both adjustments apply
    assert both == functools.reduce(apply, [s1, s2], v)


def test_capability_vector_rejects_bad_edits() -> None:
    v = CapabilityVector(dims=4)
    for dim in (-1, 4, True, "0"):
        with pytest.raises(InvalidOperationError):
            v.add("a", dim, 1.0)  # type: ignore[arg-type]
    for amount in (float("nan"), float("inf"), 2.0**40, "1", True):
        with pytest.raises(InvalidOperationError):
            v.add("a", 0, amount)  # type: ignore[arg-type]
    big = apply(v, v.add("a", 0, 2.0**37))  # 2**61 quanta: fine
    with pytest.raises(InvalidOperationError):
        big.add("a", 0, 2.0**37)
    with pytest.raises(InvalidOperationError):
        v.set("a", 9, 1.0)
    with pytest.raises(IncompatibleStateError):
        v.merge(CapabilityVector())
    for dims in (0, -3, True):
        with pytest.raises(InvalidOperationError):
            CapabilityVector(dims=dims)


def test_context_of_an_empty_delta_is_empty() -> None:
    assert ORSet().remove("x").context == CausalContext()
