"""Population event logs with retention: the spec's six subspaces.

A population key's event log is stored as a :class:`PopulationLog`: the
retention-aware :class:`node.tiers.retention.RetainedLog` (detailed entries plus
per-day summaries, a join-semilattice whose compaction is convergent — see
that module) registered with the crdt codec, so replication, hints, read
repair and Merkle anti-entropy treat it like any other CRDT.

A background job (:meth:`node.replication.driver.Replication.compact_population`)
applies each key's policy once in a while: entries older than the detailed
window fold into day summaries, summaries expire after their window, and for
archival policies the entries leaving the detailed log are first written to
gzip'd JSON-lines archives in ``<data dir>/archive`` (durable before the
compacted state is stored).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Self

from crdt import CodecError, CRDTBase, Timestamp
from crdt.codec import register
from node.tiers import retention
from node.tiers.retention import RetainedLog

POPULATION_LOG_TAG = 65  # application tags start at 64 (node/tiers/mesh.py uses 64)


@register
@dataclass(frozen=True, slots=True)
class PopulationLog(CRDTBase):
    """A population event log under a retention policy (see module docstring)."""

    _TAG = POPULATION_LOG_TAG
    log: RetainedLog = field(default_factory=RetainedLog)

    __hash__ = CRDTBase.__hash__

    def value(self) -> dict[str, Any]:
        return {
            "entries": [
                {
                    "hlc": [e.hlc.wall_ns, e.hlc.logical],
                    "node": e.node_id,
                    "entry_id": e.entry_id,
                    "payload": e.payload(),
                }
                for e in self.log.entries()
            ],
            "summaries": [
                {
                    "day": s.date.isoformat(),
                    "count": s.count,
                    "first_hlc": [s.first.wall_ns, s.first.logical],
                    "last_hlc": [s.last.wall_ns, s.last.logical],
                    "labels": dict(s.labels),
                }
                for s in self.log.summaries()
            ],
        }

    def merge(self, other: PopulationLog) -> PopulationLog:
        return PopulationLog(self.log.merge(other.log))

    def append(self, hlc: Timestamp, node_id: str, entry_id: str, payload: Any) -> PopulationLog:
        return PopulationLog(self.log.append(hlc, node_id, entry_id, payload))

    def _to_wire(self) -> Any:
        return self.log.to_bytes()

    @classmethod
    def _from_wire(cls, obj: Any) -> Self:
        if not isinstance(obj, bytes):
            raise CodecError("population log body must be bytes")
        try:
            return cls(RetainedLog.from_bytes(obj))
        except ValueError as exc:
            raise CodecError(f"population log: {exc}") from exc


def compact(state: PopulationLog, key: str, now_ns: int) -> retention.Step:
    """Apply ``key``'s subspace policy at ``now_ns`` (see node/tiers/retention.py)."""
    return retention.compact(state.log, retention.policy_for_key(key), now_ns)
