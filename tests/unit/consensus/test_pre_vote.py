"""Pre-vote at the pysyncobj seam (consensus.raft.transport): the grant rule, and the
gate that holds a campaign back until a majority would vote. No threads, no sockets:
a stand-in for pysyncobj's state and a list of sent frames."""

from __future__ import annotations

import pickle
from typing import Any

import pytest
from pysyncobj.node import Node

from consensus.raft.backend import known_leader, next_tick_in
from consensus.raft.transport import HeldTransport, grant_pre_vote

FOLLOWER, LEADER = 0, 2


@pytest.mark.parametrize(
    ("leader_recent", "term", "last", "asked_term", "asked_last", "granted"),
    [
        (False, 3, (3, 10), 4, (3, 10), True),  # leader gone, same log: yes
        (True, 3, (3, 10), 4, (3, 10), False),  # a leader was heard recently: no
        (False, 3, (3, 10), 3, (3, 10), False),  # the asked term is not newer: no
        (False, 3, (3, 10), 4, (3, 9), False),  # the asker's log is shorter: no
        (False, 3, (3, 10), 4, (2, 50), False),  # the asker's last term is older: no
        (False, 3, (3, 10), 4, (4, 1), True),  # a newer last term wins over length
        (False, 3, (3, 10), 9, (3, 11), True),
    ],
)
def test_grant_rule(
    leader_recent: bool,
    term: int,
    last: tuple[int, int],
    asked_term: int,
    asked_last: tuple[int, int],
    granted: bool,
) -> None:
    assert (
        grant_pre_vote(
            leader_recent=leader_recent,
            term=term,
            last=last,
            asked_term=asked_term,
            asked_last=asked_last,
        )
        is granted
    )


class FakeRaft:
    """The pieces of pysyncobj's SyncObj state the gate reads and writes."""

    def __init__(self) -> None:
        self._SyncObj__raftState = FOLLOWER
        self._SyncObj__raftElectionDeadline = 0.0
        self.raftCurrentTerm = 5
        self.connected = True

    def _SyncObj__connectedToAnyone(self) -> bool:
        return self.connected

    def _SyncObj__generateRaftTimeout(self) -> float:
        return 0.2

    def _SyncObj__getCurrentLogIndex(self) -> int:
        return 40

    def _SyncObj__getCurrentLogTerm(self) -> int:
        return 5

    def _isLeader(self) -> bool:
        return bool(self._SyncObj__raftState == LEADER)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make(raft: FakeRaft, clock: Clock) -> tuple[HeldTransport, list[tuple[str, Any]]]:
    sent: list[tuple[str, Any]] = []
    transport = HeldTransport(
        raft,
        Node("n1"),
        [Node("n2"), Node("n3")],
        sender=lambda peer, frames: sent.extend((peer, pickle.loads(f)) for f in frames),
        wake=lambda: None,
        sticky_s=0.15,
        pre_vote=True,
        clock=clock,
    )
    return transport, sent


def reply(transport: HeldTransport, peer: str, round_: int, granted: bool) -> None:
    frame = pickle.dumps({"type": "pre_vote_reply", "round": round_, "granted": granted})
    transport.deliver(peer, [frame])
    transport.drain()


def test_an_expired_timer_asks_first_and_campaigns_only_after_a_majority() -> None:
    raft, clock = FakeRaft(), Clock()
    transport, sent = make(raft, clock)
    transport.gate_election()
    # No campaign yet: the timer was pushed out and the peers were asked, term unchanged.
    assert raft._SyncObj__raftElectionDeadline == pytest.approx(100.2)
    assert raft.raftCurrentTerm == 5
    transport.flush()
    asks = [m for _, m in sent if m["type"] == "pre_vote"]
    assert sorted(p for p, m in sent) == ["n2", "n3"]
    assert asks[0]["term"] == 6 and (asks[0]["last_log_term"], asks[0]["last_log_index"]) == (5, 40)
    reply(transport, "n2", asks[0]["round"], granted=False)
    assert raft._SyncObj__raftElectionDeadline == pytest.approx(100.2)  # 1 of 3: not yet
    reply(transport, "n3", asks[0]["round"] - 1, granted=True)  # a stale round
    assert raft._SyncObj__raftElectionDeadline == pytest.approx(100.2)
    reply(transport, "n3", asks[0]["round"], granted=True)  # self + n3 = majority
    assert raft._SyncObj__raftElectionDeadline == 0.0
    sent.clear()
    transport.gate_election()  # won: leaves the expired timer for doTick to campaign
    assert raft._SyncObj__raftElectionDeadline == 0.0
    transport.flush()
    assert sent == []
    assert (transport.pre_votes_started, transport.pre_votes_won) == (1, 1)


