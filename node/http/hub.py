"""One watch of the system tier per node, shared by every HTTP subscriber.

A thousand SSE or WebSocket subscribers must not mean a thousand backend watches,
each woken, filtered and JSON-encoded on every write: :class:`Hub` runs a single
watch over every key and keeps the newest revisions in a ring bounded by count and
bytes; each :class:`Subscription` is only a cursor into it plus a filter. A batch is
encoded once per distinct filter, however many subscribers share it.

A subscription whose cursor is older than the ring (it started in the past, fell
behind, or the hub restarted) reads the backend's history page by page until it
reaches the ring; if that history is gone too, :meth:`Subscription.next` raises the
backend's ``CompactedError``. So every subscriber sees every change after its
cursor once, in revision order, and the memory a subscriber costs is its cursor and
at most one history page.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from dataclasses import dataclass, field

from consensus.backend import SystemBackend
from consensus.statemachine import Event
from node.tiers.system_json import event_json

__all__ = ["HISTORY_PAGE", "RING_BATCHES", "RING_BYTES", "Hub", "Subscription"]

log = logging.getLogger(__name__)

RING_BATCHES = 4096  # revisions kept in memory for subscribers, at most...
RING_BYTES = 16 << 20  # ...and at most this many bytes of keys and values
HISTORY_PAGE = 256  # events a lagging subscriber reads from the backend at a time

Selector = tuple[str, bool]  # (key or prefix, is a prefix)


def matches(selector: Selector, key: str) -> bool:
    wanted, prefix = selector
    return key.startswith(wanted) if prefix else key == wanted


@dataclass(eq=False)
class _Batch:
    revision: int
    events: list[Event]
    size: int
    encoded: dict[Selector, str | None] = field(default_factory=dict)

    def json_for(self, selector: Selector) -> str | None:
        """The change message for subscribers of ``selector`` (None: nothing matches)."""
        if selector not in self.encoded:
            self.encoded[selector] = encode(
                self.revision, [e for e in self.events if matches(selector, e.kv.key)]
            )
        return self.encoded[selector]


def encode(revision: int, events: list[Event]) -> str | None:
    if not events:
        return None
    return json.dumps({"revision": revision, "events": [event_json(e) for e in events]})


class Hub:
    def __init__(
        self,
        system: SystemBackend,
        timeout_s: float,
        *,
        max_batches: int = RING_BATCHES,
        max_bytes: int = RING_BYTES,
    ) -> None:
        self.system = system
        self.timeout_s = timeout_s
        self._max_batches = max_batches
        self._max_bytes = max_bytes
        self._ring: deque[_Batch] = deque()
        self._bytes = 0
        self.floor = -1  # the ring holds every revision in (floor, head]
        self.head = -1
        self._task: asyncio.Task[None] | None = None
        self._starting = asyncio.Lock()
        self._wake: asyncio.Future[None] | None = None

    async def ensure_running(self) -> None:
        if self._task is not None and not self._task.done():
            return
        async with self._starting:
            if self._task is not None and not self._task.done():
                return
            _, revision = await self.system.get("", linearizable=True, timeout=self.timeout_s)
            self._ring.clear()
            self._bytes = 0
            self.floor = self.head = revision
            self._task = asyncio.create_task(self._pump(revision + 1))

    async def _pump(self, start: int) -> None:
        try:
            async for events in self.system.watch("", prefix=True, start_revision=start):
                size = sum(len(e.kv.key) + len(e.kv.value) + 64 for e in events)
                batch = _Batch(events[-1].kv.mod_revision, events, size)
                self._ring.append(batch)
                self._bytes += size
                self.head = batch.revision
                while len(self._ring) > 1 and (
                    len(self._ring) > self._max_batches or self._bytes > self._max_bytes
                ):
                    dropped = self._ring.popleft()
                    self._bytes -= dropped.size
                    self.floor = dropped.revision
                self._notify()
        except asyncio.CancelledError:
            raise
        except Exception:
            # Subscribers fall back to the backend's history; the next one restarts us.
            log.exception("the shared system-tier watch failed; restarting on demand")
            self._notify()

    def _notify(self) -> None:
        wake, self._wake = self._wake, None
        if wake is not None and not wake.done():
            wake.set_result(None)

    async def wait(self, timeout: float) -> bool:
        """Until the next batch arrives (True) or ``timeout`` passes (False)."""
        if self._wake is None:
            self._wake = asyncio.get_running_loop().create_future()
        try:
            # Shielded: the future is shared, and one waiter timing out must not
            # cancel it under the others.
            async with asyncio.timeout(timeout):
                await asyncio.shield(self._wake)
        except TimeoutError:
            return False
        return True

    def after(self, cursor: int) -> list[_Batch]:
        """The ring's batches with revision >= ``cursor``, oldest first."""
        found = []
        for batch in reversed(self._ring):
            if batch.revision < cursor:
                break
            found.append(batch)
        found.reverse()
        return found

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task


class Subscription:
    """The changes to ``key`` (or under it, ``prefix``) after revision ``after``."""

    def __init__(self, hub: Hub, key: str, prefix: bool, after: int) -> None:
        self._hub = hub
        self._selector: Selector = (key, prefix)
        self.cursor = after + 1  # the next revision to look at
        self._pending: deque[tuple[int, str]] = deque()

    async def next(self, timeout: float) -> tuple[int, str] | None:
        """``(revision, change message)`` of the next revision with a matching change,
        or None when none came within ``timeout``. Raises CompactedError when the
        cursor is older than every history kept."""
        hub = self._hub
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            if self._pending:
                return self._pending.popleft()
            await hub.ensure_running()
            if self.cursor <= hub.floor:
                await self._catch_up()
                continue
            for batch in hub.after(self.cursor):
                self.cursor = batch.revision + 1
                message = batch.json_for(self._selector)
                if message is not None:
                    return batch.revision, message
            self.cursor = max(self.cursor, hub.head + 1)
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0 or not await hub.wait(remaining):
                return None

    async def _catch_up(self) -> None:
        """One page of the backend's history from the cursor (older than the ring)."""
        key, prefix = self._selector
        events, through, _ = await self._hub.system.history(
            key,
            prefix=prefix,
            start_revision=self.cursor,
            limit=HISTORY_PAGE,
            timeout=self._hub.timeout_s,
        )
        by_revision: dict[int, list[Event]] = {}
        for event in events:
            by_revision.setdefault(event.kv.mod_revision, []).append(event)
        for revision, batch in by_revision.items():
            message = encode(revision, batch)
            if message is not None:
                self._pending.append((revision, message))
        self.cursor = max(self.cursor, through + 1)
