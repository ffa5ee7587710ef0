"""Coalescing of the merges bound for one peer into :class:`MergeMany` messages.

While one ``MergeMany`` is in flight to a peer, the merges submitted meanwhile gather,
and go together in the next one (at most :attr:`MergeBatcher.MAX_ITEMS`), so the number
of messages per write falls as load rises and the peer commits each batch with one
fsync. A lone merge goes at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from node.replication.messages import Merge, MergeMany

__all__ = ["MergeBatcher", "SendBatch"]

# Sends one batch and returns, per item, whether the peer made it durable; an
# unreachable or failing peer is an empty sequence (every item failed).
SendBatch = Callable[[MergeMany], Awaitable[Sequence[bool]]]


class MergeBatcher:
    """One per peer. ``submit`` returns whether the peer made that merge durable."""

    MAX_ITEMS = 256

    def __init__(self, send: SendBatch) -> None:
        self._send = send
        self._queue: list[tuple[Merge, asyncio.Future[bool]]] = []
        self._drainer: asyncio.Task[None] | None = None

    async def submit(self, merge: Merge) -> bool:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bool] = loop.create_future()
        self._queue.append((merge, future))
        if self._drainer is None:
            self._drainer = loop.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue[: self.MAX_ITEMS], self._queue[self.MAX_ITEMS :]
                oks = await self._send(MergeMany(tuple(m for m, _ in batch)))
                for i, (_, future) in enumerate(batch):
                    if not future.done():
                        future.set_result(i < len(oks) and bool(oks[i]))
        finally:
            self._drainer = None
            for _, future in self._queue:
                if not future.done():
                    future.set_result(False)
            self._queue.clear()
