"""The rules of consensus/raft/forwarding.py, without threads or a network: a
follower sends an unanswered forward again, and a leader appends each one once."""

from __future__ import annotations

from typing import Any

from pysyncobj.config import FAIL_REASON

from consensus.raft import forwarding
from consensus.raft.forwarding import (
    ANSWER,
    DROP,
    PASS,
    RESEND_AFTER_S,
    RESEND_FOR_S,
    ForwardLedger,
    ForwardOutbox,
)

TERM = 7


def forward(request_id: int, *, nonce: int = 1, term: int = TERM, low: int | None = None,
            resend: bool = False) -> dict[str, Any]:  # fmt: skip
    message: dict[str, Any] = {
        "type": "apply_command",
        "command": b"cmd",
        "request_id": request_id,
        "fwd": (nonce, term, request_id if low is None else low),
    }
    if resend:
        message["resend"] = True
    return message


def answer_of(ledger: ForwardLedger, peer: str, passed: dict[str, Any], idx: int,
              term: int = TERM) -> dict[str, Any]:  # fmt: skip
    """pysyncobj appended ``passed`` at ``idx``: its answer as it leaves the leader."""
    return ledger.sent(
        peer,
        {"type": "apply_command_response", "request_id": passed["request_id"], "log_idx": idx,
         "log_term": term},
    )  # fmt: skip


def refusal(request_id: int, reason: int, nonce: int = 1) -> dict[str, Any]:
    return {"type": "apply_command_response", "request_id": request_id, "nonce": nonce,
            "error": reason}  # fmt: skip


def test_the_leader_appends_a_forward_once_and_answers_its_copies_alike() -> None:
    ledger = ForwardLedger()
    verdict, passed = ledger.take("n2", forward(5), TERM, leading=True)
    assert verdict == PASS and passed is not None
    assert passed["request_id"] == (1, 5, TERM)  # the answer finds its record

    assert ledger.take("n2", forward(5, resend=True), TERM, leading=True) == (DROP, None)
    answer = answer_of(ledger, "n2", passed, 40)
    assert answer["request_id"] == 5 and answer["nonce"] == 1  # its own id, and whose

    verdict, again = ledger.take("n2", forward(5, resend=True), TERM, leading=True)
    assert verdict == ANSWER
    assert again == {"type": "apply_command_response", "request_id": 5, "nonce": 1,
                     "log_idx": 40, "log_term": TERM}  # fmt: skip
    # the late first send, after its copy was answered: not appended again
    assert ledger.take("n2", forward(5), TERM, leading=True)[0] == ANSWER
    assert ledger.copies_answered == 2 and ledger.copies_dropped == 1


def test_a_forward_the_leader_never_took_is_appended_whichever_send_comes_first() -> None:
    ledger = ForwardLedger()
    assert ledger.take("n2", forward(5), TERM, leading=True)[0] == PASS
    verdict, passed = ledger.take("n2", forward(6, low=5, resend=True), TERM, leading=True)
    assert verdict == PASS and passed is not None and passed["request_id"] == (1, 6, TERM)
    # the first forward of a sender it never heard from this term was lost: its copy
    verdict, passed = ledger.take("n3", forward(1, nonce=3, resend=True), TERM, leading=True)
    assert verdict == PASS and passed is not None and passed["request_id"] == (3, 1, TERM)


def test_a_refused_forward_is_refused_alike_when_a_copy_comes() -> None:
    ledger = ForwardLedger()
    _, passed = ledger.take("n2", forward(5), TERM, leading=True)
    assert passed is not None
    answer = ledger.sent("n2", {"type": "apply_command_response", "request_id": (1, 5, TERM),
                                "error": FAIL_REASON.QUEUE_FULL})  # fmt: skip
    assert answer == refusal(5, FAIL_REASON.QUEUE_FULL)
    # a copy sent before the refusal reached the follower, which told its caller
    # "not applied": it must not be appended now
    verdict, again = ledger.take("n2", forward(5, resend=True), TERM, leading=True)
    assert verdict == ANSWER and again == refusal(5, FAIL_REASON.QUEUE_FULL)


