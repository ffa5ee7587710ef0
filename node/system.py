"""The asyncio face of the system-tier backend.

Bridges :class:`consensus.raft.RaftBackend` (which lives in its own tick
thread) into the event loop: proposals become awaitables, linearizable reads
share read barriers, and watchers are woken when something is applied.
Callbacks from the tick thread only ever ``call_soon_threadsafe`` into the
loop; the loop never blocks on the tick thread except for short reads under
the state-machine lock.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TypeVar

from consensus.errors import ProposalError, ProposalTimeout
from consensus.raft import RaftBackend
from consensus.statemachine import Barrier, Command, CommandResult, SystemStateMachine

log = logging.getLogger(__name__)

T = TypeVar("T")


class SystemTier:
    def __init__(self, backend: RaftBackend, loop: asyncio.AbstractEventLoop) -> None:
        self.backend = backend
        self._loop = loop
        self._barrier_inflight = False
        self._next_barrier: asyncio.Future[None] | None = None
        self._applied: asyncio.Future[None] | None = None
        backend.add_apply_listener(self._on_apply)

    # -- writes ----------------------------------------------------------------

    async def propose(self, command: Command, timeout: float) -> CommandResult:
        """Commit ``command`` and return its result once applied on this node.

        Raises a :class:`ProposalError`; :class:`ProposalTimeout` means the
        outcome is unknown."""
        future: asyncio.Future[CommandResult] = self._loop.create_future()

        def done(result: CommandResult | None, error: ProposalError | None) -> None:
            self._loop.call_soon_threadsafe(_settle, future, result, error)

        self.backend.propose(command, done)
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            raise ProposalTimeout(
                f"not committed within {timeout:.3g} s; it may still be applied"
            ) from None

    # -- reads -----------------------------------------------------------------

    async def linearizable(self, fn: Callable[[SystemStateMachine], T], timeout: float) -> T:
        """Run ``fn`` on local state that includes every write completed
        before this call began.

        A barrier command is committed through the log after the call starts;
        once it is applied locally, local state is at least that fresh.
        Concurrent readers share barriers: while one is in flight, new readers
        join the next, which is proposed as soon as the current one lands.
        """
        await asyncio.wait_for(self._read_barrier(), timeout)
        return self.backend.read(fn)

    def serializable(self, fn: Callable[[SystemStateMachine], T]) -> T:
        return self.backend.read(fn)

    async def _read_barrier(self) -> None:
        waiters = self._next_barrier
        if waiters is None:
            waiters = self._next_barrier = self._loop.create_future()
            if not self._barrier_inflight:
                self._launch_barrier()
        await asyncio.shield(waiters)

    def _launch_barrier(self) -> None:
        waiters = self._next_barrier
        assert waiters is not None
        self._next_barrier = None
        self._barrier_inflight = True

        def landed(_result: CommandResult | None, error: ProposalError | None) -> None:
            self._loop.call_soon_threadsafe(self._barrier_landed, waiters, error)

        self.backend.propose(Barrier(), landed)

    def _barrier_landed(self, waiters: asyncio.Future[None], error: ProposalError | None) -> None:
        self._barrier_inflight = False
        if not waiters.done():
            if error is None:
                waiters.set_result(None)
            else:
                waiters.set_exception(error)
        if self._next_barrier is not None:
            self._launch_barrier()

    # -- watch support ---------------------------------------------------------

    def applied_future(self) -> asyncio.Future[None]:
        """A future resolved by the next apply. Take it *before* reading state,
        then await it if the read found nothing: no apply can slip between."""
        if self._applied is None:
            self._applied = self._loop.create_future()
        return self._applied

    def _on_apply(self, _revision: int) -> None:
        if self._applied is not None:
            self._loop.call_soon_threadsafe(self._wake_watchers)

    def _wake_watchers(self) -> None:
        fut, self._applied = self._applied, None
        if fut is not None and not fut.done():
            fut.set_result(None)


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
