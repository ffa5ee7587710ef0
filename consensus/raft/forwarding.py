"""A follower's forwarded commands, sent again when a frame is lost; the leader
appends each one once.

pysyncobj forwards a command proposed on a follower to the leader once (an
``apply_command`` carrying the follower's request id) and then waits for the
leader's ``apply_command_response`` -- with no deadline: only a change of leader
ends the wait. But these two messages are not Raft state that the next
append-entries repeats. A peer link drops what it holds when a call fails
(``node/peer/links.py``), and a call that times out may or may not have been
taken; so a lost request, or a lost answer, left the caller waiting for its own
deadline (10 s) with "not committed; it may still be applied", though the leader
was up the whole time. Sending the command again is only safe if the leader can
tell a copy from a new command, so:

* The follower (:class:`ForwardOutbox`) stamps every forward with ``fwd = (nonce,
  term, low)``: ``nonce`` names this process (request ids restart at 1 when it
  restarts), ``term`` the term it was first sent in, ``low`` the lowest request id
  it may still send again. A forward not answered within :data:`RESEND_AFTER_S`
  goes again (flagged ``resend``), to the same leader in the same term, for at most
  :data:`RESEND_FOR_S`.
* The leader (:class:`ForwardLedger`) remembers, for its current term, what each
  sender's forwards became: pending (queued in pysyncobj) or answered (the log
  index and term it was given). A copy of a pending command is dropped; a copy of
  an answered one gets the same answer again (the follower then waits for that
  index as usual); a command it never saw is appended. Whatever it cannot vouch
  for -- another term, a sender it has no record of, a request id below the
  sender's ``low`` -- it never appends again: a copy is dropped (the caller keeps
  waiting, as before), and a first send stamped with another term is answered
  ``LEADER_CHANGED`` (outcome unknown), because a copy of it may have been
  appended in that term.

Why that is enough: the leader's record is per term, and a follower stamps a
forward with the term of the leader it sent it to, so a command appended in this
term is in this term's record unless it was evicted, and eviction only ever
raises ``low`` past it. ``low`` only rises past a request once the follower has
its answer or has given up sending it, so nothing it forgets can come back as
new. Request ids reach pysyncobj as ``(nonce, id)`` so that the leader's answer
finds its record; the follower gets its own id back.

No I/O here: :class:`consensus.raft.transport.HeldTransport` feeds both from the
tick thread.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Container
from dataclasses import dataclass, field
from typing import Any

from pysyncobj.config import FAIL_REASON

RESEND_AFTER_S = 0.5
"""A forward unanswered this long is sent again (a leader answers within a tick or
two; a copy costs one frame and is answered from the record)."""

RESEND_FOR_S = 8.0
"""How long after its first send a forward is sent again; under the node's request
timeout (10 s), after which its caller has stopped waiting."""

KEEP_ANSWERS = 4096
"""Answers a leader keeps per sender; the oldest go first (raising ``low``)."""

KEEP_SENDERS = 16
"""Sender processes a leader keeps a record of per term; the least recently heard go
first, and from then on their copies are dropped and their first sends pass
unrecorded, as pysyncobj's own forwards do."""


@dataclass
class _Forward:
    leader: str
    term: int
    first: float
    last: float
    message: dict[str, Any]


class ForwardOutbox:
    """Follower: the forwards not answered yet, by pysyncobj request id."""

    def __init__(self, nonce: int) -> None:
        self.nonce = nonce
        self._open: dict[int, _Forward] = {}  # request ids only grow: oldest first
        self.resent = 0

    def __len__(self) -> int:
        return len(self._open)

    def _low(self) -> int:
        return next(iter(self._open), 0)

    def stamp(
        self, request_id: int, leader: str, term: int, message: dict[str, Any], now: float
    ) -> dict[str, Any]:
        """Record a forward to ``leader`` at ``term``; returns the message to send."""
        self._open[request_id] = _Forward(leader, term, now, now, message)
        return {**message, "fwd": (self.nonce, term, self._low())}

    def answered(self, request_id: Any) -> None:
        """The leader answered (or the forward was refused before it left)."""
        self._open.pop(request_id, None)

    def due(
        self, now: float, waiting: Container[int], leader: str | None, term: int
    ) -> list[tuple[str, dict[str, Any]]]:
        """The copies to send now, as ``(leader, message)``. Forgets forwards pysyncobj
        no longer waits for (a change of leader answered them), those sent first more
        than :data:`RESEND_FOR_S` ago, and those of another term."""
        for request_id in [
            r
            for r, f in self._open.items()
            if r not in waiting or now - f.first > RESEND_FOR_S or f.term != term
        ]:
            del self._open[request_id]
        copies = []
        for f in self._open.values():
            if f.leader == leader and now - f.last >= RESEND_AFTER_S:
                f.last = now
                copies.append((f.leader, {**f.message, "fwd": (self.nonce, f.term, self._low()),
                                          "resend": True}))  # fmt: skip
        self.resent += len(copies)
        return copies


