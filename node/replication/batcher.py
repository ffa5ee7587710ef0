"""Coalescing of the merges bound for one peer into :class:`MergeMany` messages.

While one ``MergeMany`` is in flight to a peer, the merges submitted meanwhile gather,
and go together in the next one (at most :attr:`MergeBatcher.MAX_ITEMS`), so the number
of messages per write falls as load rises and the peer commits each batch with one
fsync. A lone merge goes at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

from node.replication.messages import Merge, MergeMany

__all__ = ["MergeBatcher", "SendBatch"]

log = logging.getLogger(__name__)

# Sends one batch and returns, per item, whether the peer made it durable; an
# unreachable or failing peer is an empty sequence (every item failed).
SendBatch = Callable[[MergeMany], Awaitable[Sequence[bool]]]


class _Waiter:
    """The merges of one :meth:`MergeBatcher.submit_many` call: their outcomes, filled in
    as the batches carrying them are answered, and the future resolved with the last."""

    __slots__ = ("future", "left", "oks")

    def __init__(self, future: asyncio.Future[list[bool]], count: int) -> None:
        self.future = future
        self.oks = [False] * count
        self.left = count

    def settle(self, position: int, ok: bool) -> None:
        self.oks[position] = ok
        self.left -= 1
        if self.left == 0 and not self.future.done():
            self.future.set_result(self.oks)


class MergeBatcher:
    """One per peer. ``submit`` returns whether the peer made that merge durable."""

    MAX_ITEMS = 256

    def __init__(self, send: SendBatch) -> None:
        self._send = send
        self._queue: list[tuple[Merge, _Waiter, int]] = []
        self._drainer: asyncio.Task[None] | None = None

    async def submit(self, merge: Merge) -> bool:
        return (await self.submit_many((merge,)))[0]

    async def submit_many(self, merges: Sequence[Merge]) -> list[bool]:
        """Whether the peer made each of ``merges`` durable. They join the queue
        together, so the merges of concurrent writes to this peer share messages."""
        if not merges:
            return []
        loop = asyncio.get_running_loop()
        waiter = _Waiter(loop.create_future(), len(merges))
        self._queue.extend((m, waiter, i) for i, m in enumerate(merges))
        if self._drainer is None:
            self._drainer = loop.create_task(self._drain())
        return await waiter.future

    async def _drain(self) -> None:
        batch: list[tuple[Merge, _Waiter, int]] = []
        try:
            while self._queue:
                batch, self._queue = self._queue[: self.MAX_ITEMS], self._queue[self.MAX_ITEMS :]
                oks = await self._send(MergeMany(tuple(m for m, _, _ in batch)))
                for i, (_, waiter, position) in enumerate(batch):
                    waiter.settle(position, i < len(oks) and bool(oks[i]))
                batch = []
        except Exception:  # a bug below the transport: not durable there, nothing hangs
            log.exception("merge batch of %d failed", len(batch))
        finally:
            self._drainer = None
            for _, waiter, position in batch + self._queue:
                waiter.settle(position, False)
            self._queue.clear()
