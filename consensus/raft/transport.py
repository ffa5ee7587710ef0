"""A pysyncobj ``Transport`` that holds messages until the journal is synced.

pysyncobj's own transport writes every message to a TCP socket the moment
Raft produces it. This one does no networking at all: it is the seam between
pysyncobj (which runs in the Raft tick thread) and the node's gRPC layer
(which runs in the asyncio thread):

* ``send()`` pickles the message and *holds* it in a per-peer outbox;
* ``flush()`` — called by the tick driver after ``DurableJournal.sync()`` —
  hands each peer's held messages, in order, to the ``sender`` callback;
* ``deliver()`` — called from any thread when a batch arrives — queues the
  frames; ``drain()`` (tick thread) unpickles them and feeds pysyncobj.

Holding until after the sync is what makes acknowledgements and votes
honest: nothing leaves the node before what it vouches for is on disk.

Pre-vote (Raft thesis §9.6) also lives here, because pysyncobj has none: when
pysyncobj's election timer fires, :meth:`HeldTransport.gate_election` (called
by the tick loop before ``doTick``) first asks the peers whether they would
vote — without anyone changing term — and lets pysyncobj campaign only once a
majority says yes. A peer says yes only if it has not heard from a leader
within the minimum election timeout and the asker's log is at least as up to
date (:func:`grant_pre_vote`). A node starved of CPU, or cut off, therefore no
longer raises the term and deposes a healthy leader when it comes back; it
learns the leader from the next append-entries instead.

Frames are pickles because pysyncobj's messages are. They must only reach
``deliver()`` from an authenticated peer; the gRPC layer checks the cluster
credential before it even parses the request.
"""

from __future__ import annotations

import logging
import os
import pickle
import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from pysyncobj.config import FAIL_REASON
from pysyncobj.monotonic import monotonic as raft_clock
from pysyncobj.node import Node
from pysyncobj.transport import Transport

from consensus.raft.forwarding import ANSWER, ForwardLedger, ForwardOutbox
from consensus.raft.journal import Entry
from consensus.raft.quiet import quiet_deadline, quiet_hold_s, quiet_window_s, stamp_of

log = logging.getLogger(__name__)

_LEADER = 2  # pysyncobj's _RAFT_STATE.LEADER


def grant_pre_vote(
    *,
    leader_recent: bool,
    term: int,
    last: tuple[int, int],
    asked_term: int,
    asked_last: tuple[int, int],
) -> bool:
    """Would this node vote for a candidate at ``asked_term`` whose log ends at
    ``asked_last`` = (last term, last index)? Pre-vote asks without changing any state.

    No while a leader was heard recently (it is alive; the asker is the one cut off or
    starved), no if the asked term is not newer than ours, no if the asker's log is
    behind ours (it could not win a real election either).
    """
    return not leader_recent and asked_term > term and asked_last >= last


LogView = Callable[[], list[Entry] | Any]
"""Returns the node's Raft log: a sequence of (command, index, term), oldest first."""

Sender = Callable[[str, list[bytes]], None]
"""``sender(peer_id, frames)``: take ownership of frames for one peer, in order.
Called from the tick thread; must not block (hand off to another thread)."""


