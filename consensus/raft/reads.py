"""Linearizable reads by ReadIndex (Raft thesis §6.4), without a log entry.

A read must see every write that completed before it began. Committing a
*barrier* through the log proves that, but costs an entry, an fsync on every node
and a commit per batch of readers. ReadIndex proves it with one heartbeat round:

Leader
    1. Only once it has committed an entry of its own term (pysyncobj appends a
       no-op when it is elected) does its commit index cover every write any
       earlier leader acknowledged.
    2. The readers that arrived since the last round share a new round *r* and
       the read index ``commit index now``. Every append-entries sent from then on
       carries ``(term, r)``; a follower's answer echoes the newest stamp it took
       (``HeldTransport``).
    3. When a majority (the leader included) has answered a stamp ≥ *r* of the
       current term, the leader was still the leader after the reads arrived: a
       node answers an append-entries only while it follows that term, and a
       newer leader would have needed one of those nodes' votes *before* it
       answered -- so no other leader committed anything the read index misses.
    4. Once the leader has applied up to the read index, the readers read local
       state.

Follower
    It asks the leader for a read index (``read_index``), and reads once it has
    applied up to the index the leader answers (``read_index_reply``). The
    round's append-entries carry a commit index ≥ the read index, so the follower
    learns it with the confirmation itself.

Every pending read fails (not served, safe to retry) if leadership or the term
changes before it is answered, or after ``timeout_s``. This module is pure: the
tick loop hands it a :class:`RaftView` and the transport's read queues, and it
says whether a heartbeat must go out now.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from consensus.errors import NotLeaderError, ProposalError

__all__ = ["RaftView", "ReadCallback", "ReadIndex"]

# (read index, None) once the read may run, or (None, error) when it may not.
ReadCallback = Callable[[int | None, ProposalError | None], None]


@dataclass(frozen=True, slots=True)
class RaftView:
    """What the read path needs of pysyncobj's state, read in the tick thread."""

    leader: bool
    term: int
    commit: int
    applied: int
    own_term_committed: bool  # the leader has committed an entry of its term
    leader_id: str  # "" when unknown or unreachable
    now: float


class ReadTransport(Protocol):
    read_requests: deque[tuple[str, int]]
    read_replies: deque[tuple[int, int | None]]

    def new_read_round(self) -> int: ...
    def confirms(self, read_round: int) -> bool: ...
    def reset_reads(self) -> None: ...
    def send_read(self, peer_id: str, message: dict[str, object]) -> bool: ...


@dataclass(slots=True)
class _Round:
    number: int
    index: int
    deadline: float
    local: list[ReadCallback] = field(default_factory=list)
    remote: list[tuple[str, int]] = field(default_factory=list)
    confirmed: bool = False


@dataclass(slots=True)
class _Waiting:
    """Follower: readers waiting for the leader's answer, then for the apply."""

    callbacks: list[ReadCallback]
    deadline: float
    index: int | None = None


