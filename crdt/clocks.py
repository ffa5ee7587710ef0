"""Clocks: hybrid logical clocks, vector clocks, dots and causal contexts.

Hybrid logical clock (HLC)
    Kulkarni, Demirbas, Madappa, Avva, Leone, "Logical Physical Clocks and
    Consistent Snapshots in Globally Distributed Databases", OPODIS 2014.
    A timestamp is ``(wall_ns, logical)``: ``wall_ns`` tracks the largest
    physical time seen (so it stays within the clock skew of NTP-disciplined
    wall clocks) and ``logical`` breaks ties, so ``e hb f => ts(e) < ts(f)``.
    :class:`HybridLogicalClock` never reads a clock: callers pass
    ``physical_ns`` in (sans-I/O, replayable). ``update`` refuses a remote
    timestamp whose wall part is more than ``max_drift_ns`` ahead of local
    physical time (:class:`~crdt.ClockDriftError`), so one node with a broken
    clock cannot drag every HLC in the cluster into the future. Last-writer-wins
    orders writes by ``(timestamp, node_id)``: a total order, deterministic on
    every replica (the spec's "last_writer_wins_with_tie_breaking").

Vector clock
    Fidge 1988 / Mattern 1989: a map ``node -> count``; ``compare`` tells
    before / after / equal / concurrent; ``merge`` is the pointwise max.

Dots and causal contexts
    A *dot* ``(node_id, counter)`` names one event uniquely. A
    :class:`CausalContext` is a set of dots kept compact as a version vector
    (every dot ``(n, 1..vv[n])``) plus a *dot cloud* of the dots not yet
    contiguous, as in Almeida, Shoker, Baquero, "Delta State Replicated Data
    Types" (JPDC 2018, §5) and the "compact causal context" of Bieniusa et al.,
    "An Optimized Conflict-free Replicated Set" (arXiv:1210.3368, 2012). After
    every union the cloud is folded into the vector, so a context's size is
    bounded by the number of nodes plus the dots still in flight — this is what
    keeps the OR-set free of tombstone growth. The compacted form is unique for a
    given set of dots, hence canonical for encoding.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Self, TypeAlias

from . import codec
from ._base import CRDTBase
from ._errors import ClockDriftError, CodecError, InvalidOperationError
from ._values import wire_int, wire_list, wire_str

__all__ = [
    "CausalContext",
    "Dot",
    "HybridLogicalClock",
    "Ordering",
    "Timestamp",
    "VectorClock",
]

Dot: TypeAlias = tuple[str, int]
"""``(node_id, counter)``, counter >= 1: the unique name of one event."""


# --- hybrid logical clock ---------------------------------------------------------------


@dataclass(frozen=True, slots=True, order=True)
class Timestamp:
    """An HLC timestamp; totally ordered by ``(wall_ns, logical)``."""

    wall_ns: int
    logical: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.wall_ns, bool) or not isinstance(self.wall_ns, int):
            raise InvalidOperationError("Timestamp.wall_ns must be an int")
        if isinstance(self.logical, bool) or not isinstance(self.logical, int):
            raise InvalidOperationError("Timestamp.logical must be an int")
        if self.wall_ns < 0 or self.logical < 0:
            raise InvalidOperationError(f"negative timestamp {self.wall_ns}.{self.logical}")

    def to_wire(self) -> list[int]:
        return [self.wall_ns, self.logical]

    @classmethod
    def from_wire(cls, obj: Any) -> Timestamp:
        wall, logical = wire_list(obj, "timestamp", 2)
        return cls(wire_int(wall, "wall_ns", minimum=0), wire_int(logical, "logical", minimum=0))


DEFAULT_MAX_DRIFT_NS = 500_000_000
"""Default drift bound, 500 ms: generous for NTP-disciplined LAN clocks (typically
< 10 ms apart); too small rejects honest peers during NTP steps, too large lets a
runaway clock push LWW winners far into the future."""


class HybridLogicalClock:
    """A node's HLC (Kulkarni et al. 2014, Fig. 5). Mutable; not thread-safe.

    The caller owns time: every call takes ``physical_ns`` (e.g. from
    ``time.time_ns()`` in the driver, or a simulated clock in tests).
    """

    __slots__ = ("_last", "max_drift_ns")

    def __init__(
        self, *, max_drift_ns: int = DEFAULT_MAX_DRIFT_NS, last: Timestamp | None = None
    ) -> None:
        if max_drift_ns < 0:
            raise InvalidOperationError("max_drift_ns must be >= 0")
        self.max_drift_ns = max_drift_ns
        self._last = last if last is not None else Timestamp(0, 0)

    @property
    def last(self) -> Timestamp:
        """The most recent timestamp issued or observed (persist it across restarts)."""
        return self._last

    def now(self, physical_ns: int) -> Timestamp:
        """Timestamp for a local or send event; strictly greater than every earlier one."""
        last = self._last
        if physical_ns > last.wall_ns:
            ts = Timestamp(physical_ns, 0)
        else:
            ts = Timestamp(last.wall_ns, last.logical + 1)
        self._last = ts
        return ts

    def update(self, remote: Timestamp, physical_ns: int) -> Timestamp:
        """Timestamp for receiving ``remote``; greater than both ``remote`` and ``last``.

        Raises:
            ClockDriftError: ``remote.wall_ns - physical_ns > max_drift_ns``; the
                clock is left unchanged.
        """
        if remote.wall_ns - physical_ns > self.max_drift_ns:
            raise ClockDriftError(remote.wall_ns, physical_ns, self.max_drift_ns)
        last = self._last
        wall = max(last.wall_ns, remote.wall_ns, physical_ns)
        if wall == last.wall_ns and wall == remote.wall_ns:
            logical = max(last.logical, remote.logical) + 1
        elif wall == last.wall_ns:
            logical = last.logical + 1
        elif wall == remote.wall_ns:
            logical = remote.logical + 1
        else:
            logical = 0
        ts = Timestamp(wall, logical)
        self._last = ts
        return ts


# --- vector clock ------------------------------------------------------------------------


class Ordering(enum.Enum):
    """Result of comparing two vector clocks."""

    BEFORE = "before"
    AFTER = "after"
    EQUAL = "equal"
    CONCURRENT = "concurrent"


def _check_node(node_id: object) -> str:
    if not isinstance(node_id, str) or not node_id:
        raise InvalidOperationError("node ids must be non-empty strings")
    return node_id


@codec.register
@dataclass(frozen=True, slots=True)
class VectorClock(CRDTBase):
    """A vector clock ``node_id -> count`` (zero entries are never stored).

    ``increment`` returns the *advanced clock* (clock semantics), not a delta.
    """

    _TAG = 1
    entries: Mapping[str, int] = field(default_factory=dict)

    __hash__ = CRDTBase.__hash__

    def value(self) -> dict[str, int]:
        return dict(self.entries)

    def get(self, node_id: str) -> int:
        return self.entries.get(node_id, 0)

    def increment(self, node_id: str) -> VectorClock:
        _check_node(node_id)
        entries = dict(self.entries)
        entries[node_id] = entries.get(node_id, 0) + 1
        return VectorClock(entries)

    def merge(self, other: VectorClock) -> VectorClock:
        if len(other.entries) > len(self.entries):
            self, other = other, self
        entries = dict(self.entries)
        for node, count in other.entries.items():
            if count > entries.get(node, 0):
                entries[node] = count
        return VectorClock(entries)

    def compare(self, other: VectorClock) -> Ordering:
        less = greater = False
        for node in self.entries.keys() | other.entries.keys():
            a, b = self.get(node), other.get(node)
            if a < b:
                less = True
            elif a > b:
                greater = True
        if less and greater:
            return Ordering.CONCURRENT
        if less:
            return Ordering.BEFORE
        if greater:
            return Ordering.AFTER
        return Ordering.EQUAL

    def _to_wire(self) -> Any:
        return [[n, c] for n, c in sorted(self.entries.items())]

    @classmethod
    def _from_wire(cls, obj: Any) -> Self:
        entries: dict[str, int] = {}
        for pair in wire_list(obj, "vector clock"):
            node, count = wire_list(pair, "vector clock entry", 2)
            entries[wire_str(node, "node id")] = wire_int(count, "count", minimum=1)
        return cls(entries)


# --- causal context ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CausalContext:
    """A set of dots, stored compactly as version vector + dot cloud (always compacted).

    Not a standalone codec type: it is embedded in the states that use it.
    """

    vv: Mapping[str, int] = field(default_factory=dict)
    cloud: frozenset[Dot] = frozenset()

    @classmethod
    def of(cls, dots: Iterable[Dot]) -> CausalContext:
        """The compacted context holding exactly ``dots``."""
        return _compact({}, set(dots))

    def __contains__(self, dot: Dot) -> bool:
        node, counter = dot
        return counter <= self.vv.get(node, 0) or dot in self.cloud

    def max_counter(self, node_id: str) -> int:
        """The largest counter of ``node_id`` in this context (0 if none)."""
        top = self.vv.get(node_id, 0)
        for node, counter in self.cloud:
            if node == node_id and counter > top:
                top = counter
        return top

    def next_dot(self, node_id: str) -> Dot:
        """A dot for a new event at ``node_id`` not yet in this context."""
        return (_check_node(node_id), self.max_counter(node_id) + 1)

    def dot_count(self) -> int:
        """How many dots the context holds."""
        return sum(self.vv.values()) + len(self.cloud)

    def dots(self) -> Iterator[Dot]:
        """Every dot (expands the version vector: use only on small contexts)."""
        for node, top in self.vv.items():
            for counter in range(1, top + 1):
                yield (node, counter)
        yield from self.cloud

    def union(self, other: CausalContext) -> CausalContext:
        if not other.vv and not other.cloud:
            return self
        if not self.vv and not self.cloud:
            return other
        vv = dict(self.vv)
        for node, top in other.vv.items():
            if top > vv.get(node, 0):
                vv[node] = top
        return _compact(vv, set(self.cloud) | other.cloud)

    def add(self, dots: Iterable[Dot]) -> CausalContext:
        return _compact(dict(self.vv), set(self.cloud).union(dots))

    def to_wire(self) -> list[Any]:
        return [
            [[n, c] for n, c in sorted(self.vv.items())],
            [[n, c] for n, c in sorted(self.cloud)],
        ]

    @classmethod
    def from_wire(cls, obj: Any) -> CausalContext:
        vv_wire, cloud_wire = wire_list(obj, "causal context", 2)
        vv: dict[str, int] = {}
        for pair in wire_list(vv_wire, "version vector"):
            node, top = wire_list(pair, "version vector entry", 2)
            vv[wire_str(node, "node id")] = wire_int(top, "counter", minimum=1)
        cloud = {wire_dot(d) for d in wire_list(cloud_wire, "dot cloud")}
        ctx = _compact(dict(vv), set(cloud))
        if ctx.vv != vv or ctx.cloud != cloud:
            raise CodecError("causal context is not compacted")
        return ctx


def wire_dot(obj: Any) -> Dot:
    node, counter = wire_list(obj, "dot", 2)
    return (wire_str(node, "dot node id"), wire_int(counter, "dot counter", minimum=1))


def _compact(vv: dict[str, int], cloud: set[Dot]) -> CausalContext:
    """Fold cloud dots that extend the version vector into it; drop covered ones."""
    if cloud:
        for dot in sorted(cloud):
            node, counter = dot
            top = vv.get(node, 0)
            if counter <= top:
                cloud.discard(dot)
            elif counter == top + 1:
                vv[node] = counter
                cloud.discard(dot)
    return CausalContext(vv, frozenset(cloud))