def test_a_node_that_led_the_term_refuses_what_it_never_took() -> None:
    ledger = ForwardLedger()
    ledger.leading(TERM)
    # it has stepped down; a follower that has not heard yet forwards to it
    verdict, answer = ledger.take("n2", forward(5), TERM + 1, leading=False)
    assert verdict == ANSWER and answer == refusal(5, FAIL_REASON.NOT_LEADER)
    # leading again in a later term, a copy of it gets the same refusal: the follower
    # may have told its caller "not applied"
    verdict, again = ledger.take("n2", forward(5, resend=True), TERM + 2, leading=True)
    assert verdict == ANSWER and again == refusal(5, FAIL_REASON.NOT_LEADER)


def test_a_node_that_stepped_down_never_passes_a_forward_it_may_have_appended() -> None:
    ledger = ForwardLedger()
    _, passed = ledger.take("n2", forward(5, resend=True), TERM, leading=True)  # the copy won
    assert passed is not None
    answer_of(ledger, "n2", passed, 40)
    # the late first send reaches it after it stepped down: the answer, not NOT_LEADER
    verdict, answer = ledger.take("n2", forward(5), TERM + 1, leading=False)
    assert verdict == ANSWER and answer is not None and answer["log_idx"] == 40
    # still queued in pysyncobj when it stepped down: pysyncobj will answer it
    ledger.take("n2", forward(6, low=6), TERM, leading=True)
    assert ledger.take("n2", forward(6, low=6), TERM + 1, leading=False) == (DROP, None)


def test_a_leader_reelected_appends_what_it_never_took_in_the_earlier_term() -> None:
    ledger = ForwardLedger()
    _, passed = ledger.take("n2", forward(5), TERM, leading=True)
    assert passed is not None
    answer_of(ledger, "n2", passed, 40)
    # leading again in TERM + 1: forwards stamped TERM are looked up in TERM's record
    assert ledger.take("n2", forward(5, resend=True), TERM + 1, leading=True)[0] == ANSWER
    verdict, passed = ledger.take("n2", forward(6), TERM + 1, leading=True)
    assert verdict == PASS and passed is not None and passed["request_id"] == (1, 6, TERM)
    assert ledger.take("n2", forward(6, resend=True), TERM + 1, leading=True) == (DROP, None)


def test_what_the_leader_cannot_vouch_for_is_never_appended_again() -> None:
    ledger = ForwardLedger()
    assert ledger.take("n2", forward(5), TERM, leading=True)[0] == PASS
    # stamped with a term this process did not lead (its previous one may have)
    assert ledger.take("n2", forward(5, term=TERM - 1, resend=True), TERM, leading=True) == (
        DROP,
        None,
    )
    verdict, answer = ledger.take("n2", forward(6, term=TERM - 1), TERM, leading=True)
    assert verdict == ANSWER and answer == refusal(6, FAIL_REASON.LEADER_CHANGED)
    assert ledger.take("n2", forward(7, term=TERM - 1), TERM, leading=False)[0] == ANSWER
    # a copy without a stamp; a request id pysyncobj never makes
    unstamped = {"type": "apply_command", "command": b"c", "request_id": 3, "resend": True}
    assert ledger.take("n2", unstamped, TERM, leading=True) == (DROP, None)
    odd = {"type": "apply_command", "command": b"c", "request_id": (1, 2, 3)}
    assert ledger.take("n2", odd, TERM, leading=True) == (DROP, None)
    # an older build's forward (no stamp) goes to pysyncobj as before
    legacy = {"type": "apply_command", "command": b"c", "request_id": 3}
    assert ledger.take("n2", legacy, TERM, leading=True) == (PASS, legacy)


def test_the_oldest_term_records_go(monkeypatch: Any) -> None:
    monkeypatch.setattr(forwarding, "KEEP_TERMS", 2)
    ledger = ForwardLedger()
    for term in (1, 2, 3):
        ledger.leading(term)
    assert ledger.take("n2", forward(5, term=1, resend=True), 3, leading=True) == (DROP, None)
    assert ledger.take("n2", forward(5, term=2, resend=True), 3, leading=True)[0] == PASS


def test_forwards_below_the_senders_low_are_dropped_and_forgotten() -> None:
    ledger = ForwardLedger()
    for request_id in (5, 6):
        _, passed = ledger.take("n2", forward(request_id, low=5), TERM, leading=True)
        assert passed is not None
        answer_of(ledger, "n2", passed, 35 + request_id)
    # the follower has both answers: its next forward says so
    assert ledger.take("n2", forward(7), TERM, leading=True)[0] == PASS
    assert ledger.take("n2", forward(6, resend=True), TERM, leading=True) == (DROP, None)
    assert ledger.take("n2", forward(5), TERM, leading=True) == (DROP, None)  # a late first send
    assert not ledger._terms[TERM].senders[("n2", 1)].answers


