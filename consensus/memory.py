"""An in-memory, single-replica system-tier backend: the state machine applied inline.

It implements :class:`consensus.backend.SystemBackend` with the same state machine the
Raft and etcd backends replicate, but with no log, no peers and no disk: a commit is
applying the command. It is what the API servicers are unit-tested against (real gRPC on
loopback, no cluster), and a reference the replicated backends can be compared with.
Every read is trivially linearizable. Not durable: never use it to keep data.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

from consensus.backend import BackendInfo, RangeResult
from consensus.errors import ProposalError
from consensus.statemachine import (
    CommandResult,
    Event,
    KeyValue,
    SystemStateMachine,
    Txn,
    page_events,
)

__all__ = ["MemorySystem"]


class MemorySystem:
    """One replica that is always the leader of a cluster of one."""

    name = "memory"

    def __init__(self, node_id: str = "n1", *, history: int = 10_000) -> None:
        self.node_id = node_id
        self.sm = SystemStateMachine(history_limit=history)
        self._changed = asyncio.Event()
        self._applied_index = 0

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def txn(self, txn: Txn, timeout: float) -> CommandResult:
        result = self.sm.apply(txn)
        self._applied_index += 1
        self._changed.set()
        self._changed = asyncio.Event()
        return result

    async def get(
        self, key: str, *, linearizable: bool, timeout: float
    ) -> tuple[KeyValue | None, int]:
        return self.sm.get(key), self.sm.revision

    async def get_many(
        self, keys: Sequence[str], *, linearizable: bool, timeout: float
    ) -> list[tuple[KeyValue | None, int] | BaseException]:
        return [(self.sm.get(key), self.sm.revision) for key in keys]

    async def range(
        self,
        prefix: str,
        *,
        limit: int,
        start_after: str,
        linearizable: bool,
        timeout: float,
    ) -> RangeResult:
        kvs, more, count = self.sm.range(prefix, limit=limit, start_after=start_after)
        return RangeResult(kvs, more, count, self.sm.revision)

    async def history(
        self, key: str, *, prefix: bool, start_revision: int, limit: int, timeout: float
    ) -> tuple[list[Event], int, bool]:
        events = self.sm.events_since(start_revision, key, prefix=prefix)
        return page_events(events, limit, self.sm.revision)

    async def watch(
        self, key: str, *, prefix: bool, start_revision: int
    ) -> AsyncIterator[list[Event]]:
        next_rev = start_revision or self.sm.revision + 1
        while True:
            changed = self._changed
            events = self.sm.events_since(next_rev, key, prefix=prefix)
            by_revision: dict[int, list[Event]] = {}
            for event in events:
                by_revision.setdefault(event.kv.mod_revision, []).append(event)
            for revision in sorted(by_revision):
                yield by_revision[revision]
            next_rev = max(next_rev, self.sm.revision + 1)
            if not events:
                await changed.wait()

    async def snapshot(self, timeout: float) -> SystemStateMachine:
        return self.sm.copy()

    def info(self) -> BackendInfo:
        return BackendInfo(
            name=self.name,
            role="leader",
            term=1,
            leader_id=self.node_id,
            commit_index=self._applied_index,
            applied_index=self._applied_index,
            log_entries=0,
            has_quorum=True,
            revision=self.sm.revision,
            keys=len(list(self.sm.items())),
        )

    async def transfer_leadership(self, target_id: str, timeout: float) -> str:
        raise ProposalError("a single in-memory replica has no one to hand leadership to")
