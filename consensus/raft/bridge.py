"""The Raft system-tier backend, as seen from the event loop.

Implements :class:`consensus.backend.SystemBackend` over
:class:`consensus.raft.backend.RaftBackend` (which lives in its own tick thread):
proposals become awaitables, linearizable reads share read barriers, and
watchers are woken when something is applied. Callbacks from the tick thread
only ever ``call_soon_threadsafe`` into the loop; the loop never waits on the
tick thread except for short reads under the state-machine lock.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, TypeVar

from consensus.atrest import Keyring
from consensus.backend import BackendInfo, RangeResult
from consensus.durable import Histogram
from consensus.errors import ProposalError, ProposalTimeout
from consensus.raft.backend import RaftBackend, RaftConfig
from consensus.raft.transport import Sender
from consensus.statemachine import (
    Barrier,
    Command,
    CommandResult,
    Event,
    KeyValue,
    SystemStateMachine,
    Txn,
    page_events,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
COMMIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class RaftSystem:
    name = "raft"

    def __init__(
        self,
        node_id: str,
        peer_ids: list[str],
        data_dir: str,
        *,
        sender: Sender,
        config: RaftConfig,
        keyring: Keyring | None = None,
        keyring_loader: Callable[[], Keyring | None] | None = None,
    ) -> None:
        self.raft = RaftBackend(
            node_id,
            peer_ids,
            data_dir,
            sender=sender,
            config=config,
            keyring=keyring,
            keyring_loader=keyring_loader,
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._barrier_inflight = False
        self._next_barrier: asyncio.Future[None] | None = None
        self._applied: asyncio.Future[None] | None = None
        # Completions from the tick thread, settled in the loop in batches:
        # one loop wake-up per tick instead of one per command.
        self._completions: deque[tuple[asyncio.Future[CommandResult], Any, Any]] = deque()
        self._drain_scheduled = False
        self.raft.add_apply_listener(self._on_apply)
        # For /metrics: a write proposed through this node, from proposal until it
        # is committed and applied here (what its caller waits). Event loop only.
        self.commit_seconds = Histogram(COMMIT_BUCKETS)
        # Writes proposed here and not settled yet, and those that ended without a
        # result (not committed in time, no leader, leadership lost, the journal
        # failed); a txn whose compare failed is a result, not a failure. Loop only.
        self.proposals_pending = 0
        self.proposals_failed = 0

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await asyncio.to_thread(self.raft.start)

    async def stop(self) -> None:
        await asyncio.to_thread(self.raft.stop)

    def info(self) -> BackendInfo:
        return self.raft.status()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        assert self._loop is not None, "start() first"
        return self._loop

    # -- writes ----------------------------------------------------------------

    async def txn(self, txn: Txn, timeout: float) -> CommandResult:
        return await self._propose(txn, timeout)

    async def _propose(self, command: Command, timeout: float) -> CommandResult:
        future: asyncio.Future[CommandResult] = self.loop.create_future()
        # The caller may give up (deadline) before the outcome lands; consume
        # a late exception so it is not reported as "never retrieved".
        future.add_done_callback(_consume)

        def done(result: CommandResult | None, error: ProposalError | None) -> None:
            self._completions.append((future, result, error))
            if not self._drain_scheduled:
                self._drain_scheduled = True
                self.loop.call_soon_threadsafe(self._drain_completions)

        started = time.perf_counter()
        self.proposals_pending += 1
        try:
            self.raft.propose(command, done)
            # asyncio.timeout, not wait_for: no extra task per write. A caller that
            # gives up cancels ``future``; a late outcome then finds it done.
            async with asyncio.timeout(timeout):
                result = await future
        except TimeoutError:
            self.proposals_failed += 1
            raise ProposalTimeout(
                f"not committed within {timeout:.3g} s; it may still be applied"
            ) from None
        except ProposalError:
            self.proposals_failed += 1
            raise
        finally:
            self.proposals_pending -= 1
        self.commit_seconds.observe(time.perf_counter() - started)
        return result

    def _drain_completions(self) -> None:
        self._drain_scheduled = False
        while self._completions:
            _settle(*self._completions.popleft())

    # -- reads -----------------------------------------------------------------

    async def get(
        self, key: str, *, linearizable: bool, timeout: float
    ) -> tuple[KeyValue | None, int]:
        return await self._read(lambda sm: (sm.get(key), sm.revision), linearizable, timeout)

    async def get_many(
        self, keys: Sequence[str], *, linearizable: bool, timeout: float
    ) -> list[tuple[KeyValue | None, int] | BaseException]:
        """One read point and one pass over the state for all of ``keys``."""

        def run(sm: SystemStateMachine) -> list[tuple[KeyValue | None, int] | BaseException]:
            return [(sm.get(key), sm.revision) for key in keys]

        return await self._read(run, linearizable, timeout)

    async def range(
        self,
        prefix: str,
        *,
        limit: int,
        start_after: str,
        linearizable: bool,
        timeout: float,
    ) -> RangeResult:
        def run(sm: SystemStateMachine) -> RangeResult:
            kvs, more, count = sm.range(prefix, limit=limit, start_after=start_after)
            return RangeResult(kvs, more, count, sm.revision)

        return await self._read(run, linearizable, timeout)

    async def history(
        self, key: str, *, prefix: bool, start_revision: int, limit: int, timeout: float
    ) -> tuple[list[Event], int, bool]:
        def run(sm: SystemStateMachine) -> tuple[list[Event], int, bool]:
            return page_events(sm.events_since(start_revision, key, prefix=prefix), limit,
                               sm.revision)  # fmt: skip

        return await self._read(run, True, timeout)

    async def snapshot(self, timeout: float) -> SystemStateMachine:
        return await self._read(SystemStateMachine.copy, True, timeout)

    async def _read(
        self, fn: Callable[[SystemStateMachine], T], linearizable: bool, timeout: float
    ) -> T:
        """With ``linearizable``, first wait for a read point: a ReadIndex round
        (``consensus/raft/reads.py``) started after this call began, or with
        ``read_index`` off a barrier command committed through the log. Once the
        local state has applied up to it, it holds every write that completed
        before the call. Concurrent readers share read points: while one is in
        flight, new readers join the next, which starts as soon as the current
        one lands."""
        if linearizable:
            await asyncio.wait_for(self._read_barrier(), timeout)
        return self.raft.read(fn)

    async def _read_barrier(self) -> None:
        waiters = self._next_barrier
        if waiters is None:
            waiters = self._next_barrier = self.loop.create_future()
            waiters.add_done_callback(_consume)
            if not self._barrier_inflight:
                self._launch_barrier()
        await asyncio.shield(waiters)

    def _launch_barrier(self) -> None:
        waiters = self._next_barrier
        assert waiters is not None
        self._next_barrier = None
        self._barrier_inflight = True
        loop = self.loop

        def landed(_result: object, error: ProposalError | None) -> None:
            loop.call_soon_threadsafe(self._barrier_landed, waiters, error)

        if self.raft.config.read_index:
            self.raft.read_index(landed)
        else:
            self.raft.propose(Barrier(), landed)

    def _barrier_landed(self, waiters: asyncio.Future[None], error: ProposalError | None) -> None:
        self._barrier_inflight = False
        if not waiters.done():
            if error is None:
                waiters.set_result(None)
            else:
                waiters.set_exception(error)
        if self._next_barrier is not None:
            self._launch_barrier()

    # -- watch -------------------------------------------------------------------

    async def watch(
        self, key: str, *, prefix: bool, start_revision: int
    ) -> AsyncIterator[list[Event]]:
        next_rev = start_revision or self.raft.read(lambda sm: sm.revision) + 1
        while True:
            # Take the wake-up future *before* reading, so no apply can slip
            # between the read and the wait.
            applied = self._applied_future()
            events, latest = self.raft.read(
                functools.partial(_events_and_revision, next_rev, key, prefix)
            )
            for batch in _by_revision(events):
                yield batch
            next_rev = max(next_rev, latest + 1)
            if not events:
                # Shielded: the future is shared by every watcher, and cancelling one
                # watcher (its client went away) must not cancel it under the others.
                await asyncio.shield(applied)

    def _applied_future(self) -> asyncio.Future[None]:
        if self._applied is None:
            self._applied = self.loop.create_future()
        return self._applied

    def _on_apply(self, _revision: int) -> None:
        if self._applied is not None:
            self.loop.call_soon_threadsafe(self._wake_watchers)

    def _wake_watchers(self) -> None:
        fut, self._applied = self._applied, None
        if fut is not None and not fut.done():
            fut.set_result(None)

    # -- operator actions ----------------------------------------------------------

    async def transfer_leadership(self, target_id: str, timeout: float) -> str:
        loop = self.loop
        outcome: asyncio.Future[tuple[bool, str]] = loop.create_future()

        def settle(ok: bool, why: str) -> None:
            if not outcome.done():
                outcome.set_result((ok, why))

        def done(ok: bool, why: str) -> None:
            loop.call_soon_threadsafe(settle, ok, why)

        deadline = loop.time() + timeout  # one budget for the request and the handover
        self.raft.transfer_leadership(target_id, done)
        try:
            ok, why = await asyncio.wait_for(outcome, timeout)
        except TimeoutError:
            raise ProposalTimeout(
                f"the leader did not take the transfer request within {timeout:.3g} s"
            ) from None
        if not ok:
            raise ProposalError(why)
        while loop.time() < deadline:
            leader = self.info().leader_id
            if leader and leader != self.raft.node_id and (not target_id or leader == target_id):
                return leader
            await asyncio.sleep(0.02)
        raise ProposalTimeout(f"transfer requested but no new leader within {timeout:.3g} s")


def _events_and_revision(
    since: int, key: str, prefix: bool, sm: SystemStateMachine
) -> tuple[list[Event], int]:
    return sm.events_since(since, key, prefix=prefix), sm.revision


def _by_revision(events: list[Event]) -> list[list[Event]]:
    batches: list[list[Event]] = []
    for event in events:
        if batches and batches[-1][-1].kv.mod_revision == event.kv.mod_revision:
            batches[-1].append(event)
        else:
            batches.append([event])
    return batches


def _consume(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


def _settle(
    future: asyncio.Future[CommandResult],
    result: CommandResult | None,
    error: ProposalError | None,
) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        assert result is not None
        future.set_result(result)