class HeldTransport(Transport):  # type: ignore[misc]
    def __init__(
        self,
        syncObj: Any,
        selfNode: Node,
        otherNodes: Iterable[Node],
        *,
        sender: Sender,
        wake: Callable[[], None],
        log_view: Any = None,
        sticky_s: float = 0.0,
        pre_vote: bool = False,
        clock: Callable[[], float] = raft_clock,
    ) -> None:
        super().__init__(syncObj, selfNode, otherNodes)
        self._syncobj = syncObj
        self._log_view = log_view
        self._sticky_s = sticky_s
        self._clock = clock
        self._leader_contact = float("-inf")
        self._transfer_until = float("-inf")
        self._notice_after: dict[str, float] = {}
        self.votes_ignored = 0
        self.term_notices = 0
        self._pre_vote = pre_vote
        self._round = 0
        self._round_term = 0  # the term the current round was asked at
        self._round_started = float("-inf")
        self._granted: set[str] = set()
        self._won = False
        self.pre_votes_started = 0
        self.pre_votes_won = 0
        self._nodes: dict[str, Node] = {n.id: n for n in otherNodes}
        self._sender = sender
        self._wake = wake
        self._outbox: dict[str, list[bytes]] = {}
        self._inbox: deque[tuple[str, Any]] = deque()
        self._connected: set[str] = set()
        self._lock = threading.Lock()
        self.frames_sent = 0
        self.frames_received = 0
        self.rollbacks_prevented = 0
        self._commit_waiters: dict[str, set[int]] = {}  # follower -> forwarded indexes
        # ReadIndex (see RaftBackend.read_index). Leader: the round stamped on outgoing
        # append-entries, and per follower the newest round it echoed in this term.
        self.read_round = 0
        self.confirmed: dict[str, int] = {}
        # Follower: per leader, the (term, round) of the newest append-entries taken.
        self._echo: dict[str, tuple[int, int]] = {}
        # Read-index requests and replies, for the tick loop: (peer, request id) and
        # (request id, index or None when refused).
        self.read_requests: deque[tuple[str, int]] = deque()
        self.read_replies: deque[tuple[int, int | None]] = deque()
        # Quiet heartbeats (consensus/raft/quiet.py). Leader: the interval stamped on
        # its append-entries while the group is at rest (0: not quiet). Follower: the
        # stamp of the leader's last append-entries (None: it was not quiet).
        self.quiet_s = 0.0
        self.quiet_stamp: float | None = None
        # Vote and pre-vote requests received: activity that ends a leader's rest.
        self.election_requests = 0
        # Leader handing over (RaftBackend.transfer_leadership): commands followers
        # forward are held here, not appended, until the tick loop releases them.
        self.hold_commands = False
        self._held_commands: list[tuple[Node, dict[str, Any]]] = []
        # Follower: index -> result of the entries applied while a command it forwarded
        # awaited the leader's answer (see _answer_late), oldest first.
        self._applied_results: dict[int, Any] = {}
        self.late_answers = 0
        # Forwarded commands sent again when a frame is lost, appended once
        # (consensus/raft/forwarding.py): this node's as a follower, and the
        # followers' as a leader.
        self.forwards = ForwardOutbox(int.from_bytes(os.urandom(8), "big"))
        self.forward_ledger = ForwardLedger()

    # -- pysyncobj side (tick thread) ----------------------------------------

    def send(self, node: Node, message: Any) -> bool:
        kind = message.get("type")
        if kind == "request_vote" and self._clock() < self._transfer_until:
            message = {**message, "transfer": True}
        elif kind == "apply_command" and self._leader_gone(node):
            # Forwarding to a leader we have not heard from for an election
            # timeout would only leave the caller with "outcome unknown" when
            # the next leader is elected. Refuse now, definitely not applied.
            if "request_id" in message:
                refusal = {
                    "type": "apply_command_response",
                    "request_id": message["request_id"],
                    "error": FAIL_REASON.NOT_LEADER,
                }
                self._inbox.append(("local", (node.id, refusal)))
                self._wake()
            return False
        elif kind == "apply_command" and "request_id" in message:
            message = self.forwards.stamp(
                message["request_id"], node.id, self._syncobj.raftCurrentTerm, message,
                self._clock(),
            )  # fmt: skip
        elif kind == "append_entries" and (self.read_round or self.quiet_s):
            message = dict(message)
            if self.read_round:
                # ReadIndex: every append-entries carries the leader's current read
                # round; the follower's answer echoes it (see confirms).
                message["read_round"] = (self._syncobj.raftCurrentTerm, self.read_round)
            if self.quiet_s:
                message["quiet"] = self.quiet_s
        elif kind == "next_node_idx" and node.id in self._echo:
            message = {**message, "read_round": self._echo[node.id]}
        elif kind == "apply_command_response":
            message = self.forward_ledger.sent(node.id, message)
            if "log_idx" in message:
                # A follower forwarded a command that now sits at log_idx; it answers
                # its caller once it learns that index is committed (see commit_owed).
                self._commit_waiters.setdefault(node.id, set()).add(message["log_idx"])
        return self._hold(node, message)

    def _hold(self, node: Node, message: dict[str, Any]) -> bool:
        frame = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        self._outbox.setdefault(node.id, []).append(frame)
        return node.id in self._connected

    def tend_forwards(self) -> int:
        """Every tick, before the flush (consensus/raft/forwarding.py): as leader, keep
        a record of this term's forwards; as follower, send again those the leader has
        not answered in time. Returns the copies sent."""
        obj = self._syncobj
        if obj._isLeader():
            self.forward_ledger.leading(obj.raftCurrentTerm)
        if not len(self.forwards):
            return 0
        leader = obj._SyncObj__raftLeader
        copies = self.forwards.due(
            self._clock(),
            obj._SyncObj__commandsWaitingReply,
            None if leader is None else leader.id,
            obj.raftCurrentTerm,
        )
        for peer_id, message in copies:
            node = self._nodes.get(peer_id)
            if node is not None:  # not send(): a copy keeps its first send's stamp
                self._hold(node, message)
        return len(copies)

    def flush(self, replies: Mapping[str, Callable[[list[bytes]], None]] | None = None) -> int:
        """Release every held message. Call only after the journal is synced.

        ``replies`` maps a peer to a callback that takes that peer's frames instead of
        the sender: the answer to a call the peer is waiting on (it gets ``[]`` when
        there is nothing for it)."""
        outbox, self._outbox = self._outbox, {}
        count = 0
        for peer_id, frames in outbox.items():
            count += len(frames)
            reply = (replies or {}).get(peer_id)
            if reply is not None:
                reply(frames)
            else:
                self._sender(peer_id, frames)
        for peer_id, reply in (replies or {}).items():
            if peer_id not in outbox:
                reply([])
        self.frames_sent += count
        return count

    def drain(self) -> int:
        """Feed everything received since the last call to pysyncobj, in
        arrival order. Returns the number of messages delivered."""
        delivered = 0
        while True:
            try:
                kind, item = self._inbox.popleft()
            except IndexError:
                return delivered
            if kind == "up":
                self._set_connected(item, True)
                continue
            if kind == "down":
                self._set_connected(item, False)
                continue
            if kind == "local":
                peer_id, message = item
                self.forwards.answered(message.get("request_id"))
                self._onMessageReceived(self._nodes[peer_id], message)
                delivered += 1
                continue
            peer_id, frames = item
            node = self._nodes.get(peer_id)
            if node is None:
                log.warning("dropping %d raft frames from unknown peer %s", len(frames), peer_id)
                continue
            self._set_connected(peer_id, True)
            for frame in frames:
                try:
                    message = pickle.loads(frame)
                except Exception:
                    log.exception("undecodable raft frame from %s", peer_id)
                    continue
                if not isinstance(message, dict) or "type" not in message:
                    log.warning("ignoring malformed raft message from %s", peer_id)
                    continue
                self.frames_received += 1
                delivered += 1
                if message["type"] in ("pre_vote", "request_vote"):
                    self.election_requests += 1
                if message["type"] == "pre_vote":
                    self._answer_pre_vote(node, message)
                    continue
                if message["type"] == "pre_vote_reply":
                    self._count_pre_vote(node, message)
                    continue
                if message["type"] == "read_index":
                    self.read_requests.append((peer_id, int(message.get("id", 0))))
                    continue
                if message["type"] == "read_index_reply":
                    index = message.get("index")
                    self.read_replies.append(
                        (int(message.get("id", 0)), index if isinstance(index, int) else None)
                    )
                    continue
                if not self._admit(node, message):
                    continue
                if message["type"] == "apply_command":
                    verdict, taken = self.forward_ledger.take(
                        peer_id, message, self._syncobj.raftCurrentTerm, self._syncobj._isLeader()
                    )
                    if taken is None:  # DROP: a copy of what this leader has
                        continue
                    if verdict == ANSWER:  # what a copy's first send became, or a refusal
                        self.send(node, taken)
                        continue
                    message = taken
                elif message["type"] == "apply_command_response":
                    if message.get("nonce", self.forwards.nonce) != self.forwards.nonce:
                        continue  # an answer to this node's previous process
                    self.forwards.answered(message.get("request_id"))
                if self.hold_commands and message["type"] == "apply_command":
                    self._held_commands.append((node, message))
                    continue
                if self._log_view is not None and message["type"] == "append_entries":
                    message = trim_append_entries(message, self._log_view)
                if message["type"] == "append_entries":
                    self._note_round(node, message)
                try:
                    if message["type"] == "next_node_idx":
                        self._take_ack(node, message)
                    elif message["type"] == "apply_command_response" and self._answer_late(message):
                        pass
                    else:
                        self._onMessageReceived(node, message)
                        if message["type"] == "append_entries":
                            self._follow_pace(node, message)
                except (KeyError, TypeError, ValueError):
                    log.exception("raft message from %s could not be handled", peer_id)

    LATE_ANSWER_WINDOW = 1024  # applied entries kept for a late answer

    def note_applied(self, index: int, result: Any, forwarding: bool) -> None:
        """Entry ``index`` was applied here with ``result``. Kept (the newest
        ``LATE_ANSWER_WINDOW``) while ``forwarding`` -- a command this node forwarded
        awaits the leader's answer -- for :meth:`_answer_late`; dropped otherwise, as
        a result may hold values read. Tick thread."""
        results = self._applied_results
        if not forwarding:
            if results:
                results.clear()
            return
        results[index] = result
        if len(results) > self.LATE_ANSWER_WINDOW:
            del results[next(iter(results))]

    def _answer_late(self, message: dict[str, Any]) -> bool:
        """Follower: answer a forwarded command whose ``apply_command_response``
        arrives after this node applied the entry it names. Frames from the leader
        travel by two paths (its own link, and the answers to this node's calls), so a
        later append-entries can overtake the response; pysyncobj then answers
        UNKNOWN_OUTCOME -- "leadership changed" to the caller, with no election --
        for 0.3-0.6% of the writes sent to followers under load. But by Log Matching
        the entry applied at that index *is* the command when its term is the one the
        leader gave, so the caller gets this node's result of it, exactly as if the
        response had come first; an entry of another term there means the command was
        overwritten, never applied (DISCARDED). Without the entry or its result (a
        snapshot installed it, or it left the window) pysyncobj answers as before.
        Returns whether the message was handled here."""
        index, term = message.get("log_idx"), message.get("log_term")
        if "error" in message or not isinstance(index, int):
            return False
        if index > self._syncobj.raftLastApplied or index not in self._applied_results:
            return False
        entry = _entry_at(self._log_view, index) if self._log_view is not None else None
        if entry is None:
            return False
        waiting = self._syncobj._SyncObj__commandsWaitingReply
        callback = waiting.pop(message.get("request_id"), None)
        if callback is not None:
            self.late_answers += 1
            if entry[2] == term:
                callback(self._applied_results.pop(index), FAIL_REASON.SUCCESS)
            else:
                callback(None, FAIL_REASON.DISCARDED)
        return True

    def release_commands(self) -> int:
        """Feed pysyncobj the forwarded commands held while ``hold_commands`` was set,
        in arrival order: a node still leading appends them, one that has handed over
        answers their senders NOT_LEADER (definitely not applied). Tick thread."""
        held, self._held_commands = self._held_commands, []
        for node, message in held:
            try:
                self._onMessageReceived(node, message)
            except (KeyError, TypeError, ValueError):
                log.exception("raft message from %s could not be handled", node.id)
        return len(held)

    def _follow_pace(self, node: Node, message: dict[str, Any]) -> None:
        """Follower, after pysyncobj took an append-entries (and reset its election
        timer to the normal range): a quiet one from the current leader moves the
        timer out to the quiet range instead (consensus/raft/quiet.py)."""
        obj = self._syncobj
        if (
            obj._SyncObj__raftLeader != node
            or message.get("term") != obj.raftCurrentTerm
            or obj._SyncObj__transferInProgress
        ):
            return
        stamp = stamp_of(message)
        self.quiet_stamp = stamp
        if stamp is not None:
            obj._SyncObj__raftElectionDeadline = quiet_deadline(self._clock(), stamp)

    def _leader_recent(self, now: float) -> bool:
        """Heard from a live leader within the minimum election timeout -- or, while it
        keeps quiet heartbeats, within three of them."""
        hold = self._sticky_s
        if self.quiet_stamp is not None:
            hold = max(hold, quiet_hold_s(self.quiet_stamp))
        return now - self._leader_contact < hold

    def silence_allowed_s(self, normal_s: float) -> float:
        """How long a follower may hear nothing from its leader before it reports none:
        ``normal_s``, or four quiet heartbeats if longer."""
        return quiet_window_s(normal_s, self.quiet_stamp)

    def _note_round(self, node: Node, message: dict[str, Any]) -> None:
        """Follower: remember the read round of an append-entries pysyncobj is about
        to take (its term is not older than ours), so the answer echoes it."""
        stamp = message.get("read_round")
        if (
            isinstance(stamp, tuple)
            and len(stamp) == 2
            and message.get("term", -1) >= self._syncobj.raftCurrentTerm
        ):
            self._echo[node.id] = (int(stamp[0]), int(stamp[1]))

    def _note_echo(self, node: Node, message: dict[str, Any]) -> None:
        """Leader: a follower answered an append-entries of this term stamped with
        read round r -- it followed this leader at a moment after round r began."""
        stamp = message.get("read_round")
        if (
            isinstance(stamp, tuple)
            and len(stamp) == 2
            and stamp[0] == self._syncobj.raftCurrentTerm
            and self._syncobj._isLeader()
        ):
            self.confirmed[node.id] = max(self.confirmed.get(node.id, 0), int(stamp[1]))

    def confirms(self, read_round: int) -> bool:
        """Leader: whether a majority (this node included) has answered an
        append-entries stamped ``read_round`` or later in the current term."""
        votes = 1 + sum(1 for r in self.confirmed.values() if r >= read_round)
        return votes * 2 > len(self._nodes) + 1

    def new_read_round(self) -> int:
        """Leader: start a read round; append-entries sent from now on carry it."""
        self.read_round += 1
        return self.read_round

    def reset_reads(self) -> None:
        """Leadership or term changed: no earlier echo confirms anything any more."""
        self.confirmed.clear()

    def send_read(self, peer_id: str, message: dict[str, Any]) -> bool:
        """Send a read-index request or reply (not pysyncobj messages) to ``peer_id``."""
        node = self._nodes.get(peer_id)
        if node is None:
            return False
        return self.send(node, message)

    def commit_owed(self, commit_index: int) -> bool:
        """Leader: whether a follower is waiting to learn that ``commit_index`` covers a
        command it forwarded (and forgets those waits). The tick loop sends an
        append-entries for the commit index alone only then; otherwise followers learn
        it with the next entries or heartbeat, instead of one extra message per
        commit per follower."""
        owed = False
        for peer in list(self._commit_waiters):
            pending = self._commit_waiters[peer]
            covered = {idx for idx in pending if idx <= commit_index}
            if covered:
                owed = True
                pending -= covered
                if not pending:
                    del self._commit_waiters[peer]
        return owed

    def _take_ack(self, node: Node, message: dict[str, Any]) -> None:
        """Feed a follower's append-entries answer to pysyncobj, but never let a
        *successful* one move that follower's ``nextIndex`` backwards.

        pysyncobj sets ``nextIndex`` to just after what an acknowledgement covers. With
        more than one append-entries outstanding (the leader sends each tick's new
        entries at once), the acknowledgement of an older one arrives after
        ``nextIndex`` has moved past it, rolls it back, and the next send repeats
        entries the follower already has -- measured at 2.4 entries sent per write at
        one client and 4.7 at 64, where 2 is the least. A success only ever proves the
        follower has *at least* that much, so it may raise ``nextIndex``, never lower
        it. A refusal (``reset``) still moves it back: that is how the leader finds
        where a diverged or lagging follower's log really ends."""
        self._note_echo(node, message)
        next_index = self._syncobj._SyncObj__raftNextIndex
        before = next_index.get(node) if message.get("success") else None
        self._onMessageReceived(node, message)
        if (
            before is not None
            and not message.get("reset")
            and self._syncobj._isLeader()
            and next_index.get(node, before) < before
        ):
            next_index[node] = before
            self.rollbacks_prevented += 1

    def _leader_gone(self, node: Node) -> bool:
        if node.id not in self._connected:
            return True
        return self._sticky_s > 0 and not self._leader_recent(self._clock())

    def _admit(self, node: Node, message: dict[str, Any]) -> bool:
        """Leader stickiness (Raft thesis §4.2.3, "disruptive servers").

        A node that heard from a live leader less than ``sticky_s`` ago (the
        minimum election timeout) ignores vote requests, and a leader ignores
        them outright (check-quorum steps it down if it loses its majority).
        Without this, one node starved of CPU for an election timeout bumps
        the term and deposes a healthy leader; on a busy machine that turns
        into election storms. Requests sent on behalf of a leadership
        transfer (``timeout_now``) carry ``transfer`` and are always admitted.
        Safety is unaffected: ignoring a vote request only delays elections.

        Stickiness needs a counterpart, because pysyncobj silently drops an
        append-entries from a lower term: a node that campaigned while cut off
        (or while restarting, before the leader's link to it came up) would
        otherwise sit at a higher term forever, ignoring the leader, with its
        own campaigns ignored in turn. Raft's answer is that a stale-term
        append-entries is answered with the receiver's term, which makes the
        leader step down. We send that answer as a vote request flagged
        ``term_notice`` (admitted past stickiness): a pysyncobj leader that
        sees a higher term adopts it and becomes a follower, and grants the
        vote only if the sender's log is at least as up to date — exactly
        Raft's rule. Cost: one election, as in plain Raft.
        """
        kind = message["type"]
        now = self._clock()
        term = message.get("term", 0)
        if kind == "append_entries":
            if term >= self._syncobj.raftCurrentTerm:
                self._leader_contact = now
            elif now >= self._notice_after.get(node.id, float("-inf")):
                self._notice_after[node.id] = now + max(self._sticky_s, 0.05)
                self._send_term_notice(node)
        elif kind == "timeout_now":
            self._transfer_until = now + 2 * self._sticky_s + 1.0
        elif kind == "request_vote" and self._sticky_s > 0:
            if message.get("transfer"):
                # A leader is handing over to this candidate: count it as leader
                # contact, so that nobody else (a starved follower, say) collects
                # the votes of nodes that last heard from a leader they just lost.
                self._leader_contact = now
                return True
            if message.get("term_notice"):
                return True
            if self._leader_recent(now) or self._syncobj._isLeader():
                self.votes_ignored += 1
                return False
        return True

    def _send_term_notice(self, node: Node) -> None:
        entries = self._log_view
        last_idx, last_term = (0, 0)
        if entries is not None and len(entries):
            last_idx, last_term = entries[-1][1], entries[-1][2]
        self.term_notices += 1
        self.send(
            node,
            {
                "type": "request_vote",
                "term": self._syncobj.raftCurrentTerm,
                "last_log_index": last_idx,
                "last_log_term": last_term,
                "term_notice": True,
            },
        )

    # -- pre-vote (tick thread) ------------------------------------------------

    def gate_election(self) -> None:
        """Call before every ``doTick``. When pysyncobj's election timer has fired, hold
        the campaign back (push the timer out) and run a pre-vote round instead; once a
        round wins a majority, let the next ``doTick`` campaign at once. Leadership
        transfers skip the gate: their target must campaign even though the others
        still hear from the leader that asked for it."""
        obj = self._syncobj
        if not self._pre_vote or obj._SyncObj__raftState == _LEADER or not self._nodes:
            return  # a lone voter is its own majority: there is no one to ask or disturb
        now = self._clock()
        if obj._SyncObj__raftElectionDeadline >= now or now < self._transfer_until:
            return
        if not obj._SyncObj__connectedToAnyone():
            return
        if self._won:
            self._won = False
            if obj.raftCurrentTerm == self._round_term:
                return  # the timer stays expired: doTick campaigns now
            # else the win is stale: another election moved the term on since
        obj._SyncObj__raftElectionDeadline = now + obj._SyncObj__generateRaftTimeout()
        self._round += 1
        self._round_term = obj.raftCurrentTerm
        self._round_started = now
        self._granted = set()
        self.pre_votes_started += 1
        request = {
            "type": "pre_vote",
            "round": self._round,
            "term": obj.raftCurrentTerm + 1,
            "last_log_index": obj._SyncObj__getCurrentLogIndex(),
            "last_log_term": obj._SyncObj__getCurrentLogTerm(),
        }
        for node in self._nodes.values():
            self.send(node, request)

    def _answer_pre_vote(self, node: Node, message: dict[str, Any]) -> None:
        obj = self._syncobj
        recent = self._leader_recent(self._clock())
        granted = grant_pre_vote(
            leader_recent=recent or obj._SyncObj__raftState == _LEADER,
            term=obj.raftCurrentTerm,
            last=(obj._SyncObj__getCurrentLogTerm(), obj._SyncObj__getCurrentLogIndex()),
            asked_term=int(message.get("term", 0)),
            asked_last=(
                int(message.get("last_log_term", 0)),
                int(message.get("last_log_index", 0)),
            ),
        )
        reply = {"type": "pre_vote_reply", "round": message.get("round"), "granted": granted}
        self.send(node, reply)

    def _count_pre_vote(self, node: Node, message: dict[str, Any]) -> None:
        """Count a grant for the current round -- only while the round still means
        what it asked: same term, no leader heard since. A grant that arrives after
        this node voted for someone else, or heard a new leader, is stale; acting on
        it would depose that leader (seen right after leadership transfers)."""
        if message.get("round") != self._round or not message.get("granted"):
            return
        if (
            self._syncobj.raftCurrentTerm != self._round_term
            or self._leader_contact >= self._round_started
        ):
            return
        self._granted.add(node.id)
        if (len(self._granted) + 1) * 2 > len(self._nodes) + 1 and not self._won:
            self._won = True
            self.pre_votes_won += 1
            self._syncobj._SyncObj__raftElectionDeadline = 0.0

    def _set_connected(self, peer_id: str, up: bool) -> None:
        node = self._nodes.get(peer_id)
        if node is None or (peer_id in self._connected) == up:
            return
        if up:
            self._connected.add(peer_id)
            log.info("raft peer %s connected", peer_id)
            self._onNodeConnected(node)
        else:
            self._connected.discard(peer_id)
            log.info("raft peer %s disconnected", peer_id)
            self._onNodeDisconnected(node)
            obj = self._syncobj
            if self.quiet_stamp is not None and obj._SyncObj__raftLeader == node:
                # A quiet leader's link went down: stop waiting out the quiet range;
                # the normal timer (and pre-vote) decide from here.
                self.quiet_stamp = None
                soon = self._clock() + obj._SyncObj__generateRaftTimeout()
                deadline = obj._SyncObj__raftElectionDeadline
                obj._SyncObj__raftElectionDeadline = min(deadline, soon)

    # -- network side (any thread) -------------------------------------------

    def deliver(self, peer_id: str, frames: list[bytes]) -> None:
        self._inbox.append(("frames", (peer_id, frames)))
        self._wake()

    def peer_up(self, peer_id: str) -> None:
        self._inbox.append(("up", peer_id))
        self._wake()

    def peer_down(self, peer_id: str) -> None:
        self._inbox.append(("down", peer_id))
        self._wake()

    def leader_silent_s(self) -> float:
        """Seconds since an append-entries of the current term last arrived (inf: never)."""
        return self._clock() - self._leader_contact

    def is_connected(self, peer_id: str) -> bool:
        return peer_id in self._connected

    # -- Transport API odds and ends -----------------------------------------

    def addNode(self, node: Node) -> None:
        self._nodes[node.id] = node

    def dropNode(self, node: Node) -> None:
        self._nodes.pop(node.id, None)
        self._connected.discard(node.id)

    def destroy(self) -> None:
        self._outbox.clear()