class ReadIndex:
    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.incoming: deque[ReadCallback] = deque()  # appended from any thread
        self._queued_local: list[ReadCallback] = []  # leader: before its term's first commit
        self._queued_remote: list[tuple[str, int]] = []
        self._rounds: list[_Round] = []
        self._asked: dict[int, _Waiting] = {}
        self._applying: list[_Waiting] = []
        # Random start: a reply meant for an earlier process of this node (before a
        # restart) must not match a request of this one.
        self._next_id = random.getrandbits(62)
        self._queued_since: float | None = None  # leader: when the oldest queued read came
        self._leader_term: int | None = None  # the term this node leads, if it does
        self.rounds_started = 0

    @property
    def busy(self) -> bool:
        """Whether any read is pending (its timeout needs the tick thread awake)."""
        return bool(
            self.incoming
            or self._queued_local
            or self._queued_remote
            or self._rounds
            or self._asked
            or self._applying
        )

    def tick(self, view: RaftView, transport: ReadTransport) -> bool:
        """Advance every pending read; True if a heartbeat must go out now (a new
        round's stamp)."""
        leading = view.term if view.leader else None
        if leading != self._leader_term:
            self._fail_leader_reads(transport, "leadership changed before the read was confirmed")
            transport.reset_reads()
            self._leader_term = leading
        new_local = [self.incoming.popleft() for _ in range(len(self.incoming))]
        new_remote = [
            transport.read_requests.popleft() for _ in range(len(transport.read_requests))
        ]
        heartbeat = False
        if view.leader:
            self._queued_local += new_local
            self._queued_remote += new_remote
            queued = bool(self._queued_local or self._queued_remote)
            if queued and self._queued_since is None:
                self._queued_since = view.now
            if queued and not view.own_term_committed:
                assert self._queued_since is not None
                if view.now - self._queued_since >= self.timeout_s:  # its term never settles
                    self._fail_leader_reads(transport, "this leader's term did not commit in time")
            elif queued:
                self._queued_since = None
                self._rounds.append(
                    _Round(
                        transport.new_read_round(),
                        view.commit,
                        view.now + self.timeout_s,
                        self._queued_local,
                        self._queued_remote,
                    )
                )
                self._queued_local, self._queued_remote = [], []
                self.rounds_started += 1
                heartbeat = True
            self._advance_rounds(view, transport)
        else:
            for peer, request in new_remote:  # not the leader: refuse, the asker retries
                transport.send_read(peer, {"type": "read_index_reply", "id": request})
            if new_local:
                self._ask_leader(new_local, view, transport)
        self._take_replies(transport)
        self._advance_waiting(view)
        return heartbeat

    # -- leader ------------------------------------------------------------------------

    def _advance_rounds(self, view: RaftView, transport: ReadTransport) -> None:
        kept = []
        for rnd in self._rounds:
            if not rnd.confirmed and transport.confirms(rnd.number):
                rnd.confirmed = True
                for peer, request in rnd.remote:
                    reply = {"type": "read_index_reply", "id": request, "index": rnd.index}
                    transport.send_read(peer, reply)
                rnd.remote = []
            if rnd.confirmed and view.applied >= rnd.index:
                for callback in rnd.local:
                    callback(rnd.index, None)
                continue
            if view.now >= rnd.deadline:
                self._fail_round(rnd, transport, "leadership was not confirmed in time")
                continue
            kept.append(rnd)
        self._rounds = kept

    def _fail_round(self, rnd: _Round, transport: ReadTransport, why: str) -> None:
        error = NotLeaderError(f"read not served: {why}; nothing was read, retry")
        for callback in rnd.local:
            callback(None, error)
        for peer, request in rnd.remote:
            transport.send_read(peer, {"type": "read_index_reply", "id": request})

    def _fail_leader_reads(self, transport: ReadTransport, why: str) -> None:
        queued = _Round(0, 0, 0.0, self._queued_local, self._queued_remote)
        for rnd in [*self._rounds, queued]:
            self._fail_round(rnd, transport, why)
        self._rounds, self._queued_local, self._queued_remote = [], [], []
        self._queued_since = None

    # -- follower ----------------------------------------------------------------------

    def _ask_leader(
        self, callbacks: list[ReadCallback], view: RaftView, transport: ReadTransport
    ) -> None:
        if not view.leader_id:
            error = NotLeaderError("no leader is available right now; nothing was read")
            for callback in callbacks:
                callback(None, error)
            return
        self._next_id += 1
        self._asked[self._next_id] = _Waiting(callbacks, view.now + self.timeout_s)
        transport.send_read(view.leader_id, {"type": "read_index", "id": self._next_id})

    def _take_replies(self, transport: ReadTransport) -> None:
        while transport.read_replies:
            request, index = transport.read_replies.popleft()
            waiting = self._asked.pop(request, None)
            if waiting is None:
                continue  # answered too late: those readers were already failed
            if index is None:
                error = NotLeaderError("the node asked for a read index is not the leader")
                for callback in waiting.callbacks:
                    callback(None, error)
                continue
            waiting.index = index
            self._applying.append(waiting)

    def _advance_waiting(self, view: RaftView) -> None:
        for request in [r for r, w in self._asked.items() if view.now >= w.deadline]:
            self._fail(self._asked.pop(request), "the leader did not answer in time")
        kept = []
        for waiting in self._applying:
            assert waiting.index is not None
            if view.applied >= waiting.index:
                for callback in waiting.callbacks:
                    callback(waiting.index, None)
            elif view.now >= waiting.deadline:
                self._fail(waiting, "this node did not catch up with the leader in time")
            else:
                kept.append(waiting)
        self._applying = kept

    @staticmethod
    def _fail(waiting: _Waiting, why: str) -> None:
        error = NotLeaderError(f"read not served: {why}; nothing was read, retry")
        for callback in waiting.callbacks:
            callback(None, error)
