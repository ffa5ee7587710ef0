"""The system tier's operations, timed where both faces (gRPC and HTTP) reach it.

:class:`TimedSystem` wraps the node's :class:`consensus.backend.SystemBackend` and times
each read (``get``, ``range``, ``history``), write (a txn with no compares and one op:
what ``put`` and ``delete`` send) and transaction (any other txn) into
``tadpole_operation_duration_seconds{tier="system", op=...}``; the CRDT tiers' driver
keeps the same histograms for its own tiers (``Replication.op_seconds``). So the spec's
reads, writes and transactions per second are ``rate(..._count)`` and its p95/p99 are
``histogram_quantile`` over one family, whichever face the client used. A call that
fails is timed too: its caller waited as long.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence

from consensus.backend import BackendInfo, RangeResult, SystemBackend
from consensus.durable import Histogram
from consensus.statemachine import CommandResult, Event, KeyValue, SystemStateMachine, Txn
from node.observe.latency import BUCKETS

__all__ = ["OPS", "TimedSystem", "op_kind"]

OPS = ("read", "write", "txn")


def op_kind(txn: Txn) -> str:
    """``write`` for a plain put or delete, ``txn`` for anything with compares, a
    failure branch or several operations."""
    if txn.compares or txn.failure or len(txn.success) != 1:
        return "txn"
    return "write"


class TimedSystem:
    """A :class:`SystemBackend` that times the calls it passes on to ``inner``."""

    def __init__(self, inner: SystemBackend) -> None:
        self.inner = inner
        self.name = inner.name
        # op -> durations (event loop only); every op from the start, so each series
        # exists (at 0) before its first call and rate() has a baseline.
        self.seconds: dict[str, Histogram] = {op: Histogram(BUCKETS) for op in OPS}

    def _observe(self, op: str, started: float) -> None:
        self.seconds[op].observe(time.perf_counter() - started)

    async def start(self) -> None:
        await self.inner.start()

    async def stop(self) -> None:
        await self.inner.stop()

    async def txn(self, txn: Txn, timeout: float) -> CommandResult:
        started = time.perf_counter()
        try:
            return await self.inner.txn(txn, timeout)
        finally:
            self._observe(op_kind(txn), started)

    async def get(
        self, key: str, *, linearizable: bool, timeout: float
    ) -> tuple[KeyValue | None, int]:
        started = time.perf_counter()
        try:
            return await self.inner.get(key, linearizable=linearizable, timeout=timeout)
        finally:
            self._observe("read", started)

    async def get_many(
        self, keys: Sequence[str], *, linearizable: bool, timeout: float
    ) -> list[tuple[KeyValue | None, int] | BaseException]:
        started = time.perf_counter()
        try:
            return await self.inner.get_many(keys, linearizable=linearizable, timeout=timeout)
        finally:
            for _ in keys:  # reads per second count keys, whichever call carried them
                self._observe("read", started)

    async def range(
        self,
        prefix: str,
        *,
        limit: int,
        start_after: str,
        linearizable: bool,
        timeout: float,
    ) -> RangeResult:
        started = time.perf_counter()
        try:
            return await self.inner.range(
                prefix,
                limit=limit,
                start_after=start_after,
                linearizable=linearizable,
                timeout=timeout,
            )
        finally:
            self._observe("read", started)

    def watch(self, key: str, *, prefix: bool, start_revision: int) -> AsyncIterator[list[Event]]:
        return self.inner.watch(key, prefix=prefix, start_revision=start_revision)

    async def history(
        self, key: str, *, prefix: bool, start_revision: int, limit: int, timeout: float
    ) -> tuple[list[Event], int, bool]:
        started = time.perf_counter()
        try:
            return await self.inner.history(
                key, prefix=prefix, start_revision=start_revision, limit=limit, timeout=timeout
            )
        finally:
            self._observe("read", started)

    def info(self) -> BackendInfo:
        return self.inner.info()

    async def snapshot(self, timeout: float) -> SystemStateMachine:
        return await self.inner.snapshot(timeout)

    async def transfer_leadership(self, target_id: str, timeout: float) -> str:
        return await self.inner.transfer_leadership(target_id, timeout)
