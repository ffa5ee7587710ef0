"""The ReadIndex protocol logic (consensus/raft/reads.py) without threads or
sockets: a stand-in transport that counts confirmations, and a clock in the view."""

from __future__ import annotations

from collections import deque
from dataclasses import replace
from typing import Any

from consensus.errors import NotLeaderError
from consensus.raft.reads import RaftView, ReadIndex


class FakeTransport:
    def __init__(self, cluster: int = 3) -> None:
        self.read_requests: deque[tuple[str, int]] = deque()
        self.read_replies: deque[tuple[int, int | None]] = deque()
        self.round = 0
        self.confirmed: dict[str, int] = {}
        self.cluster = cluster
        self.sent: list[tuple[str, dict[str, Any]]] = []

    def new_read_round(self) -> int:
        self.round += 1
        return self.round

    def confirms(self, read_round: int) -> bool:
        votes = 1 + sum(1 for r in self.confirmed.values() if r >= read_round)
        return votes * 2 > self.cluster

    def reset_reads(self) -> None:
        self.confirmed.clear()

    def send_read(self, peer_id: str, message: dict[str, Any]) -> bool:
        self.sent.append((peer_id, message))
        return True


LEADER = RaftView(leader=True, term=4, commit=10, applied=10, own_term_committed=True,
                  leader_id="n1", now=0.0)  # fmt: skip
FOLLOWER = RaftView(leader=False, term=4, commit=10, applied=10, own_term_committed=False,
                    leader_id="n1", now=0.0)  # fmt: skip


class Answers(list[tuple[int | None, Any]]):
    def __call__(self, index: int | None, error: Any) -> None:
        self.append((index, error))


def test_a_round_is_answered_after_a_majority_echoes_it_and_the_index_is_applied() -> None:
    reads, t, got = ReadIndex(timeout_s=1.0), FakeTransport(), Answers()
    reads.tick(LEADER, t)  # become leader
    reads.incoming.append(got)
    assert reads.tick(LEADER, t) is True  # a new round: heartbeat now
    t.confirmed["n2"] = 0  # an echo of an older round confirms nothing
    reads.tick(LEADER, t)
    assert got == []
    t.confirmed["n2"] = 1
    reads.tick(replace(LEADER, commit=12, applied=9), t)  # confirmed, not yet applied
    assert got == []
    reads.tick(replace(LEADER, commit=12, applied=10), t)
    assert got == [(10, None)], "the read index is the commit index when the round began"


def test_a_new_leader_waits_for_its_own_term_to_commit() -> None:
    reads, t, got = ReadIndex(timeout_s=1.0), FakeTransport(), Answers()
    early = replace(LEADER, own_term_committed=False)
    reads.incoming.append(got)
    assert reads.tick(early, t) is False and t.round == 0
    assert reads.tick(LEADER, t) is True and t.round == 1
    t.confirmed["n3"] = 1
    reads.tick(LEADER, t)
    assert got == [(10, None)]


def test_losing_leadership_fails_local_reads_and_refuses_remote_ones() -> None:
    reads, t, got = ReadIndex(timeout_s=1.0), FakeTransport(), Answers()
    reads.tick(LEADER, t)
    reads.incoming.append(got)
    t.read_requests.append(("n2", 7))
    reads.tick(LEADER, t)
    reads.tick(replace(LEADER, leader=False, term=5, leader_id="n3"), t)
    assert len(got) == 1 and got[0][0] is None and isinstance(got[0][1], NotLeaderError)
    assert t.sent == [("n2", {"type": "read_index_reply", "id": 7})]  # refused: no index


def test_a_round_that_is_never_confirmed_fails_after_the_timeout() -> None:
    reads, t, got = ReadIndex(timeout_s=1.0), FakeTransport(), Answers()
    reads.tick(LEADER, t)
    reads.incoming.append(got)
    reads.tick(LEADER, t)
    reads.tick(replace(LEADER, now=0.9), t)
    assert got == []
    reads.tick(replace(LEADER, now=1.0), t)
    assert got[0][0] is None and isinstance(got[0][1], NotLeaderError)


def test_a_follower_reads_once_it_has_applied_the_leaders_index() -> None:
    reads, t, got = ReadIndex(timeout_s=1.0), FakeTransport(), Answers()
    reads.incoming.append(got)
    reads.incoming.append(got)  # two readers, one request
    reads.tick(FOLLOWER, t)
    ((peer, ask),) = t.sent
    assert peer == "n1" and ask["type"] == "read_index"
    t.read_replies.append((ask["id"] - 1, 15))  # an answer to another request
    t.read_replies.append((ask["id"], 15))
    reads.tick(replace(FOLLOWER, applied=14), t)
    assert got == []
    reads.tick(replace(FOLLOWER, applied=15), t)
    assert got == [(15, None), (15, None)]


def test_a_follower_read_fails_when_refused_or_without_a_leader() -> None:
    reads, t, got = ReadIndex(timeout_s=1.0), FakeTransport(), Answers()
    reads.incoming.append(got)
    reads.tick(replace(FOLLOWER, leader_id=""), t)
    assert t.sent == [] and isinstance(got[0][1], NotLeaderError)
    reads.incoming.append(got)
    reads.tick(FOLLOWER, t)
    t.read_replies.append((t.sent[-1][1]["id"], None))
    reads.tick(FOLLOWER, t)
    assert len(got) == 2 and isinstance(got[1][1], NotLeaderError)


def test_request_ids_do_not_restart_at_the_same_number() -> None:
    ids = set()
    for _ in range(5):
        reads, t = ReadIndex(timeout_s=1.0), FakeTransport()
        reads.incoming.append(Answers())
        reads.tick(FOLLOWER, t)
        ids.add(t.sent[0][1]["id"])
    assert len(ids) == 5, "a reply to an earlier process could match a new request"


def test_reads_queued_before_the_terms_first_commit_time_out() -> None:
    reads, t, got = ReadIndex(timeout_s=1.0), FakeTransport(), Answers()
    early = replace(LEADER, own_term_committed=False)
    reads.incoming.append(got)
    reads.tick(early, t)
    reads.tick(replace(early, now=0.9), t)
    assert got == []
    reads.tick(replace(early, now=1.0), t)
    assert got[0][0] is None and isinstance(got[0][1], NotLeaderError)


def test_a_single_node_confirms_alone() -> None:
    reads, t, got = ReadIndex(timeout_s=1.0), FakeTransport(cluster=1), Answers()
    reads.incoming.append(got)
    reads.tick(LEADER, t)
    assert got == [(10, None)]