@dataclass
class _Sender:
    low: int = 0
    pending: set[int] = field(default_factory=set)
    answers: OrderedDict[int, tuple[int, int]] = field(default_factory=OrderedDict)

    def raise_low(self, low: int) -> None:
        if low <= self.low:
            return
        self.low = low
        while self.answers and next(iter(self.answers)) < low:
            self.answers.popitem(last=False)

    def answer(self, request_id: int, log_idx: int, log_term: int) -> None:
        self.pending.discard(request_id)
        if request_id < self.low:
            return
        self.answers[request_id] = (log_idx, log_term)
        if len(self.answers) > KEEP_ANSWERS:
            oldest, _ = self.answers.popitem(last=False)
            self.low = max(self.low, oldest + 1)  # a copy of it is never appended again


PASS, ANSWER, DROP = "pass", "answer", "drop"


class ForwardLedger:
    """Leader: what the forwards it took in its current term became."""

    def __init__(self) -> None:
        self._term = -1
        self._senders: OrderedDict[tuple[str, int], _Sender] = OrderedDict()
        self._retired: set[tuple[str, int]] = set()  # senders whose record was let go
        self.copies_answered = 0
        self.copies_dropped = 0

    def take(
        self, peer: str, message: dict[str, Any], term: int, leading: bool
    ) -> tuple[str, dict[str, Any] | None]:
        """An ``apply_command`` from ``peer``: ``(PASS, message for pysyncobj)``,
        ``(ANSWER, response to send back)`` or ``(DROP, None)``."""
        stamp, resend = _stamp(message.get("fwd")), bool(message.get("resend"))
        request_id = message.get("request_id")
        if stamp is None or not isinstance(request_id, int):
            if resend:  # a copy with no stamp to check: never append it
                self.copies_dropped += 1
                return DROP, None
            return PASS, message  # an older build's forward, or one nobody waits for
        nonce, sent_term, low = stamp
        if not leading:
            if resend:  # pysyncobj would answer NOT_LEADER: not true of the first send
                self.copies_dropped += 1
                return DROP, None
            return PASS, message
        if term != self._term:
            self._term, self._senders, self._retired = term, OrderedDict(), set()
        if sent_term != term:
            if resend:
                self.copies_dropped += 1
                return DROP, None
            return ANSWER, _refusal(request_id, FAIL_REASON.LEADER_CHANGED)
        key = (peer, nonce)
        sender = self._senders.get(key)
        if sender is None:
            if resend:  # no record of this process this term: cannot tell a copy
                self.copies_dropped += 1
                return DROP, None
            if key in self._retired:  # as pysyncobj would; its copies are dropped
                return PASS, message
            sender = self._senders[key] = _Sender(low=low)
            while len(self._senders) > KEEP_SENDERS:
                self._retired.add(self._senders.popitem(last=False)[0])
        else:
            self._senders.move_to_end(key)
            sender.raise_low(low)
        if request_id < sender.low or request_id in sender.pending:
            self.copies_dropped += 1
            return DROP, None
        answer = sender.answers.get(request_id)
        if answer is not None:
            self.copies_answered += 1
            return ANSWER, {
                "type": "apply_command_response",
                "request_id": request_id,
                "log_idx": answer[0],
                "log_term": answer[1],
            }
        sender.pending.add(request_id)
        return PASS, {**message, "request_id": (nonce, request_id)}

    def sent(self, peer: str, message: dict[str, Any]) -> dict[str, Any]:
        """pysyncobj's ``apply_command_response`` to ``peer``, about to leave: note
        what the forward became and give the sender its own request id back."""
        stamped = message.get("request_id")
        if not isinstance(stamped, tuple):
            return message
        nonce, request_id = stamped
        sender = self._senders.get((peer, nonce))
        if sender is not None:
            if "log_idx" in message:
                sender.answer(request_id, message["log_idx"], message["log_term"])
            else:  # refused: not appended, so a copy may still be
                sender.pending.discard(request_id)
        return {**message, "request_id": request_id}


def _stamp(stamp: Any) -> tuple[int, int, int] | None:
    """A forward's ``(nonce, term, low)``, or None if it carries none (or a bad one)."""
    if (
        isinstance(stamp, tuple)
        and len(stamp) == 3
        and all(isinstance(x, int) and not isinstance(x, bool) for x in stamp)
    ):
        return stamp[0], stamp[1], stamp[2]
    return None


def _refusal(request_id: int, reason: int) -> dict[str, Any]:
    return {"type": "apply_command_response", "request_id": request_id, "error": reason}
