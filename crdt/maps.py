"""Maps: ORMap (observed-remove map of nested CRDTs) and LWWMap.

ORMap — an add-wins map from string keys to CRDT states, built like the
map of Almeida, Shoker, Baquero, "Delta State Replicated Data Types" (JPDC
2018, §7.4 "ORMap": keys over a shared causal context) and riak_dt_map
(Brown, Lindström et al., "Riak DT Map: a composable, convergent replicated
dictionary", PaPEC 2014), with one simplification that keeps *any* CRDT of this
package nestable, not only dot-based ones:

* State: a causal context ``C`` and ``entries: key -> {dot: contribution}``.
  A *contribution* is a nested CRDT state: everything one replica has written
  to that key since it last saw the key removed. Each replica holds at most one
  live dot per key; a new update mints a fresh dot whose contribution is the
  old one joined with the nested delta, and supersedes the old dot.
* The value at a key is the join of its live contributions.
* ``update(node, key, fn, empty)`` computes the nested delta ``fn(current)``
  against the joined current value, and returns the map delta
  ``({key: {new_dot: own_contribution ⊔ nested_delta}}, C = {new_dot, old own dot})``.
* ``remove(key)`` returns ``({}, C = dots of key)``: it drops exactly the
  contributions it has observed, so the key and its nested state vanish (no
  tombstone); an update concurrent with the remove keeps its own contribution
  and the key — **update wins over a concurrent remove**, like the OR-set.
* join: per key, the dot-function join (keep a dot held by both sides, or by
  one side and unseen by the other); contexts are unioned. Dots are unique and
  a dot's contribution never changes, so this is a lattice for any nested type.

If two replicas concurrently create one key with *different* nested types, the
contributions of the type with the highest codec tag win in ``get``/``value``
(deterministic everywhere); the others remain until removed.

Known limit: after a key is removed and re-created, nested dot-based types
(ORSet, MVRegister, ORMap) restart their dot counters; if an update that was
concurrent with the removal survives, it may share nested dots with the new
incarnation and hide some of its values. Convergence is unaffected (all
replicas agree); only that corner of the semantics is weaker.

LWWMap — a map of last-writer-wins registers (Shapiro et al. 2011, Spec. 8
applied per key) where ``remove`` writes a timestamped tombstone, so a remove
beats an older put and loses to a newer one. Tombstones are kept (they are
the price of LWW removes); use ORMap when keys churn.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Self, TypeAlias, TypeVar

from . import codec
from ._base import CRDTBase
from ._errors import CodecError, InvalidOperationError
from ._values import Payload, pack_payload, unpack_payload, wire_list, wire_payload, wire_str
from .clocks import CausalContext, Dot, Timestamp, _check_node, wire_dot

__all__ = ["LWWMap", "ORMap"]

C = TypeVar("C", bound=CRDTBase)


def _check_key(key: object) -> str:
    if not isinstance(key, str):
        raise InvalidOperationError(f"map keys must be str, got {type(key).__name__}")
    return key


@codec.register
@dataclass(frozen=True, slots=True)
class ORMap(CRDTBase):
    """Observed-remove map ``str -> nested CRDT``. See module docstring."""

    _TAG = 8
    context: CausalContext = field(default_factory=CausalContext)
    entries: Mapping[str, Mapping[Dot, CRDTBase]] = field(default_factory=dict)

    __hash__ = CRDTBase.__hash__

    # --- queries ---------------------------------------------------------------------

    def keys(self) -> frozenset[str]:
        return frozenset(self.entries)

    def __contains__(self, key: object) -> bool:
        return key in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self.entries))

    def get(self, key: str) -> CRDTBase | None:
        """The nested state at ``key`` (join of its contributions), or None if absent."""
        contributions = self.entries.get(key)
        if not contributions:
            return None
        tag = max(c._TAG for c in contributions.values())
        result: CRDTBase | None = None
        for dot in sorted(contributions):
            state = contributions[dot]
            if tag == state._TAG:
                result = state if result is None else result.merge(state)
        return result

    def value(self) -> dict[str, Any]:
        """``{key: nested.value()}`` for every present key."""
        out: dict[str, Any] = {}
        for key in sorted(self.entries):
            state = self.get(key)
            assert state is not None
            out[key] = state.value()
        return out

    # --- mutators (return deltas) ----------------------------------------------------

    def update(self, node_id: str, key: str, mutate: Callable[[C], C], empty: C) -> ORMap:
        """Delta applying a nested mutator to the value at ``key``.

        ``empty`` is the bottom of the nested type (used when the key is absent);
        ``mutate`` receives the current nested state and returns a nested delta,
        e.g. ``m.update("n1", "hits", lambda c: c.increment("n1"), GCounter())``.

        Raises:
            InvalidOperationError: the key holds a different nested type, or
                ``mutate`` returned a state of another type.
        """
        _check_key(key)
        current = self.get(key)
        if current is None:
            current = empty
        elif type(current) is not type(empty):
            raise InvalidOperationError(
                f"key {key!r} holds a {type(current).__name__}, not a {type(empty).__name__}"
            )
        nested_delta = mutate(current)
        if type(nested_delta) is not type(empty):
            raise InvalidOperationError("mutate must return a delta of the nested type")
        dot = self.context.next_dot(node_id)
        contributions = self.entries.get(key, {})
        own = [d for d in contributions if d[0] == node_id]
        contribution: CRDTBase = empty
        for d in own:
            if type(contributions[d]) is type(empty):
                contribution = contribution.merge(contributions[d])
        contribution = contribution.merge(nested_delta)
        return ORMap(CausalContext.of([dot, *own]), {key: {dot: contribution}})

    def remove(self, key: str) -> ORMap:
        """Delta removing ``key`` and its nested state, as far as observed here."""
        _check_key(key)
        return ORMap(CausalContext.of(self.entries.get(key, {})), {})

    # --- join ------------------------------------------------------------------------

    def merge(self, other: ORMap) -> ORMap:
        ctx_a, ctx_b = self.context, other.context
        entries: dict[str, Mapping[Dot, CRDTBase]] = {}
        for key in self.entries.keys() | other.entries.keys():
            a = self.entries.get(key, {})
            b = other.entries.get(key, {})
            if a == b:
                entries[key] = a
                continue
            kept: dict[Dot, CRDTBase] = {}
            for dot, state in a.items():
                if dot in b or dot not in ctx_b:
                    kept[dot] = state
            for dot, state in b.items():
                if dot not in a and dot not in ctx_a:
                    kept[dot] = state
            if kept:
                entries[key] = kept
        return ORMap(ctx_a.union(ctx_b), entries)

    # --- codec -----------------------------------------------------------------------

    def _to_wire(self) -> Any:
        return [
            self.context.to_wire(),
            [
                [
                    key,
                    [
                        [[n, c], codec.to_wire_tagged(self.entries[key][(n, c)])]
                        for n, c in sorted(self.entries[key])
                    ],
                ]
                for key in sorted(self.entries)
            ],
        ]

    @classmethod
    def _from_wire(cls, obj: Any) -> Self:
        ctx_wire, entries_wire = wire_list(obj, "ormap", 2)
        ctx = CausalContext.from_wire(ctx_wire)
        entries: dict[str, dict[Dot, CRDTBase]] = {}
        seen: set[Dot] = set()
        for item in wire_list(entries_wire, "ormap entries"):
            key_wire, dots_wire = wire_list(item, "ormap entry", 2)
            key = wire_str(key_wire, "ormap key")
            kept: dict[Dot, CRDTBase] = {}
            for pair in wire_list(dots_wire, "ormap contributions"):
                dot_wire, nested = wire_list(pair, "ormap contribution", 2)
                dot = wire_dot(dot_wire)
                if dot not in ctx or dot in seen:
                    raise CodecError("ormap dot outside its causal context or used twice")
                seen.add(dot)
                value = codec.from_wire_tagged(nested)
                if not isinstance(value, CRDTBase):
                    raise CodecError(f"ormap value is not a CRDT: {type(value).__name__}")
                kept[dot] = value
            if not kept:
                raise CodecError("ormap key without contributions")
            entries[key] = kept
        return cls(ctx, entries)


LWWEntry: TypeAlias = tuple[Timestamp, str, bytes | None]
"""``(timestamp, node_id, payload bytes)``; payload None marks a removal (tombstone)."""


def _lww_key(entry: LWWEntry) -> tuple[Timestamp, str, int, bytes]:
    ts, node, blob = entry
    return (ts, node, 0 if blob is None else 1, blob or b"")


@codec.register
@dataclass(frozen=True, slots=True)
class LWWMap(CRDTBase):
    """Map ``str -> payload`` where each key is a last-writer-wins register."""

    _TAG = 9
    entries: Mapping[str, LWWEntry] = field(default_factory=dict)

    __hash__ = CRDTBase.__hash__

    def value(self) -> dict[str, Payload]:
        """Live keys and (fresh copies of) their payloads."""
        return {
            k: unpack_payload(e[2]) for k, e in sorted(self.entries.items()) if e[2] is not None
        }

    def get(self, key: str, default: Payload = None) -> Payload:
        entry = self.entries.get(key)
        if entry is None or entry[2] is None:
            return default
        return unpack_payload(entry[2])

    def __contains__(self, key: object) -> bool:
        entry = self.entries.get(key)  # type: ignore[call-overload]
        return entry is not None and entry[2] is not None

    def keys(self) -> frozenset[str]:
        return frozenset(k for k, e in self.entries.items() if e[2] is not None)

    def put(self, key: str, value: Payload, timestamp: Timestamp, node_id: str) -> LWWMap:
        """Delta writing ``value`` at ``key`` with ``(timestamp, node_id)``."""
        return self._write(key, pack_payload(value), timestamp, node_id)

    def remove(self, key: str, timestamp: Timestamp, node_id: str) -> LWWMap:
        """Delta writing a tombstone at ``key`` with ``(timestamp, node_id)``."""
        return self._write(key, None, timestamp, node_id)

    def _write(self, key: str, blob: bytes | None, timestamp: Timestamp, node_id: str) -> LWWMap:
        _check_key(key)
        if not isinstance(timestamp, Timestamp):
            raise InvalidOperationError("timestamp must be a crdt.Timestamp")
        return LWWMap({key: (timestamp, _check_node(node_id), blob)})

    def merge(self, other: LWWMap) -> LWWMap:
        a, b = self.entries, other.entries
        if len(b) > len(a):
            a, b = b, a
        out = dict(a)
        for key, entry in b.items():
            mine = out.get(key)
            if mine is None or _lww_key(entry) > _lww_key(mine):
                out[key] = entry
        return LWWMap(out)

    def _to_wire(self) -> Any:
        return [
            [key, ts.to_wire(), node, blob]
            for key, (ts, node, blob) in sorted(self.entries.items())
        ]

    @classmethod
    def _from_wire(cls, obj: Any) -> Self:
        entries: dict[str, LWWEntry] = {}
        for item in wire_list(obj, "lww map"):
            key, ts, node, blob = wire_list(item, "lww map entry", 4)
            node_id = wire_str(node, "node id")
            if not node_id:
                raise CodecError("lww map entry without a node id")
            entries[wire_str(key, "lww map key")] = (
                Timestamp.from_wire(ts),
                node_id,
                None if blob is None else wire_payload(blob),
            )
        return cls(entries)
