"""The metrics tier's cluster counters: per-node G-counters spread by gossip.

Every node counts what it serves (``kv_reads``, ``kv_writes``,
``tier_reads``, ``tier_updates``, ``bytes_in``). Once a second, if anything
changed, it broadcasts its own counts on the gossip layer under the slot
``metrics/<node id>``; a newer broadcast from the same node supersedes an
older one still queued. Receivers join each count into a
:class:`crdt.GCounter` per metric (the entry for the sending node only ever
grows, so the join is a per-node max), which makes any node able to answer
cluster-wide totals without asking anyone — eventually consistent, as the
tier table says, with convergence in a few gossip intervals.

These keys live under ``cluster/`` in the metrics tier and are read-only for
clients: ``Tiers.Read(tier="metrics", key="cluster/kv_writes")``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

import msgpack

from crdt import GCounter
from gossip.swim import DeltaEvent
from node.peer.gossip import GossipDriver

log = logging.getLogger(__name__)

PREFIX = "cluster/"
SLOT_PREFIX = "metrics/"
METRICS = ("kv_reads", "kv_writes", "tier_reads", "tier_updates", "bytes_in")


class ClusterMetrics:
    def __init__(self, node_id: str, gossip: GossipDriver, *, interval_s: float = 1.0) -> None:
        self.node_id = node_id
        self._gossip = gossip
        self._interval = interval_s
        self._local: Counter[str] = Counter()
        self._published: dict[str, int] = {}
        self._merged: dict[str, GCounter] = {}
        self._task: asyncio.Task[None] | None = None
        gossip.on_delta(self._on_delta)

    def incr(self, name: str, amount: int = 1) -> None:
        self._local[name] += amount

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="cluster-metrics")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            self.publish()

    def publish(self) -> None:
        counts = {name: int(v) for name, v in self._local.items() if v > 0}
        self._join(self.node_id, counts)
        if counts != self._published:
            self._published = dict(counts)
            self._gossip.broadcast(
                SLOT_PREFIX + self.node_id, msgpack.packb(counts, use_bin_type=True)
            )

    def _on_delta(self, event: DeltaEvent) -> None:
        if not event.key.startswith(SLOT_PREFIX):
            return
        origin = event.key[len(SLOT_PREFIX) :]
        try:
            counts = msgpack.unpackb(event.data, raw=False)
        except (ValueError, msgpack.UnpackException):
            log.warning("undecodable metrics delta from %s", origin)
            return
        if isinstance(counts, dict):
            self._join(origin, {str(k): int(v) for k, v in counts.items() if int(v) > 0})

    def _join(self, origin: str, counts: dict[str, int]) -> None:
        for name, value in counts.items():
            current = self._merged.get(name, GCounter())
            self._merged[name] = current.merge(GCounter({origin: value}))

    def local_counts(self) -> dict[str, int]:
        """What this node itself has served, by metric."""
        return {name: int(v) for name, v in self._local.items()}

    def read(self, key: str) -> GCounter | None:
        """The cluster-wide counter for ``cluster/<metric>`` (None if never seen)."""
        if not key.startswith(PREFIX):
            return None
        return self._merged.get(key[len(PREFIX) :])

    def names(self) -> list[str]:
        return sorted(PREFIX + name for name in self._merged)
