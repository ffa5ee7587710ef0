"""Registers: LWWRegister (last writer wins) and MVRegister (multi-value).

LWWRegister — Shapiro et al. 2011 (INRIA RR-7506), Specification 8. The state
is one ``(timestamp, node_id, payload)``; join keeps the greatest by the total
order ``(timestamp, node_id, payload bytes)``. Timestamps are HLC timestamps
(Kulkarni et al. 2014, see :mod:`crdt.clocks`) supplied by the caller; the node
id breaks timestamp ties deterministically (the spec's
"last_writer_wins_with_tie_breaking"), and the payload bytes only matter if a
caller reuses one ``(timestamp, node_id)`` for two different values — a bug,
but one that must still converge. The bottom state has no timestamp.

MVRegister — Shapiro et al. 2011, Specification 10, in the dot-based
delta form of Almeida, Shoker, Baquero (JPDC 2018, §7.3): the state is a causal
context plus ``dot -> payload``. ``assign`` mints a dot and its delta's context
covers every dot currently held, so it overwrites exactly the values it has
observed; concurrent assignments each keep their dot and ``value()`` returns
all of them (the application merges them: the spec's
"application_specific_merge_functions"). Nothing is kept for overwritten
values beyond the compacted causal context.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Self

from . import codec
from ._base import CRDTBase
from ._errors import CodecError, InvalidOperationError
from ._values import Payload, pack_payload, unpack_payload, wire_list, wire_payload, wire_str
from .clocks import CausalContext, Dot, Timestamp, _check_node, wire_dot

__all__ = ["LWWRegister", "MVRegister"]


@codec.register
@dataclass(frozen=True, slots=True)
class LWWRegister(CRDTBase):
    """Last-writer-wins register ordered by ``(timestamp, node_id)``.

    ``timestamp is None`` means "never assigned" (the bottom state).
    """

    _TAG = 6
    timestamp: Timestamp | None = None
    node_id: str = ""
    blob: bytes = b""

    __hash__ = CRDTBase.__hash__

    @property
    def is_set(self) -> bool:
        return self.timestamp is not None

    def value(self) -> Payload:
        """The winning payload (a fresh copy), or None if never assigned."""
        return unpack_payload(self.blob) if self.timestamp is not None else None

    def _key(self) -> tuple[Timestamp, str, bytes]:
        assert self.timestamp is not None
        return (self.timestamp, self.node_id, self.blob)

    def assign(self, value: Payload, timestamp: Timestamp, node_id: str) -> LWWRegister:
        """Delta writing ``value`` at ``timestamp`` by ``node_id``.

        A timestamp not greater than the current one yields a delta that loses the
        join (it is still returned, so the caller sees the write had no effect).
        """
        if not isinstance(timestamp, Timestamp):
            raise InvalidOperationError("timestamp must be a crdt.Timestamp")
        return LWWRegister(timestamp, _check_node(node_id), pack_payload(value))

    def merge(self, other: LWWRegister) -> LWWRegister:
        if other.timestamp is None:
            return self
        if self.timestamp is None:
            return other
        return other if other._key() > self._key() else self

    def _to_wire(self) -> Any:
        if self.timestamp is None:
            return []
        return [self.timestamp.to_wire(), self.node_id, self.blob]

    @classmethod
    def _from_wire(cls, obj: Any) -> Self:
        items = wire_list(obj, "lww register")
        if not items:
            return cls()
        ts, node, blob = wire_list(items, "lww register", 3)
        node_id = wire_str(node, "node id")
        if not node_id:
            raise CodecError("lww register without a node id")
        return cls(Timestamp.from_wire(ts), node_id, wire_payload(blob))


@codec.register
@dataclass(frozen=True, slots=True)
class MVRegister(CRDTBase):
    """Multi-value register: keeps every concurrently assigned value."""

    _TAG = 7
    context: CausalContext = field(default_factory=CausalContext)
    entries: Mapping[Dot, bytes] = field(default_factory=dict)

    __hash__ = CRDTBase.__hash__

    def value(self) -> tuple[Payload, ...]:
        """The concurrent values (fresh copies), in canonical (encoded-bytes) order."""
        return tuple(unpack_payload(b) for b in sorted(self.entries.values()))

    def assign(self, node_id: str, value: Payload) -> MVRegister:
        """Delta overwriting every value this replica has observed."""
        blob = pack_payload(value)
        dot = self.context.next_dot(node_id)
        return MVRegister(CausalContext.of([dot, *self.entries]), {dot: blob})

    def merge(self, other: MVRegister) -> MVRegister:
        ctx_a, ctx_b = self.context, other.context
        entries: dict[Dot, bytes] = {}
        for dot, blob in self.entries.items():
            if dot in other.entries or dot not in ctx_b:
                entries[dot] = blob
        for dot, blob in other.entries.items():
            if dot not in self.entries and dot not in ctx_a:
                entries[dot] = blob
        return MVRegister(ctx_a.union(ctx_b), entries)

    def _to_wire(self) -> Any:
        return [
            self.context.to_wire(),
            [[[n, c], self.entries[(n, c)]] for n, c in sorted(self.entries)],
        ]

    @classmethod
    def _from_wire(cls, obj: Any) -> Self:
        ctx_wire, entries_wire = wire_list(obj, "mv register", 2)
        ctx = CausalContext.from_wire(ctx_wire)
        entries: dict[Dot, bytes] = {}
        for item in wire_list(entries_wire, "mv register entries"):
            dot_wire, blob = wire_list(item, "mv register entry", 2)
            dot = wire_dot(dot_wire)
            if dot not in ctx:
                raise CodecError("mv register dot outside its causal context")
            entries[dot] = wire_payload(blob)
        return cls(ctx, entries)
