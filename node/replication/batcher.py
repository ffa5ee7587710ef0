"""Coalescing of the messages bound for one peer: merges into :class:`MergeMany`,
forwarded updates into :class:`ForwardMany`.

While one such message is in flight to a peer, what is submitted meanwhile gathers,
and goes together in the next one (at most ``MAX_ITEMS``, and for merges ``MAX_BYTES``
of values), so the number of messages
per write falls as load rises and the peer commits each batch with one fsync. A lone
submission goes at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Generic, TypeVar

from node.errors import Unavailable
from node.replication.errors import ForwardOutcomeUnknown
from node.replication.messages import ForwardGroup, Merge, MergeMany

__all__ = ["ForwardBatcher", "MergeBatcher", "SendBatch", "SendForwards"]

log = logging.getLogger(__name__)

T = TypeVar("T")

# Sends one batch and returns, per item, whether the peer made it durable; an
# unreachable or failing peer is an empty sequence (every item failed).
SendBatch = Callable[[MergeMany], Awaitable[Sequence[bool]]]

# Sends groups in one ForwardMany under a deadline (0: none) and returns one outcome per
# group, in order: its result, or the exception that failed it.
SendForwards = Callable[[tuple[ForwardGroup, ...], int], Awaitable[Sequence[object]]]


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


class _PeerQueue(Generic[T]):
    """What both queues share: items wait in ``_queue``; one drain task at a time
    hands them to :meth:`_deliver`, ``MAX_ITEMS`` at once, until none is left. When it
    stops early (a delivery raised; the node shuts down and cancels it), the items in
    flight and those never sent are :meth:`_abandon`-ed, so no caller waits forever."""

    MAX_ITEMS = 256
    # And at most this many bytes of values in one message (a peer takes messages of at
    # most 64 MiB; values go up to max_value_bytes each); an item larger than this
    # goes alone.
    MAX_BYTES = 8 << 20
    WHAT = "batch"  # for the log

    def __init__(self) -> None:
        self._queue: list[T] = []
        self._drainer: asyncio.Task[None] | None = None

    def _enqueue(self, items: Iterable[T]) -> None:
        self._queue.extend(items)
        if self._drainer is None:
            self._drainer = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        batch: list[T] = []
        try:
            while self._queue:
                n = self._fits()
                batch, self._queue = self._queue[:n], self._queue[n:]
                await self._deliver(batch)
                batch = []
        except Exception:  # a bug below the transport: nothing hangs
            log.exception("%s of %d failed", self.WHAT, len(batch))
        finally:
            self._drainer = None
            unsent, self._queue = self._queue, []
            self._abandon(batch, unsent)

    def _fits(self) -> int:
        """How many of the queued items go in the next message: at most ``MAX_ITEMS``
        and ``MAX_BYTES``, and at least one."""
        total = 0
        for n, item in enumerate(self._queue[: self.MAX_ITEMS]):
            total += self._size(item)
            if n and total > self.MAX_BYTES:
                return n
        return min(len(self._queue), self.MAX_ITEMS)

    def _size(self, item: T) -> int:
        """An item's bytes in a message, as far as the bound counts them."""
        return 0

    async def _deliver(self, batch: list[T]) -> None:
        raise NotImplementedError

    def _abandon(self, sent: list[T], unsent: list[T]) -> None:
        raise NotImplementedError


class MergeBatcher(_PeerQueue[tuple[Merge, _Waiter, int]]):
    """One per peer. ``submit`` returns whether the peer made that merge durable."""

    WHAT = "merge batch"

    def __init__(self, send: SendBatch) -> None:
        super().__init__()
        self._send = send

    async def submit(self, merge: Merge) -> bool:
        return (await self.submit_many((merge,)))[0]

    async def submit_many(self, merges: Sequence[Merge]) -> list[bool]:
        """Whether the peer made each of ``merges`` durable. They join the queue
        together, so the merges of concurrent writes to this peer share messages."""
        if not merges:
            return []
        waiter = _Waiter(asyncio.get_running_loop().create_future(), len(merges))
        self._enqueue((m, waiter, i) for i, m in enumerate(merges))
        return await waiter.future

    def _size(self, item: tuple[Merge, _Waiter, int]) -> int:
        return len(item[0].state)

    async def _deliver(self, batch: list[tuple[Merge, _Waiter, int]]) -> None:
        oks = await self._send(MergeMany(tuple(m for m, _, _ in batch)))
        for i, (_, waiter, position) in enumerate(batch):
            waiter.settle(position, i < len(oks) and bool(oks[i]))

    def _abandon(
        self, sent: list[tuple[Merge, _Waiter, int]], unsent: list[tuple[Merge, _Waiter, int]]
    ) -> None:
        for _, waiter, position in sent + unsent:  # not known durable there: hinted
            waiter.settle(position, False)


_Forward = tuple[ForwardGroup, int, "asyncio.Future[object]"]


class ForwardBatcher(_PeerQueue[_Forward]):
    """One per owner: single updates forwarded to the owner that coordinates them,
    sent together as :class:`ForwardMany` while one is in flight. ``submit`` returns
    the group's outcome (its result, or the exception that failed it).

    Each group keeps the deadline of the write it serves (``due``, 0: none): a message
    carries the earliest of its groups', so each is applied by its own deadline or not
    at all; groups without one go in a message without one, beside it."""

    WHAT = "forward batch"

    def __init__(self, send: SendForwards) -> None:
        super().__init__()
        self._send = send

    async def submit(self, group: ForwardGroup, due: int) -> object:
        future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        self._enqueue(((group, due, future),))
        return await future

    async def _deliver(self, batch: list[_Forward]) -> None:
        # A caller that gave up while its update waited here sends nothing: it was
        # never sent, so it is not applied (as a lone forward not yet sent).
        batch = [item for item in batch if not item[2].cancelled()]
        fenced = [item for item in batch if item[1]]
        loose = [item for item in batch if not item[1]]
        await asyncio.gather(*(self._send_part(part) for part in (fenced, loose) if part))

    async def _send_part(self, part: list[_Forward]) -> None:
        due = min((d for _, d, _ in part), default=0)
        try:
            outcomes: Sequence[object] = await self._send(tuple(g for g, _, _ in part), due)
            if len(outcomes) != len(part):
                raise RuntimeError(f"{len(outcomes)} outcomes for {len(part)} forwarded groups")
        except Exception as exc:  # a bug below the transport: each caller gets it
            log.exception("%s of %d failed", self.WHAT, len(part))
            outcomes = [exc] * len(part)
        for (_, _, future), outcome in zip(part, outcomes, strict=True):
            if not future.done():
                future.set_result(outcome)

    def _abandon(self, sent: list[_Forward], unsent: list[_Forward]) -> None:
        for items, outcome in (
            (sent, ForwardOutcomeUnknown("the forward queue stopped with this update in flight")),
            (unsent, Unavailable("the forward queue stopped; nothing applied")),
        ):
            for _, _, future in items:
                if not future.done():
                    future.set_result(outcome)
