"""The piggyback broadcast queue (SWIM's "infection-style" dissemination).

Every update a node must spread (a membership change or a user :class:`Delta`) is
queued under a *slot key*. Each frame the node sends (Ping, Ack, Gossip) asks the
queue for as many updates as fit in the frame's remaining byte budget:

* least-transmitted first, then newest first, so fresh news overtakes old news;
* an update is retired after ``limit`` transmissions (``λ·ceil(log10(n + 1))``,
  see :meth:`gossip.config.GossipConfig.retransmit_limit`);
* queueing a new update under an existing slot key replaces the old one, whatever its
  transmit count: a newer membership fact about a node, or a newer delta for the same
  key, invalidates the queued older one.

The queue is a plain single-threaded object; it never encodes anything itself, the
caller gives each update's encoded size.
"""

from __future__ import annotations

from dataclasses import dataclass

from gossip.messages import Update

__all__ = ["BroadcastQueue"]


@dataclass(slots=True)
class _Item:
    update: Update
    size: int
    transmits: int
    serial: int


class BroadcastQueue:
    """Updates waiting to be piggybacked, bucketed by transmit count."""

    __slots__ = ("_buckets", "_items", "_serial")

    def __init__(self) -> None:
        self._items: dict[str, _Item] = {}
        # _buckets[t] holds the slot keys sent t times, in insertion order (oldest first).
        self._buckets: list[dict[str, None]] = [{}]
        self._serial = 0

    def __len__(self) -> int:
        return len(self._items)

    def queue(self, key: str, update: Update, size: int) -> None:
        """Queue ``update`` (``size`` encoded bytes) in slot ``key``, replacing any older one."""
        old = self._items.pop(key, None)
        if old is not None:
            del self._buckets[old.transmits][key]
        self._serial += 1
        self._items[key] = _Item(update, size, 0, self._serial)
        self._buckets[0][key] = None

    def pending(self, key: str) -> Update | None:
        """The update queued in slot ``key``, if any."""
        item = self._items.get(key)
        return None if item is None else item.update

    def take(self, budget: int, limit: int, per_item_overhead: int = 0) -> list[Update]:
        """Pop-and-count the updates for one frame.

        Returns updates whose sizes (plus ``per_item_overhead`` each) sum to at most
        ``budget`` bytes, least-sent then newest first. Each returned update's transmit
        count goes up by one; updates reaching ``limit`` are retired. Items already
        sent ``>= limit`` times (``limit`` shrank because n did) are dropped unsent.
        """
        out: list[Update] = []
        moved: list[tuple[str, _Item]] = []
        for t, bucket in enumerate(self._buckets):
            if budget <= per_item_overhead:
                break
            if t >= limit:
                for key in list(bucket):
                    del self._items[key]
                bucket.clear()
                continue
            for key in reversed(bucket):
                item = self._items[key]
                cost = item.size + per_item_overhead
                if cost <= budget:
                    budget -= cost
                    out.append(item.update)
                    moved.append((key, item))
                    if budget <= per_item_overhead:
                        break
        for key, item in reversed(moved):  # oldest first, so newest stays last
            del self._buckets[item.transmits][key]
            item.transmits += 1
            if item.transmits >= limit:
                del self._items[key]
                continue
            while len(self._buckets) <= item.transmits:
                self._buckets.append({})
            self._buckets[item.transmits][key] = None
        return out

    def clear(self) -> None:
        """Forget everything queued."""
        self._items.clear()
        self._buckets = [{}]