def test_an_answer_the_leader_lets_go_of_raises_the_low(monkeypatch: Any) -> None:
    monkeypatch.setattr(forwarding, "KEEP_ANSWERS", 2)
    ledger = ForwardLedger()
    for request_id in (1, 2, 3):
        _, passed = ledger.take("n2", forward(request_id, low=1), TERM, leading=True)
        assert passed is not None
        answer_of(ledger, "n2", passed, 10 + request_id)
    assert ledger.take("n2", forward(1, low=1, resend=True), TERM, leading=True) == (DROP, None)
    assert ledger.take("n2", forward(2, low=1, resend=True), TERM, leading=True)[0] == ANSWER


def test_a_sender_let_go_of_is_never_deduplicated_again(monkeypatch: Any) -> None:
    monkeypatch.setattr(forwarding, "KEEP_SENDERS", 1)
    ledger = ForwardLedger()
    assert ledger.take("n2", forward(5, nonce=1), TERM, leading=True)[0] == PASS
    assert ledger.take("n2", forward(1, nonce=2), TERM, leading=True)[0] == PASS  # restarted
    assert ledger.take("n2", forward(5, nonce=1, resend=True), TERM, leading=True) == (DROP, None)
    # even a first send: a copy of it may have been appended before the record went
    verdict, answer = ledger.take("n2", forward(6, nonce=1), TERM, leading=True)
    assert verdict == ANSWER and answer == refusal(6, FAIL_REASON.LEADER_CHANGED)
    verdict, answer = ledger.take("n2", forward(7, nonce=1), TERM + 1, leading=True)
    assert verdict == ANSWER and answer == refusal(7, FAIL_REASON.LEADER_CHANGED)


def test_a_restarted_follower_is_another_sender() -> None:
    ledger = ForwardLedger()
    _, passed = ledger.take("n2", forward(1, nonce=1), TERM, leading=True)
    assert passed is not None
    answer_of(ledger, "n2", passed, 20)
    verdict, fresh = ledger.take("n2", forward(1, nonce=2), TERM, leading=True)
    assert verdict == PASS and fresh is not None and fresh["request_id"] == (2, 1, TERM)


def test_the_follower_sends_an_unanswered_forward_again_to_the_same_leader() -> None:
    outbox = ForwardOutbox(nonce=9)
    message = {"type": "apply_command", "command": b"c", "request_id": 4}
    stamped = outbox.stamp(4, "n1", TERM, message, now=100.0)
    assert stamped["fwd"] == (9, TERM, 4) and "resend" not in stamped
    outbox.stamp(5, "n1", TERM, {**message, "request_id": 5}, now=100.1)
    waiting = {4, 5}
    assert outbox.due(100.0 + RESEND_AFTER_S / 2, waiting, "n1", TERM) == []
    copies = outbox.due(100.0 + RESEND_AFTER_S, waiting, "n1", TERM)
    assert [(leader, m["request_id"], m["fwd"], m["resend"]) for leader, m in copies] == [
        ("n1", 4, (9, TERM, 4), True)
    ]
    outbox.answered(4)
    copies = outbox.due(100.1 + RESEND_AFTER_S, waiting, "n1", TERM)
    assert [m["fwd"] for _, m in copies] == [(9, TERM, 5)]  # the low moved on
    assert outbox.due(100.1 + 2 * RESEND_AFTER_S, waiting, "n3", TERM) == []  # another leader
    assert outbox.resent == 2


def test_the_follower_forgets_forwards_it_no_longer_waits_for() -> None:
    outbox = ForwardOutbox(nonce=9)
    for request_id in (1, 2):
        outbox.stamp(request_id, "n1", TERM, {"request_id": request_id}, now=0.0)
    outbox.stamp(3, "n1", TERM, {"request_id": 3}, now=1.0)
    outbox.stamp(4, "n1", TERM - 1, {"request_id": 4}, now=RESEND_FOR_S)
    # 1: pysyncobj gave up on it (the leader changed); 2: first sent too long ago;
    # 4: another term. 3 goes again.
    copies = outbox.due(RESEND_FOR_S + 0.01, {2, 3, 4}, "n1", TERM)
    assert [m["request_id"] for _, m in copies] == [3] and len(outbox) == 1
