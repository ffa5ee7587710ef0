"""The one interface every system-tier backend implements.

The gRPC layer (``node/api/kv.py``) talks only to this protocol; the Raft
backend (``consensus/raft/bridge.py`` over ``consensus/raft/backend.py``) and the etcd backend
(``consensus/etcd/backend.py``) both implement it, so one test suite runs
against both.

Contract, per method (all are coroutines on the node's event loop unless
noted; none may block the loop):

``txn(txn, timeout)``
    Commit a transaction; return its :class:`CommandResult` once it is
    durable on a quorum and applied. Raises :class:`NotLeaderError` (not
    applied; retry), :class:`OutcomeUnknownError` or :class:`ProposalTimeout`
    (may or may not have been applied).
``get(key, linearizable, timeout)`` / ``range(...)``
    Read. ``linearizable=True`` never returns state older than a write that
    completed before the call began; ``False`` may be stale. The returned
    revision is the store revision the read reflects.
``watch(key, prefix, start_revision)``
    Async iterator of event batches (one list per revision, in revision
    order) from ``start_revision`` (0 = the next change). Raises
    :class:`CompactedError` if ``start_revision`` is no longer available.
    Runs until the consumer stops iterating.
``history(key, prefix, start_revision, limit, timeout)``
    The recorded change events with revision >= ``start_revision`` (> 0) on
    ``key`` (or under it when ``prefix``), and the revision ``through`` they are
    complete up to: every matching change in ``[start_revision, through]`` is in
    the list, in revision order, and no revision is split. At most ``limit``
    events unless one revision alone holds more (0 = no limit); then ``through``
    is the last listed revision; the third value says whether events were left
    out by the limit (ask again from ``through``). Linearizable: ``through`` is at least the
    revision of every write that completed before the call. Raises
    :class:`CompactedError` when ``start_revision`` is older than the history
    kept.
``info()`` (plain method)
    A :class:`BackendInfo` snapshot for Status/Members; never blocks.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from consensus.statemachine import CommandResult, Event, KeyValue, SystemStateMachine, Txn


@dataclass(frozen=True)
class PeerInfo:
    connected: bool
    match_index: int  # leader's view of the peer's log; -1 unknown
    last_heard_s: float  # seconds since the peer was last heard; inf = never


@dataclass(frozen=True)
class BackendInfo:
    name: str  # "raft" | "etcd"
    role: str  # leader | follower | candidate | unknown
    term: int
    leader_id: str
    commit_index: int
    applied_index: int
    log_entries: int
    has_quorum: bool
    revision: int
    keys: int
    peers: dict[str, PeerInfo] = field(default_factory=dict)


@dataclass(frozen=True)
class RangeResult:
    kvs: list[KeyValue]
    more: bool
    count: int
    revision: int


class SystemBackend(Protocol):
    name: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def txn(self, txn: Txn, timeout: float) -> CommandResult: ...

    async def get(
        self, key: str, *, linearizable: bool, timeout: float
    ) -> tuple[KeyValue | None, int]: ...

    async def get_many(
        self, keys: Sequence[str], *, linearizable: bool, timeout: float
    ) -> list[tuple[KeyValue | None, int] | BaseException]:
        """Each key's value and the revision it was read at, as :meth:`get` would answer
        each (one read point for all of them where the backend can), or the error
        reading that key failed with; raises when the read failed for all of them."""
        ...

    async def range(
        self,
        prefix: str,
        *,
        limit: int,
        start_after: str,
        linearizable: bool,
        timeout: float,
    ) -> RangeResult: ...

    def watch(
        self, key: str, *, prefix: bool, start_revision: int
    ) -> AsyncIterator[list[Event]]: ...

    async def history(
        self, key: str, *, prefix: bool, start_revision: int, limit: int, timeout: float
    ) -> tuple[list[Event], int, bool]: ...

    def info(self) -> BackendInfo: ...

    async def snapshot(self, timeout: float) -> SystemStateMachine:
        """A copy of the whole state at one linearizable read point: it holds every
        write that completed before the call (backups). Raises ProposalError when
        the backend keeps no state machine of its own (etcd)."""
        ...

    async def transfer_leadership(self, target_id: str, timeout: float) -> str:
        """Hand leadership to ``target_id`` ("" = best follower); return the new
        leader's id. Only meaningful on the current leader. Raises
        ProposalError with a reason when the transfer cannot happen."""
        ...
