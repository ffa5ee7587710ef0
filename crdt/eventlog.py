"""EventLog: an append-only, HLC-ordered, deduplicated log with convergent compaction.

For the population tier's log subspaces (the spec's ``job_event_log``,
``worker_journal``, ``tadpole_activity_log``; "append_only_event_log").

State: a *compaction watermark* ``W`` (an HLC timestamp, or none) and a map
``entry_id -> LogEntry``. It is the product of two join-semilattices,
normalised:

* the watermark joins by ``max`` (Shapiro et al. 2011's max-register);
* the entries join as a grow-only map keyed by ``entry_id`` (a G-Set of entries
  deduplicated by id, Shapiro et al. 2011 Spec. 11) where, if one id was appended
  twice with different contents (a retried append that got a new HLC), the
  entry with the greatest ``(hlc, node_id, entry_id, payload)`` wins;
* normal form: entries with ``hlc < W`` are dropped.

Dropping below the watermark commutes with joining because the filter is
downward closed in the same order used for deduplication: if the winning copy
of an id is below ``W`` so is every losing copy. Hence join stays commutative,
associative and idempotent, and a compaction (``compact(upto)``, a delta that
only raises ``W``) converges like any other update — retention policies can be
applied independently on each replica. ``append`` below the current watermark
is refused (the entry would be dropped at once).

Entries read back in ``(hlc, node_id, entry_id)`` order: causal order for
events stamped by HLCs (Kulkarni et al. 2014), deterministic across replicas.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Self

from . import codec
from ._base import CRDTBase
from ._errors import CodecError, InvalidOperationError
from ._values import Payload, pack_payload, unpack_payload, wire_list, wire_payload, wire_str
from .clocks import Timestamp, _check_node

__all__ = ["EventLog", "LogEntry"]


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One log entry; ``blob`` is the canonical payload (read it with ``payload()``)."""

    hlc: Timestamp
    node_id: str
    entry_id: str
    blob: bytes

    def payload(self) -> Payload:
        return unpack_payload(self.blob)

    def key(self) -> tuple[Timestamp, str, str, bytes]:
        return (self.hlc, self.node_id, self.entry_id, self.blob)


def _keep(a: LogEntry, b: LogEntry) -> LogEntry:
    return b if b.key() > a.key() else a


@codec.register
@dataclass(frozen=True, slots=True)
class EventLog(CRDTBase):
    """Append-only HLC-ordered log with a convergent "compacted up to" watermark."""

    _TAG = 10
    watermark: Timestamp | None = None
    entries: Mapping[str, LogEntry] = field(default_factory=dict)

    __hash__ = CRDTBase.__hash__

    def value(self) -> tuple[LogEntry, ...]:
        """Entries in ``(hlc, node_id, entry_id)`` order."""
        return tuple(sorted(self.entries.values(), key=LogEntry.key))

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[LogEntry]:
        return iter(self.value())

    def __contains__(self, entry_id: object) -> bool:
        return entry_id in self.entries

    def since(self, after: Timestamp) -> tuple[LogEntry, ...]:
        """Entries with ``hlc > after``, in log order."""
        return tuple(e for e in self.value() if e.hlc > after)

    def append(self, hlc: Timestamp, node_id: str, entry_id: str, payload: Payload) -> EventLog:
        """Delta appending one entry. Appending an existing id again is deduplicated.

        Raises:
            InvalidOperationError: ``hlc`` is below the compaction watermark, or an
                argument has the wrong type.
        """
        if not isinstance(hlc, Timestamp):
            raise InvalidOperationError("hlc must be a crdt.Timestamp")
        if not isinstance(entry_id, str) or not entry_id:
            raise InvalidOperationError("entry_id must be a non-empty string")
        if self.watermark is not None and hlc < self.watermark:
            raise InvalidOperationError(
                f"entry at {hlc} is below the compaction watermark {self.watermark}"
            )
        entry = LogEntry(hlc, _check_node(node_id), entry_id, pack_payload(payload))
        return EventLog(None, {entry_id: entry})

    def compact(self, upto: Timestamp) -> EventLog:
        """Delta dropping every entry with ``hlc < upto`` (raises the watermark)."""
        if not isinstance(upto, Timestamp):
            raise InvalidOperationError("upto must be a crdt.Timestamp")
        return EventLog(upto, {})

    def merge(self, other: EventLog) -> EventLog:
        big, small = (self, other) if len(self.entries) >= len(other.entries) else (other, self)
        marks = [w for w in (self.watermark, other.watermark) if w is not None]
        mark = max(marks) if marks else None
        if mark is not None and big.watermark != mark:
            out = {i: e for i, e in big.entries.items() if e.hlc >= mark}
        else:
            out = dict(big.entries)
        for entry_id, entry in small.entries.items():
            if mark is not None and entry.hlc < mark:
                continue
            mine = out.get(entry_id)
            out[entry_id] = entry if mine is None else _keep(mine, entry)
        return EventLog(mark, out)

    def _to_wire(self) -> Any:
        return [
            [] if self.watermark is None else self.watermark.to_wire(),
            [
                [e.hlc.to_wire(), e.node_id, e.entry_id, e.blob]
                for e in sorted(self.entries.values(), key=LogEntry.key)
            ],
        ]

    @classmethod
    def _from_wire(cls, obj: Any) -> Self:
        mark_wire, entries_wire = wire_list(obj, "event log", 2)
        mark = Timestamp.from_wire(mark_wire) if mark_wire != [] else None
        entries: dict[str, LogEntry] = {}
        for item in wire_list(entries_wire, "event log entries"):
            hlc_wire, node, entry_id, blob = wire_list(item, "event log entry", 4)
            entry = LogEntry(
                Timestamp.from_wire(hlc_wire),
                wire_str(node, "node id"),
                wire_str(entry_id, "entry id"),
                wire_payload(blob),
            )
            if not entry.node_id or not entry.entry_id:
                raise CodecError("event log entry without node id or entry id")
            if mark is not None and entry.hlc < mark:
                raise CodecError("event log entry below the compaction watermark")
            if entry.entry_id in entries:
                raise CodecError(f"event log entry id {entry.entry_id!r} appears twice")
            entries[entry.entry_id] = entry
        return cls(mark, entries)
