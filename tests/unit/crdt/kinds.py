"""One description per CRDT type, driving the generic property suite.

A :class:`Kind` knows how to make the empty state, which operations exist (as a
Hypothesis strategy of plain tuples), how to run one operation on a replica
(returning the delta), and a *sequential model*: the value the replicas must
converge to, computed from the operation log alone. The model uses only which
operations each issuer had already seen (``Record.known``) — the definition of
"observed" in observed-remove semantics — never the CRDT's internal state.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

import crdt
from crdt import (
    CapabilityVector,
    CRDTBase,
    EventLog,
    GCounter,
    GSet,
    HybridLogicalClock,
    LWWMap,
    LWWRegister,
    MVRegister,
    ORMap,
    ORSet,
    PNCounter,
    Timestamp,
    VectorClock,
)
from crdt._values import pack_payload

Op = tuple[Any, ...]


@dataclass
class Record:
    """One operation as issued: where, what, what its issuer had seen, what it produced."""

    index: int
    replica: str
    op: Op
    known: frozenset[int]
    delta: CRDTBase
    meta: Any = None


@dataclass
class Kind:
    name: str
    empty: Callable[[], CRDTBase]
    ops: st.SearchStrategy[Op]
    # (state, replica, op, clock) -> (delta, meta); may raise InvalidOperationError to skip
    apply: Callable[[Any, str, Op, HybridLogicalClock], tuple[CRDTBase, Any]]
    model: Callable[[list[Record]], Any]
    observe: Callable[[Any], Any]

    def __repr__(self) -> str:
        return self.name


ELEMENTS = st.sampled_from(["a", "b", "c", 1, 2, b"z"])
PAYLOADS = st.one_of(
    st.none(),
    st.integers(-3, 3),
    st.sampled_from(["x", "y", "zz"]),
    st.lists(st.integers(0, 2), max_size=2),
    st.dictionaries(st.sampled_from(["p", "q"]), st.booleans(), max_size=2),
)
PT = st.integers(0, 6)


def _cancelled(records: Sequence[Record], targets: Callable[[Record, Record], bool]) -> set[int]:
    """Indices of records observed by a later record that targets the same thing."""
    dead: set[int] = set()
    for later in records:
        for earlier in records:
            if earlier.index in later.known and targets(later, earlier):
                dead.add(earlier.index)
    return dead


# --- counters ---------------------------------------------------------------------------


def _gcounter_apply(s: GCounter, r: str, op: Op, _c: HybridLogicalClock) -> tuple[CRDTBase, Any]:
    return s.increment(r, op[1]), None


def _pn_apply(s: PNCounter, r: str, op: Op, _c: HybridLogicalClock) -> tuple[CRDTBase, Any]:
    return (s.increment(r, op[1]) if op[0] == "inc" else s.decrement(r, op[1])), None


def _pn_model(records: list[Record]) -> int:
    return sum(rec.op[1] if rec.op[0] == "inc" else -rec.op[1] for rec in records)


# --- sets -------------------------------------------------------------------------------


def _gset_apply(s: GSet, r: str, op: Op, _c: HybridLogicalClock) -> tuple[CRDTBase, Any]:
    return s.add(op[1]), None


def _orset_apply(s: ORSet, r: str, op: Op, _c: HybridLogicalClock) -> tuple[CRDTBase, Any]:
    if op[0] == "add":
        return s.add(r, op[1]), None
    if op[0] == "remove":
        return s.remove(op[1]), None
    return s.clear(), None


def _orset_model(records: list[Record]) -> frozenset[Any]:
    def targets(later: Record, earlier: Record) -> bool:
        return earlier.op[0] == "add" and (later.op[0] == "clear" or later.op[1] == earlier.op[1])

    dead = _cancelled(records, targets)
    return frozenset(r.op[1] for r in records if r.op[0] == "add" and r.index not in dead)


# --- registers --------------------------------------------------------------------------


def _lww_apply(s: LWWRegister, r: str, op: Op, c: HybridLogicalClock) -> tuple[CRDTBase, Any]:
    ts = c.now(op[2])
    return s.assign(op[1], ts, r), (ts, r, pack_payload(op[1]))


def _lww_model(records: list[Record]) -> bytes | None:
    if not records:
        return None
    return max(rec.meta for rec in records)[2]  # greatest (hlc, node_id, payload)


def _lww_observe(s: LWWRegister) -> bytes | None:
    return s.blob if s.is_set else None


def _mv_apply(s: MVRegister, r: str, op: Op, _c: HybridLogicalClock) -> tuple[CRDTBase, Any]:
    return s.assign(r, op[1]), None


def _mv_model(records: list[Record]) -> list[bytes]:
    dead = _cancelled(records, lambda later, earlier: True)
    return sorted(pack_payload(r.op[1]) for r in records if r.index not in dead)


def _mv_observe(s: MVRegister) -> list[bytes]:
    return sorted(s.entries.values())


# --- maps -------------------------------------------------------------------------------


def _ormap_apply(s: ORMap, r: str, op: Op, _c: HybridLogicalClock) -> tuple[CRDTBase, Any]:
    kind, key = op[0], op[1]
    if kind == "inc":
        return s.update(r, key, lambda c: c.increment(r, op[2]), GCounter()), None
    if kind == "sadd":
        return s.update(r, key, lambda c: c.add(r, op[2]), ORSet()), None
    if kind == "srem":
        return s.update(r, key, lambda c: c.remove(op[2]), ORSet()), None
    return s.remove(key), None


def _ormap_model(records: list[Record]) -> frozenset[str]:
    # A remove cancels the updates of the key it has seen; an update supersedes only its
    # own replica's earlier updates (other replicas' contributions stay).
    def targets(later: Record, earlier: Record) -> bool:
        return later.op[1] == earlier.op[1] and (
            later.op[0] == "rm" or later.replica == earlier.replica
        )

    dead = _cancelled(records, targets)
    return frozenset(r.op[1] for r in records if r.op[0] != "rm" and r.index not in dead)


def _lwwmap_apply(s: LWWMap, r: str, op: Op, c: HybridLogicalClock) -> tuple[CRDTBase, Any]:
    if op[0] == "put":
        ts = c.now(op[3])
        return s.put(op[1], op[2], ts, r), (ts, r, 1, pack_payload(op[2]))
    ts = c.now(op[2])
    return s.remove(op[1], ts, r), (ts, r, 0, b"")


def _lwwmap_model(records: list[Record]) -> dict[str, bytes]:
    best: dict[str, Any] = {}
    for rec in records:
        key = rec.op[1]
        if key not in best or rec.meta > best[key]:
            best[key] = rec.meta
    return {k: m[3] for k, m in best.items() if m[2] == 1}


def _lwwmap_observe(s: LWWMap) -> dict[str, bytes]:
    return {k: e[2] for k, e in s.entries.items() if e[2] is not None}


# --- event log --------------------------------------------------------------------------


def _log_apply(s: EventLog, r: str, op: Op, c: HybridLogicalClock) -> tuple[CRDTBase, Any]:
    if op[0] == "append":
        ts = c.now(op[3])
        return s.append(ts, r, op[1], op[2]), (ts, r, op[1], pack_payload(op[2]))
    return s.compact(Timestamp(op[1], 0)), Timestamp(op[1], 0)


def _log_model(records: list[Record]) -> list[Any]:
    marks = [rec.meta for rec in records if rec.op[0] == "compact"]
    mark = max(marks) if marks else Timestamp(0, 0)
    best: dict[str, Any] = {}
    for rec in records:
        if rec.op[0] == "append" and (rec.op[1] not in best or rec.meta > best[rec.op[1]]):
            best[rec.op[1]] = rec.meta
    return sorted(m for m in best.values() if m[0] >= mark)


def _log_observe(s: EventLog) -> list[Any]:
    return [e.key() for e in s.value()]


# --- capability vector ------------------------------------------------------------------

CAP_DIMS = 8


def _cap_apply(s: CapabilityVector, r: str, op: Op, _c: HybridLogicalClock) -> tuple[CRDTBase, Any]:
    return s.add(r, op[1], op[2]), None


def _cap_model(records: list[Record]) -> bytes:
    totals = [0] * CAP_DIMS
    for rec in records:
        totals[rec.op[1]] += round(rec.op[2] * 2**24)
    return struct.pack(f"<{CAP_DIMS}f", *(t / 2**24 for t in totals))


# --- vector clock -----------------------------------------------------------------------


def _vc_apply(s: VectorClock, r: str, op: Op, _c: HybridLogicalClock) -> tuple[CRDTBase, Any]:
    return s.increment(r), None


def _vc_model(records: list[Record]) -> dict[str, int]:
    out: dict[str, int] = {}
    for rec in records:
        out[rec.replica] = out.get(rec.replica, 0) + 1
    return out


KINDS: list[Kind] = [
    Kind(
        "GCounter",
        GCounter,
        st.tuples(st.just("inc"), st.integers(1, 5)),
        _gcounter_apply,
        lambda recs: sum(r.op[1] for r in recs),
        lambda s: s.value(),
    ),
    Kind(
        "PNCounter",
        PNCounter,
        st.tuples(st.sampled_from(["inc", "dec"]), st.integers(1, 5)),
        _pn_apply,
        _pn_model,
        lambda s: s.value(),
    ),
    Kind(
        "GSet",
        GSet,
        st.tuples(st.just("add"), ELEMENTS),
        _gset_apply,
        lambda recs: frozenset(r.op[1] for r in recs),
        lambda s: s.value(),
    ),
    Kind(
        "ORSet",
        ORSet,
        st.one_of(
            st.tuples(st.sampled_from(["add", "add", "remove"]), ELEMENTS),
            st.tuples(st.just("clear")),
        ),
        _orset_apply,
        _orset_model,
        lambda s: s.value(),
    ),
    Kind(
        "LWWRegister",
        LWWRegister,
        st.tuples(st.just("assign"), PAYLOADS, PT),
        _lww_apply,
        _lww_model,
        _lww_observe,
    ),
    Kind(
        "MVRegister",
        MVRegister,
        st.tuples(st.just("assign"), PAYLOADS),
        _mv_apply,
        _mv_model,
        _mv_observe,
    ),
    Kind(
        "ORMap",
        ORMap,
        st.one_of(
            st.tuples(st.just("inc"), st.sampled_from(["c0", "c1"]), st.integers(1, 3)),
            st.tuples(st.sampled_from(["sadd", "srem"]), st.sampled_from(["s0", "s1"]), ELEMENTS),
            st.tuples(st.just("rm"), st.sampled_from(["c0", "c1", "s0", "s1"])),
        ),
        _ormap_apply,
        _ormap_model,
        lambda s: s.keys(),
    ),
    Kind(
        "LWWMap",
        LWWMap,
        st.one_of(
            st.tuples(st.just("put"), st.sampled_from(["k0", "k1", "k2"]), PAYLOADS, PT),
            st.tuples(st.just("del"), st.sampled_from(["k0", "k1", "k2"]), PT),
        ),
        _lwwmap_apply,
        _lwwmap_model,
        _lwwmap_observe,
    ),
    Kind(
        "EventLog",
        EventLog,
        st.one_of(
            st.tuples(
                st.just("append"), st.sampled_from(["e0", "e1", "e2", "e3"]), st.integers(0, 3), PT
            ),
            st.tuples(st.just("compact"), PT),
        ),
        _log_apply,
        _log_model,
        _log_observe,
    ),
    Kind(
        "CapabilityVector",
        lambda: CapabilityVector(dims=CAP_DIMS),
        st.tuples(
            st.just("add"),
            st.integers(0, CAP_DIMS - 1),
            st.floats(-100, 100, allow_nan=False, allow_infinity=False),
        ),
        _cap_apply,
        _cap_model,
        lambda s: s.to_float32_bytes(),
    ),
    Kind(
        "VectorClock",
        VectorClock,
        st.tuples(st.just("tick")),
        _vc_apply,
        _vc_model,
        lambda s: s.value(),
    ),
]

assert {k.name for k in KINDS} >= {
    name
    for name in crdt.__all__
    if isinstance(getattr(crdt, name), type)
    and issubclass(getattr(crdt, name), CRDTBase)
    and name != "CRDTBase"
}, "every CRDT type must have a Kind"


# --- simulation -------------------------------------------------------------------------


@dataclass
class Sim:
    """Replicas, what each has seen, the operation log and every delta sent."""

    kind: Kind
    states: list[Any]
    knows: list[set[int]]
    clocks: list[HybridLogicalClock]
    records: list[Record] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        return [f"r{i}" for i in range(len(self.states))]

    def op(self, i: int, op: Op) -> None:
        state = self.states[i]
        try:
            delta, meta = self.kind.apply(state, self.names[i], op, self.clocks[i])
        except crdt.InvalidOperationError:
            return  # e.g. an append below the compaction watermark: refused, no effect
        rec = Record(len(self.records), self.names[i], op, frozenset(self.knows[i]), delta, meta)
        self.records.append(rec)
        self.knows[i].add(rec.index)
        self.states[i] = state.apply_delta(delta)

    def deliver(self, msg: int, i: int) -> None:
        if self.records:
            rec = self.records[msg % len(self.records)]
            self.states[i] = self.states[i].apply_delta(rec.delta)
            self.knows[i].add(rec.index)

    def sync(self, src: int, dst: int) -> None:
        self.states[dst] = self.states[dst].merge(self.states[src])
        self.knows[dst] |= self.knows[src]

    def full_sync(self) -> None:
        """Anti-entropy after losses: every replica pulls every other's full state, twice."""
        n = len(self.states)
        for _round in range(2):
            for src in range(n):
                for dst in range(n):
                    if src != dst:
                        self.sync(src, dst)


Step = tuple[Any, ...]


def steps(n: int, kind: Kind) -> st.SearchStrategy[Step]:
    replica = st.integers(0, n - 1)
    return st.one_of(
        st.tuples(st.just("op"), replica, kind.ops),
        st.tuples(st.just("op"), replica, kind.ops),
        st.tuples(st.just("deliver"), st.integers(0, 63), replica),
        st.tuples(st.just("sync"), replica, replica),
    )


def run(kind: Kind, n: int, script: list[Step]) -> Sim:
    sim = Sim(
        kind,
        [kind.empty() for _ in range(n)],
        [set() for _ in range(n)],
        [HybridLogicalClock() for _ in range(n)],
    )
    for step in script:
        if step[0] == "op":
            sim.op(step[1], step[2])
        elif step[0] == "deliver":
            sim.deliver(step[1], step[2])
        else:
            sim.sync(step[1], step[2])
    return sim


@st.composite
def histories(draw: st.DrawFn, kind: Kind, max_steps: int = 24) -> Sim:
    """A random run on 3-5 replicas: ops, duplicated/reordered/lost delta deliveries, syncs."""
    n = draw(st.integers(3, 5))
    return run(kind, n, draw(st.lists(steps(n, kind), max_size=max_steps)))