def test_a_node_that_hears_a_leader_refuses_and_changes_nothing() -> None:
    raft, clock = FakeRaft(), Clock()
    transport, sent = make(raft, clock)
    heartbeat = {"type": "append_entries", "term": 5, "entries": [], "commit_index": 40}
    transport._admit(Node("n2"), heartbeat)  # the leader n2 was just heard
    ask = {"type": "pre_vote", "round": 7, "term": 6, "last_log_index": 99, "last_log_term": 5}
    transport.deliver("n3", [pickle.dumps(ask)])
    transport.drain()
    transport.flush()
    assert sent == [("n3", {"type": "pre_vote_reply", "round": 7, "granted": False})]
    assert raft.raftCurrentTerm == 5
    clock.now += 1.0  # the leader has been silent for longer than the sticky window
    sent.clear()
    transport.deliver("n3", [pickle.dumps(ask)])
    transport.drain()
    transport.flush()
    assert sent == [("n3", {"type": "pre_vote_reply", "round": 7, "granted": True})]


def test_leaders_and_transfers_bypass_the_gate() -> None:
    raft, clock = FakeRaft(), Clock()
    transport, sent = make(raft, clock)
    raft._SyncObj__raftState = LEADER
    transport.gate_election()
    assert raft._SyncObj__raftElectionDeadline == 0.0
    raft._SyncObj__raftState = FOLLOWER
    transport._admit(Node("n2"), {"type": "timeout_now", "term": 5})  # a transfer to us
    transport.gate_election()
    assert raft._SyncObj__raftElectionDeadline == 0.0  # campaigns at once
    transport.flush()
    assert sent == []


def test_a_disconnected_node_neither_asks_nor_campaigns() -> None:
    raft, clock = FakeRaft(), Clock()
    raft.connected = False
    transport, sent = make(raft, clock)
    transport.gate_election()
    transport.flush()
    assert sent == [] and transport.pre_votes_started == 0


def test_a_grant_for_a_round_the_term_has_overtaken_is_ignored() -> None:
    # The node asked at term 5, then voted in someone else's election (term 6) before
    # the grant arrived: campaigning on it would depose the leader it just voted for.
    raft, clock = FakeRaft(), Clock()
    transport, sent = make(raft, clock)
    transport.gate_election()
    transport.flush()
    round_ = next(m["round"] for _, m in sent if m["type"] == "pre_vote")
    raft.raftCurrentTerm = 6  # pysyncobj adopted the other candidate's term
    reply(transport, "n3", round_, granted=True)
    assert raft._SyncObj__raftElectionDeadline == pytest.approx(100.2)
    assert transport.pre_votes_won == 0


def test_a_grant_after_a_leader_was_heard_is_ignored() -> None:
    raft, clock = FakeRaft(), Clock()
    transport, sent = make(raft, clock)
    transport.gate_election()
    transport.flush()
    round_ = next(m["round"] for _, m in sent if m["type"] == "pre_vote")
    clock.now += 0.01
    transport._admit(Node("n2"), {"type": "append_entries", "term": 5, "entries": []})
    reply(transport, "n3", round_, granted=True)
    assert raft._SyncObj__raftElectionDeadline == pytest.approx(100.2)
    assert transport.pre_votes_won == 0


def test_a_win_overtaken_by_a_new_term_does_not_skip_the_next_pre_vote() -> None:
    raft, clock = FakeRaft(), Clock()
    transport, sent = make(raft, clock)
    transport.gate_election()
    transport.flush()
    round_ = next(m["round"] for _, m in sent if m["type"] == "pre_vote")
    reply(transport, "n3", round_, granted=True)
    assert raft._SyncObj__raftElectionDeadline == 0.0
    # Before doTick campaigned, pysyncobj voted for another candidate: new term, timer
    # reset. When that timer runs out, the node must ask again, not campaign at once.
    raft.raftCurrentTerm = 6
    raft._SyncObj__raftElectionDeadline = clock.now + 0.2
    clock.now += 0.3
    transport.gate_election()
    assert raft._SyncObj__raftElectionDeadline == pytest.approx(clock.now + 0.2)
    assert transport.pre_votes_started == 2


def test_voting_for_a_transfer_target_makes_a_node_stick_to_it() -> None:
    # The outgoing leader (and every other voter) has heard from no leader but
    # itself; without this it would grant the next asker at once, and a starved
    # follower could depose the transfer's target moments after it won.
    raft, clock = FakeRaft(), Clock()
    transport, sent = make(raft, clock)
    vote = {"type": "request_vote", "term": 6, "last_log_index": 40, "last_log_term": 5}
    assert transport._admit(Node("n2"), {**vote, "transfer": True})
    ask = {"type": "pre_vote", "round": 1, "term": 7, "last_log_index": 40, "last_log_term": 5}
    transport.deliver("n3", [pickle.dumps(ask)])
    transport.drain()
    transport.flush()
    assert sent == [("n3", {"type": "pre_vote_reply", "round": 1, "granted": False})]
    assert not transport._admit(Node("n3"), {**vote, "term": 7})


