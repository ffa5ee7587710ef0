"""Counters: GCounter (grow-only) and PNCounter (increment/decrement).

GCounter — Shapiro, Preguiça, Baquero, Zawirski, "A comprehensive study of
Convergent and Commutative Replicated Data Types", INRIA RR-7506 (2011),
Specification 6. State: ``node_id -> count``; a node only raises its own entry;
join is the pointwise max; the value is the sum. The delta of ``increment`` is
the single updated entry (Almeida et al., delta-state CRDTs, Fig. 2), so a
shipped increment costs one entry, not the whole map.

PNCounter — same paper, Specification 7: a pair of GCounters, increments
``P`` and decrements ``N``; value ``sum(P) - sum(N)``; join is pointwise.

Both are used by the metrics tier (per-node counters and gauges spread by
gossip).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Self

from . import codec
from ._base import CRDTBase
from ._errors import InvalidOperationError
from ._values import wire_int, wire_list, wire_str
from .clocks import _check_node

__all__ = ["GCounter", "PNCounter"]


def _check_amount(amount: object) -> int:
    if isinstance(amount, bool) or not isinstance(amount, int) or amount < 1:
        raise InvalidOperationError(f"counter amounts must be positive ints, got {amount!r}")
    return amount


def _max_merge(a: Mapping[str, int], b: Mapping[str, int]) -> dict[str, int]:
    if len(b) > len(a):
        a, b = b, a
    out = dict(a)
    for node, count in b.items():
        if count > out.get(node, 0):
            out[node] = count
    return out


def _counts_to_wire(counts: Mapping[str, int]) -> list[list[Any]]:
    return [[n, c] for n, c in sorted(counts.items())]


def _counts_from_wire(obj: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for pair in wire_list(obj, "counter entries"):
        node, count = wire_list(pair, "counter entry", 2)
        counts[wire_str(node, "node id")] = wire_int(count, "count", minimum=1)
    return counts


@codec.register
@dataclass(frozen=True, slots=True)
class GCounter(CRDTBase):
    """Grow-only counter. ``counts`` maps node id to that node's total (never 0)."""

    _TAG = 2
    counts: Mapping[str, int] = field(default_factory=dict)

    __hash__ = CRDTBase.__hash__

    def value(self) -> int:
        return sum(self.counts.values())

    def increment(self, node_id: str, amount: int = 1) -> GCounter:
        """Delta adding ``amount`` (> 0) at ``node_id``."""
        _check_node(node_id)
        _check_amount(amount)
        return GCounter({node_id: self.counts.get(node_id, 0) + amount})

    def merge(self, other: GCounter) -> GCounter:
        return GCounter(_max_merge(self.counts, other.counts))

    def _to_wire(self) -> Any:
        return _counts_to_wire(self.counts)

    @classmethod
    def _from_wire(cls, obj: Any) -> Self:
        return cls(_counts_from_wire(obj))


@codec.register
@dataclass(frozen=True, slots=True)
class PNCounter(CRDTBase):
    """Counter that can go up and down: two grow-only maps of increments and decrements."""

    _TAG = 3
    incs: Mapping[str, int] = field(default_factory=dict)
    decs: Mapping[str, int] = field(default_factory=dict)

    __hash__ = CRDTBase.__hash__

    def value(self) -> int:
        return sum(self.incs.values()) - sum(self.decs.values())

    def increment(self, node_id: str, amount: int = 1) -> PNCounter:
        """Delta adding ``amount`` (> 0) at ``node_id``."""
        _check_node(node_id)
        _check_amount(amount)
        return PNCounter({node_id: self.incs.get(node_id, 0) + amount}, {})

    def decrement(self, node_id: str, amount: int = 1) -> PNCounter:
        """Delta subtracting ``amount`` (> 0) at ``node_id``."""
        _check_node(node_id)
        _check_amount(amount)
        return PNCounter({}, {node_id: self.decs.get(node_id, 0) + amount})

    def merge(self, other: PNCounter) -> PNCounter:
        return PNCounter(_max_merge(self.incs, other.incs), _max_merge(self.decs, other.decs))

    def _to_wire(self) -> Any:
        return [_counts_to_wire(self.incs), _counts_to_wire(self.decs)]

    @classmethod
    def _from_wire(cls, obj: Any) -> Self:
        incs, decs = wire_list(obj, "pn-counter", 2)
        return cls(_counts_from_wire(incs), _counts_from_wire(decs))