def _entry_at(log: Any, index: int) -> Entry | None:
    if len(log) == 0:
        return None
    first = log[0][1]
    pos = index - first
    if 0 <= pos < len(log):
        entry: Entry = log[pos]
        return entry
    return None


def trim_append_entries(message: dict[str, Any], log: Any) -> dict[str, Any]:
    """Rewrite an append-entries message so pysyncobj only truncates on a real conflict.

    pysyncobj 0.3.17 deletes *every* entry after ``prevLogIdx`` whenever the
    follower's log is longer, even when those entries are identical to the
    leader's — which happens routinely, because the leader moves its
    ``nextIndex`` for a follower backwards when an older acknowledgement
    arrives. The entries are re-added at once, but an acknowledged (even
    applied) entry is briefly absent from the log, and a crash in that window
    loses it ("truncating already-applied log entries").

    Raft's rule (Ongaro & Ousterhout, Fig. 2, AppendEntries step 3-4) is to
    delete only from the first entry whose term conflicts and to append only
    what is missing. This function applies it before pysyncobj sees the
    message, by advancing ``prevLogIdx`` over entries the follower already has:

    * a conflict at index k: the message becomes (prev = k-1, entries from k),
      so pysyncobj truncates from k — the conflicting suffix, as Raft wants;
    * entries missing from k on: (prev = k-1, the missing entries);
    * nothing new: prev becomes the follower's last entry if that entry is
      from the sender's term (by Log Matching, the follower's whole log then
      equals a prefix of the leader's), otherwise the last covered entry.

    Messages that are not plain entry batches (snapshot transmission, chunked
    entries) and messages whose ``prevLogIdx`` does not match pass unchanged.
    """
    if "prevLogIdx" not in message or "transmission" in message or "entries" not in message:
        return message
    prev_idx, prev_term = message["prevLogIdx"], message["prevLogTerm"]
    prev = _entry_at(log, prev_idx)
    if prev is None or prev[2] != prev_term:
        return message
    entries = list(message["entries"])
    skip = 0
    for entry in entries:
        mine = _entry_at(log, entry[1])
        if mine is None or mine[2] != entry[2]:
            break
        skip += 1
    if skip == 0 and entries:
        return message
    trimmed = dict(message)
    if skip < len(entries):
        last_kept = entries[skip - 1]
        trimmed["prevLogIdx"], trimmed["prevLogTerm"] = last_kept[1], last_kept[2]
        trimmed["entries"] = entries[skip:]
        return trimmed
    covered_idx, covered_term = (
        (entries[-1][1], entries[-1][2]) if entries else (prev_idx, prev_term)
    )
    last = log[-1]
    if last[1] > covered_idx and last[2] == message["term"]:
        covered_idx, covered_term = last[1], last[2]
    trimmed["prevLogIdx"], trimmed["prevLogTerm"] = covered_idx, covered_term
    trimmed["entries"] = []
    return trimmed
