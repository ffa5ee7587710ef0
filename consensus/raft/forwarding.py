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
* The leader (:class:`ForwardLedger`) keeps a record of what became of the forwards
  stamped with each term it led (the last few): pending (queued in pysyncobj) or
  answered (the log index and term it was given, or a refusal). A copy of a pending
  command is dropped; one with an answer gets the same answer again (the follower
  then waits for that index as usual); one it never saw is appended if it leads,
  and refused ``NOT_LEADER`` if not -- true, and recorded, so a later copy is
  refused alike. Answers carry the nonce, and a follower ignores those meant for
  its previous process (whose request ids it reuses).
* What it cannot vouch for is never appended again: a forward stamped with a term
  it has no record of (this process did not lead it; its previous one may have), a
  sender whose record it let go of, a request id below the sender's ``low``. A copy
  is dropped (the caller keeps waiting, as before); a first send is answered
  ``LEADER_CHANGED`` (outcome unknown).

Why that is enough: a follower stamps a forward with the term of the leader it
sends it to, and copies carry the first send's stamp; so everything this process did
with a command stamped ``T`` is in its record of ``T``, which starts when it leads
``T`` -- before any forward stamped ``T`` can arrive. A process restarted cannot lead
a term it led before (winning an election moves the term). Eviction only ever
raises ``low`` or drops a whole record, both answered as unknown. ``low`` rises past
a request only once the follower has its answer or has given up sending it, so
nothing the leader forgets can come back as new. Request ids reach pysyncobj as
``(nonce, id, term)`` so that its answer finds the record; the follower gets its
own id back.

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
first, and from then on, in that term, their copies are dropped and their first
sends answered ``LEADER_CHANGED`` (a copy of one may have been appended)."""


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
        if isinstance(request_id, int):
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
    # request id -> what its first send became: {"log_idx", "log_term"} or {"error"}
    answers: OrderedDict[int, dict[str, Any]] = field(default_factory=OrderedDict)

    def raise_low(self, low: int) -> None:
        if low <= self.low:
            return
        self.low = low
        while self.answers and next(iter(self.answers)) < low:
            self.answers.popitem(last=False)

    def answer(self, request_id: int, outcome: dict[str, Any]) -> None:
        self.pending.discard(request_id)
        if request_id < self.low:
            return
        self.answers[request_id] = outcome
        if len(self.answers) > KEEP_ANSWERS:
            oldest, _ = self.answers.popitem(last=False)
            self.low = max(self.low, oldest + 1)  # a copy of it is never appended again


@dataclass
class _Term:
    """What became of the forwards stamped with one term that this process led."""

    senders: OrderedDict[tuple[str, int], _Sender] = field(default_factory=OrderedDict)
    retired: set[tuple[str, int]] = field(default_factory=set)  # senders let go of


PASS, ANSWER, DROP = "pass", "answer", "drop"

KEEP_TERMS = 4
"""Terms a leader keeps its record of; forwards stamped with an older one are answered
"outcome unknown" (first sends) or dropped (copies)."""


class ForwardLedger:
    """Leader (and a node that led): what the forwards it took became, by the term
    they were stamped with. A record starts when this process leads its term, so it
    holds everything this process did with forwards stamped with that term: a
    follower stamps a forward with the term of the leader it sends it to."""

    def __init__(self) -> None:
        self._terms: dict[int, _Term] = {}
        self.copies_answered = 0
        self.copies_dropped = 0

    def leading(self, term: int) -> None:
        """This process leads ``term``: start its record (tick thread, every tick)."""
        if term in self._terms:
            return
        self._terms[term] = _Term()
        while len(self._terms) > KEEP_TERMS:
            del self._terms[min(self._terms)]

    def take(
        self, peer: str, message: dict[str, Any], term: int, leading: bool
    ) -> tuple[str, dict[str, Any] | None]:
        """An ``apply_command`` from ``peer``: ``(PASS, message for pysyncobj)``,
        ``(ANSWER, response to send back)`` or ``(DROP, None)``."""
        stamp, resend = _stamp(message.get("fwd")), bool(message.get("resend"))
        request_id = message.get("request_id")
        if stamp is None or not isinstance(request_id, int) or isinstance(request_id, bool):
            if resend or ("request_id" in message and not isinstance(request_id, int)):
                self.copies_dropped += 1  # a copy with no stamp to check, or malformed
                return DROP, None
            return PASS, message  # an older build's forward, or one nobody waits for
        nonce, stamped, low = stamp
        if leading:
            self.leading(term)
        record = self._terms.get(stamped)
        key = (peer, nonce)
        if record is None or key in record.retired:
            # This process did not lead that term (its previous one may have), or let
            # this sender's record go: whether a copy was appended is unknown.
            if resend:
                self.copies_dropped += 1
                return DROP, None
            return ANSWER, _response(request_id, nonce, {"error": FAIL_REASON.LEADER_CHANGED})
        sender = record.senders.get(key)
        if sender is None:
            sender = record.senders[key] = _Sender(low=low)
            while len(record.senders) > KEEP_SENDERS:
                record.retired.add(record.senders.popitem(last=False)[0])
        else:
            record.senders.move_to_end(key)
            sender.raise_low(low)
        if request_id < sender.low or request_id in sender.pending:
            self.copies_dropped += 1
            return DROP, None
        outcome = sender.answers.get(request_id)
        if outcome is not None:
            self.copies_answered += 1
            return ANSWER, _response(request_id, nonce, outcome)
        if not leading:  # never taken here: definitely not appended by this process
            refused = {"error": FAIL_REASON.NOT_LEADER}
            sender.answer(request_id, refused)
            return ANSWER, _response(request_id, nonce, refused)
        sender.pending.add(request_id)
        return PASS, {**message, "request_id": (nonce, request_id, stamped)}

    def sent(self, peer: str, message: dict[str, Any]) -> dict[str, Any]:
        """pysyncobj's ``apply_command_response`` to ``peer``, about to leave: record
        what the forward became (an index, or a refusal: copies get the same) and give
        the sender its own request id back, with its nonce."""
        stamp = _stamp(message.get("request_id"))
        if stamp is None:
            return message
        nonce, request_id, stamped = stamp
        record = self._terms.get(stamped)
        sender = None if record is None else record.senders.get((peer, nonce))
        if "log_idx" in message:
            outcome = {"log_idx": message["log_idx"], "log_term": message["log_term"]}
        else:
            outcome = {"error": message.get("error")}
        if sender is not None:
            sender.answer(request_id, outcome)
        return _response(request_id, nonce, outcome)


def _stamp(stamp: Any) -> tuple[int, int, int] | None:
    """Three ints (a forward's ``(nonce, term, low)``, or a request id as the leader
    hands it to pysyncobj), or None."""
    if (
        isinstance(stamp, tuple)
        and len(stamp) == 3
        and all(isinstance(x, int) and not isinstance(x, bool) for x in stamp)
    ):
        return stamp[0], stamp[1], stamp[2]
    return None


def _response(request_id: int, nonce: int, outcome: dict[str, Any]) -> dict[str, Any]:
    return {"type": "apply_command_response", "request_id": request_id, "nonce": nonce, **outcome}
