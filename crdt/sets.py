"""Sets: GSet (grow-only) and ORSet (add-wins observed-remove set).

GSet — Shapiro et al. 2011 (INRIA RR-7506), Specification 11: join is union.

ORSet — add-wins observed-remove set, in the optimized form without
tombstones of Bieniusa, Zawirski, Preguiça, Shapiro, Baquero, Balegas, Duarte,
"An Optimized Conflict-free Replicated Set" (arXiv:1210.3368, 2012), written
as a delta-state CRDT over a causal context as in Almeida, Shoker, Baquero,
"Delta State Replicated Data Types" (JPDC 2018, §7.2 "add-wins set").

State: a causal context ``C`` (every dot this replica has *seen*) and
``entries: element -> set of dots`` (the dots that currently *support* the
element; always a subset of ``C``).

* ``add(node, e)`` mints a fresh dot ``d`` and returns the delta
  ``({e: {d}}, C = {d} | old dots of e)`` — the old dots are superseded.
* ``remove(e)`` returns ``({}, C = dots of e)``: it removes exactly the adds
  it has *observed*; an add concurrent with it carries a dot the remover never
  saw, so it survives — **add wins**.
* join of ``(E1, C1)`` and ``(E2, C2)`` keeps a dot if both sides have it, or if
  one side has it and the other side has not seen it (``d ∉ C_other``); the
  contexts are unioned.

No tombstone growth: a removed dot is remembered only through the causal
context, and the context is compacted into a version vector (one integer per
node) as soon as dots are contiguous, so 10,000 add/remove cycles of one
element leave a state of one vector entry, not 10,000 tombstones.

Performance: joining a small delta into a large state touches only the dots
named by the delta (found through a lazily built ``dot -> element`` index)
plus two C-level dict copies, instead of scanning every element.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Self

from . import codec
from ._base import CRDTBase
from ._errors import CodecError
from ._values import Element, check_element, element_key, wire_element, wire_list
from .clocks import CausalContext, Dot, _check_node, wire_dot

__all__ = ["GSet", "ORSet"]


@codec.register
@dataclass(frozen=True, slots=True)
class GSet(CRDTBase):
    """Grow-only set of elements (str, bytes or int)."""

    _TAG = 4
    elements: frozenset[Element] = frozenset()

    __hash__ = CRDTBase.__hash__

    def value(self) -> frozenset[Element]:
        return self.elements

    def __contains__(self, element: object) -> bool:
        return element in self.elements

    def __len__(self) -> int:
        return len(self.elements)

    def add(self, element: Element) -> GSet:
        """Delta adding ``element``."""
        return GSet(frozenset([check_element(element)]))

    def add_all(self, elements: Iterable[Element]) -> GSet:
        """Delta adding every element of ``elements``."""
        return GSet(frozenset(check_element(e) for e in elements))

    def merge(self, other: GSet) -> GSet:
        if other.elements <= self.elements:
            return self
        return GSet(self.elements | other.elements)

    def _to_wire(self) -> Any:
        return sorted(self.elements, key=element_key)

    @classmethod
    def _from_wire(cls, obj: Any) -> Self:
        return cls(frozenset(wire_element(e) for e in wire_list(obj, "gset")))


def _small(delta: ORSet, state: ORSet) -> bool:
    """Is ``delta`` small enough relative to ``state`` for the indexed join?"""
    budget = max(32, len(state.entries) // 8)
    return delta.context.dot_count() <= budget and len(delta.entries) <= budget


@codec.register
@dataclass(frozen=True, slots=True)
class ORSet(CRDTBase):
    """Add-wins observed-remove set (dot-based, no tombstones). See module docstring."""

    _TAG = 5
    context: CausalContext = field(default_factory=CausalContext)
    entries: Mapping[Element, frozenset[Dot]] = field(default_factory=dict)
    _index: dict[Dot, Element] | None = field(default=None, init=False, compare=False, repr=False)

    __hash__ = CRDTBase.__hash__

    # --- queries ---------------------------------------------------------------------

    def value(self) -> frozenset[Element]:
        return frozenset(self.entries)

    def __contains__(self, element: object) -> bool:
        return element in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    # --- mutators (return deltas) ----------------------------------------------------

    def add(self, node_id: str, element: Element) -> ORSet:
        """Delta adding ``element`` with a fresh dot of ``node_id``."""
        check_element(element)
        dot = self.context.next_dot(node_id)
        old = self.entries.get(element, frozenset())
        return ORSet(CausalContext.of([dot, *old]), {element: frozenset([dot])})

    def add_all(self, node_id: str, elements: Iterable[Element]) -> ORSet:
        """Delta adding several elements, one fresh dot each."""
        top = self.context.max_counter(_check_node(node_id))
        seen: list[Dot] = []
        new: dict[Element, frozenset[Dot]] = {}
        for element in elements:
            check_element(element)
            if element in new:
                continue
            top += 1
            dot = (node_id, top)
            seen.append(dot)
            seen.extend(self.entries.get(element, ()))
            new[element] = frozenset([dot])
        return ORSet(CausalContext.of(seen), new)

    def remove(self, element: Element) -> ORSet:
        """Delta removing the adds of ``element`` this replica has observed."""
        check_element(element)
        return ORSet(CausalContext.of(self.entries.get(element, ())), {})

    def clear(self) -> ORSet:
        """Delta removing every observed element."""
        return ORSet(CausalContext.of(d for ds in self.entries.values() for d in ds), {})

    # --- join ------------------------------------------------------------------------

    def merge(self, other: ORSet) -> ORSet:
        if _small(other, self):
            return self._join_small(other)
        if _small(self, other):
            return other._join_small(self)
        return self._join_general(other)

    def _dot_index(self) -> dict[Dot, Element]:
        index = self._index
        if index is None:
            index = {d: e for e, ds in self.entries.items() for d in ds}
            object.__setattr__(self, "_index", index)
        return index

    def _join_small(self, small: ORSet) -> ORSet:
        entries = dict(self.entries)
        index = dict(self._dot_index())
        small_entries = small.entries
        # Dots of ours that the small side has seen but no longer supports: removed.
        for dot in small.context.dots():
            element = index.get(dot)
            if element is None:
                continue
            theirs = small_entries.get(element)
            if theirs is not None and dot in theirs:
                continue
            rest = entries[element] - {dot}
            if rest:
                entries[element] = rest
            else:
                del entries[element]
            del index[dot]
        # Dots of theirs that we have not seen: added.
        ctx = self.context
        for element, theirs in small_entries.items():
            ours = entries.get(element, frozenset())
            fresh = [d for d in theirs if d not in ours and d not in ctx]
            if fresh:
                entries[element] = ours.union(fresh)
                for dot in fresh:
                    index[dot] = element
        result = ORSet(ctx.union(small.context), entries)
        object.__setattr__(result, "_index", index)
        return result

    def _join_general(self, other: ORSet) -> ORSet:
        ctx_a, ctx_b = self.context, other.context
        a_entries, b_entries = self.entries, other.entries
        entries: dict[Element, frozenset[Dot]] = {}
        for element, ours in a_entries.items():
            theirs = b_entries.get(element)
            if theirs is None:
                keep = frozenset(d for d in ours if d not in ctx_b)
            elif ours == theirs:
                keep = ours
            else:
                keep = (
                    (ours & theirs)
                    | {d for d in ours - theirs if d not in ctx_b}
                    | {d for d in theirs - ours if d not in ctx_a}
                )
            if keep:
                entries[element] = keep
        for element, theirs in b_entries.items():
            if element in a_entries:
                continue
            keep = frozenset(d for d in theirs if d not in ctx_a)
            if keep:
                entries[element] = keep
        return ORSet(ctx_a.union(ctx_b), entries)

    # --- codec -----------------------------------------------------------------------

    def _to_wire(self) -> Any:
        return [
            self.context.to_wire(),
            [
                [e, [[n, c] for n, c in sorted(self.entries[e])]]
                for e in sorted(self.entries, key=element_key)
            ],
        ]

    @classmethod
    def _from_wire(cls, obj: Any) -> Self:
        ctx_wire, entries_wire = wire_list(obj, "orset", 2)
        ctx = CausalContext.from_wire(ctx_wire)
        entries: dict[Element, frozenset[Dot]] = {}
        seen: set[Dot] = set()
        for item in wire_list(entries_wire, "orset entries"):
            elem_wire, dots_wire = wire_list(item, "orset entry", 2)
            dots = frozenset(wire_dot(d) for d in wire_list(dots_wire, "orset dots"))
            if not dots:
                raise CodecError("orset element without dots")
            if not all(d in ctx for d in dots) or seen & dots:
                raise CodecError("orset dot outside its causal context or used twice")
            seen |= dots
            entries[wire_element(elem_wire)] = dots
        return cls(ctx, entries)