def test_a_flush_hands_a_waiting_peer_its_frames_instead_of_the_sender() -> None:
    raft, clock = FakeRaft(), Clock()
    transport, sent = make(raft, clock)
    transport.send(Node("n2"), {"type": "append_entries", "term": 5})
    transport.send(Node("n3"), {"type": "append_entries", "term": 5})
    answered: dict[str, list[Any]] = {}

    def slot(peer: str) -> Any:
        return lambda frames: answered.setdefault(peer, [pickle.loads(f) for f in frames])

    assert transport.flush({"n2": slot("n2")}) == 2
    assert answered == {"n2": [{"type": "append_entries", "term": 5}]}
    assert [p for p, _ in sent] == ["n3"]  # the other peer still goes by the sender
    sent.clear()
    assert transport.flush({"n3": slot("n3")}) == 0
    assert answered["n3"] == [] and sent == []  # a waiting peer always gets an answer


@pytest.mark.parametrize(
    ("state", "heartbeat_due", "election_due", "wait"),
    [
        (LEADER, 100.03, 0.0, 0.03),  # the leader sleeps until its next heartbeat
        (FOLLOWER, 0.0, 100.2, 0.05),  # a far election deadline: the longest sleep
        (FOLLOWER, 0.0, 100.01, 0.01),  # a near one: wakes for it
        (LEADER, 99.995, 0.0, 0.0),  # fell due during the tick: at once
        # Due before the tick and still pending: pysyncobj declined (a follower that
        # is connected to no one does not campaign); sleeping 0 would spin.
        (FOLLOWER, 0.0, 0.0, 0.05),
        (LEADER, 99.0, 0.0, 0.05),
    ],
)
def test_the_tick_thread_sleeps_until_the_next_timer(
    state: int, heartbeat_due: float, election_due: float, wait: float
) -> None:
    raft = FakeRaft()
    raft._SyncObj__raftState = state
    raft._SyncObj__newAppendEntriesTime = heartbeat_due  # type: ignore[attr-defined]
    raft._SyncObj__raftElectionDeadline = election_due
    assert next_tick_in(raft, 99.99, 100.0, 0.05) == pytest.approx(wait)


@pytest.mark.parametrize(
    ("role", "silent_s", "reported"),
    [
        ("follower", 0.05, "n2"),
        ("follower", 0.99, "n2"),
        ("follower", 1.01, ""),  # cut off from its leader: it knows of none
        ("follower", float("inf"), ""),
        ("candidate", 5.0, ""),
        ("leader", 5.0, "n2"),  # a leader's own id is never dropped here
    ],
)
def test_a_follower_stops_naming_a_leader_it_no_longer_hears(
    role: str, silent_s: float, reported: str
) -> None:
    assert known_leader(role, "n2", silent_s, 1.0) == reported


def test_a_single_node_cluster_campaigns_without_asking() -> None:
    raft, clock = FakeRaft(), Clock()
    sent: list[Any] = []
    transport = HeldTransport(
        raft, Node("n1"), [], sender=lambda *a: sent.append(a), wake=lambda: None,
        sticky_s=0.15, pre_vote=True, clock=clock,
    )  # fmt: skip
    transport.gate_election()
    assert raft._SyncObj__raftElectionDeadline == 0.0  # left expired: doTick campaigns
    transport.flush()
    assert sent == [] and transport.pre_votes_started == 0


def test_commands_forwarded_during_a_handover_wait_and_are_released_in_order() -> None:
    """A leader handing over (RaftBackend.transfer_leadership) appends no forwarded
    command until it lets them go; everything else still reaches pysyncobj at once."""
    raft, clock = FakeRaft(), Clock()
    raft._SyncObj__raftState = LEADER
    transport, _ = make(raft, clock)
    seen: list[tuple[str, dict[str, Any]]] = []
    transport.setOnMessageReceivedCallback(lambda node, message: seen.append((node.id, message)))
    command = {"type": "apply_command", "command": b"a", "request_id": 1}
    other = {"type": "response_vote", "term": 5}
    transport.hold_commands = True
    transport.deliver("n2", [pickle.dumps(command), pickle.dumps(other)])
    transport.deliver("n3", [pickle.dumps({**command, "command": b"b"})])
    transport.drain()
    assert seen == [("n2", other)]
    seen.clear()
    transport.hold_commands = False
    transport.deliver("n2", [pickle.dumps({**command, "command": b"c", "request_id": 2})])
    assert transport.release_commands() == 2
    transport.drain()
    assert [(peer, m["command"]) for peer, m in seen] == [("n2", b"a"), ("n3", b"b"), ("n2", b"c")]
    assert transport.release_commands() == 0
