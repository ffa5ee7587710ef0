"""Quiet heartbeats (consensus/raft/quiet.py): when a leader's group is at rest, what a
leader stamps on its heartbeats, and what a follower does with the stamp. No threads, no
sockets: the pure policy, and the transport over a stand-in for pysyncobj's state."""

from __future__ import annotations

import pickle
import random
from typing import Any

import pytest
from pysyncobj.node import Node

from consensus.raft.backend import RaftConfig, next_tick_in
from consensus.raft.quiet import QuietLeader, quiet_deadline, quiet_hold_s, stamp_of
from consensus.raft.transport import HeldTransport
from tests.unit.consensus.test_pre_vote import FOLLOWER, LEADER, Clock, FakeRaft

AT_REST = (5, 40, 40, 0)  # term, last index, commit index, election requests


def test_a_settled_group_goes_quiet_only_after_resting_for_after_s() -> None:
    policy = QuietLeader(after_s=1.0, heartbeat_s=0.5)
    assert not policy.observe(10.0, AT_REST, settled=True)
    assert not policy.observe(10.9, AT_REST, settled=True)
    assert policy.observe(11.0, AT_REST, settled=True)
    assert policy.observe(30.0, AT_REST, settled=True)
    assert policy.entered == 1  # counted once per rest, not once per tick


@pytest.mark.parametrize(
    "disturbed",
    [
        (5, 41, 40, 0),  # a write was appended
        (5, 40, 41, 0),  # ... or committed
        (6, 40, 40, 0),  # a new term
        (5, 40, 40, 1),  # someone asked for a (pre-)vote
    ],
)
def test_any_change_ends_the_rest_at_once_and_restarts_the_wait(
    disturbed: tuple[int, int, int, int],
) -> None:
    policy = QuietLeader(after_s=1.0, heartbeat_s=0.5)
    policy.observe(10.0, AT_REST, settled=True)
    assert policy.observe(11.0, AT_REST, settled=True)
    assert not policy.observe(11.1, disturbed, settled=True)
    assert not policy.observe(12.0, disturbed, settled=True)  # 0.9 s at the new rest
    assert policy.observe(12.1, disturbed, settled=True)
    assert policy.entered == 2


def test_an_unsettled_group_never_goes_quiet() -> None:
    """A follower behind or disconnected, or a proposal or read pending."""
    policy = QuietLeader(after_s=1.0, heartbeat_s=0.5)
    for t in range(10, 20):
        assert not policy.observe(float(t), AT_REST, settled=False)
    assert not policy.observe(20.5, AT_REST, settled=True)  # the wait starts when it settles
    assert policy.observe(21.5, AT_REST, settled=True)


def test_off_when_the_quiet_interval_is_zero() -> None:
    policy = QuietLeader(after_s=0.0, heartbeat_s=0.0)
    assert not policy.enabled
    assert not policy.observe(10.0, AT_REST, settled=True)
    assert not policy.observe(99.0, AT_REST, settled=True)


def test_check_quorum_holds_several_quiet_heartbeats() -> None:
    policy = QuietLeader(after_s=0.0, heartbeat_s=0.5)
    assert policy.fallback_s(1.0) == 1.0  # not quiet: the configured window
    policy.observe(1.0, AT_REST, settled=True)
    assert policy.observe(1.0, AT_REST, settled=True)
    assert policy.fallback_s(1.0) == 2.0
    assert policy.fallback_s(5.0) == 5.0


@pytest.mark.parametrize(
    ("message", "stamp"),
    [
        ({"quiet": 0.5}, 0.5),
        ({}, None),
        ({"quiet": 0.0}, None),
        ({"quiet": -1.0}, None),
        ({"quiet": 3600.0}, None),  # would silence failure detection for hours
        ({"quiet": "0.5"}, None),
        ({"quiet": 1}, None),  # not a float: not something a leader of ours sends
        ({"quiet": float("nan")}, None),
    ],
)
def test_only_a_sane_stamp_is_honoured(message: dict[str, Any], stamp: float | None) -> None:
    assert stamp_of(message) == stamp


def test_a_quiet_deadline_waits_three_to_six_stamped_beats() -> None:
    rng = random.Random(7)
    draws = [quiet_deadline(100.0, 0.5, rng) - 100.0 for _ in range(1000)]
    assert 1.5 <= min(draws) < 1.6 and 2.9 < max(draws) <= 3.0
    assert quiet_hold_s(0.5) == 1.5


@pytest.mark.parametrize(
    "bad",
    [
        {"quiet_heartbeat_s": 0.04},  # not slower than the normal heartbeat
        {"quiet_heartbeat_s": 11.0},
        {"quiet_after_s": -1.0},
        {"rest_tick_s": 0.01},
    ],
)
def test_config_refuses_quiet_settings_that_make_no_sense(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RaftConfig(**bad)


# -- the transport --------------------------------------------------------------


class Raft(FakeRaft):
    """FakeRaft that takes append-entries as pysyncobj does: the sender becomes the
    leader, the term is adopted and the election timer restarts in the normal range."""

    def __init__(self) -> None:
        super().__init__()
        self._SyncObj__raftLeader: Node | None = None
        self._SyncObj__transferInProgress = False
        self.now = 100.0

    def take(self, node: Node, message: dict[str, Any]) -> None:
        if message["type"] == "append_entries" and message["term"] >= self.raftCurrentTerm:
            self.raftCurrentTerm = message["term"]
            self._SyncObj__raftLeader = node
            self._SyncObj__raftElectionDeadline = self.now + self._SyncObj__generateRaftTimeout()


def follower() -> tuple[Raft, Clock, HeldTransport, list[tuple[str, Any]]]:
    raft, clock = Raft(), Clock()
    sent: list[tuple[str, Any]] = []
    transport = HeldTransport(
        raft, Node("n1"), [Node("n2"), Node("n3")],
        sender=lambda peer, frames: sent.extend((peer, pickle.loads(f)) for f in frames),
        wake=lambda: None, sticky_s=0.15, pre_vote=True, clock=clock,
    )  # fmt: skip
    transport.setOnMessageReceivedCallback(raft.take)
    for peer in ("n2", "n3"):
        transport.peer_up(peer)
    transport.drain()
    return raft, clock, transport, sent


def heartbeat(transport: HeldTransport, quiet: float | None = None, term: int = 5) -> None:
    message: dict[str, Any] = {"type": "append_entries", "term": term, "commit_index": 40}
    message["entries"], message["prevLogIdx"], message["prevLogTerm"] = [], 40, 5
    if quiet is not None:
        message["quiet"] = quiet
    transport.deliver("n2", [pickle.dumps(message)])
    transport.drain()


def pre_vote_from_n3(transport: HeldTransport, sent: list[tuple[str, Any]]) -> bool:
    ask = {"type": "pre_vote", "round": 1, "term": 6, "last_log_index": 99, "last_log_term": 5}
    transport.deliver("n3", [pickle.dumps(ask)])
    transport.drain()
    transport.flush()
    answer = sent.pop()
    assert answer[0] == "n3" and answer[1]["type"] == "pre_vote_reply"
    return bool(answer[1]["granted"])


def test_a_quiet_heartbeat_moves_the_election_timer_to_the_quiet_range() -> None:
    raft, _clock, transport, _ = follower()
    heartbeat(transport, quiet=0.5)
    assert 101.5 <= raft._SyncObj__raftElectionDeadline <= 103.0
    assert transport.quiet_stamp == 0.5
    heartbeat(transport)  # the leader is busy again: the normal range at once
    assert raft._SyncObj__raftElectionDeadline == pytest.approx(100.2)
    assert transport.quiet_stamp is None


def test_a_stamp_from_a_stale_term_or_during_a_transfer_changes_nothing() -> None:
    raft, _clock, transport, _ = follower()
    raft.raftCurrentTerm = 7
    raft._SyncObj__raftElectionDeadline = 100.2
    heartbeat(transport, quiet=0.5, term=5)  # an old leader's
    assert raft._SyncObj__raftElectionDeadline == pytest.approx(100.2)
    raft.raftCurrentTerm = 5
    raft._SyncObj__transferInProgress = True  # the leader asked for an election
    heartbeat(transport, quiet=0.5)
    assert raft._SyncObj__raftElectionDeadline <= 100.2


def test_a_quiet_leader_counts_as_heard_for_three_of_its_beats() -> None:
    _raft, clock, transport, sent = follower()
    heartbeat(transport, quiet=0.5)
    clock.now += 1.0  # two quiet beats later: the leader is still live for us
    assert not pre_vote_from_n3(transport, sent)
    clock.now += 0.6  # past three quiet beats: it may be gone
    assert pre_vote_from_n3(transport, sent)


def test_without_the_stamp_the_normal_stickiness_applies() -> None:
    _raft, clock, transport, sent = follower()
    heartbeat(transport)
    clock.now += 0.1
    assert not pre_vote_from_n3(transport, sent)
    clock.now += 0.1  # past the 150 ms minimum election timeout
    assert pre_vote_from_n3(transport, sent)


def test_losing_the_link_to_a_quiet_leader_ends_the_wait() -> None:
    raft, clock, transport, sent = follower()
    heartbeat(transport, quiet=0.5)
    assert raft._SyncObj__raftElectionDeadline >= 101.5
    clock.now += 0.3
    transport.peer_down("n2")
    transport.drain()
    assert raft._SyncObj__raftElectionDeadline == pytest.approx(100.5)  # now + 0.2
    assert transport.quiet_stamp is None
    assert pre_vote_from_n3(transport, sent)  # 0.3 s since the leader was heard


def test_a_quiet_leader_stamps_its_append_entries_and_nothing_else() -> None:
    _raft, _clock, transport, sent = follower()
    transport.quiet_s = 0.5
    beat = {"type": "append_entries", "term": 5, "commit_index": 40, "entries": []}
    transport.send(Node("n2"), beat)
    transport.send(Node("n3"), {"type": "request_vote", "term": 6})
    transport.quiet_s = 0.0
    transport.send(Node("n2"), beat)
    transport.flush()
    # (the outbox is per peer: each peer's frames in order)
    assert [(p, m.get("quiet")) for p, m in sent] == [("n2", 0.5), ("n2", None), ("n3", None)]
    assert "quiet" not in beat  # pysyncobj's own message is not changed


# -- the resting tick thread ------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "due", "wait"),
    [
        (LEADER, 100.5, 0.5),  # the next (quiet) heartbeat
        (LEADER, 150.0, 1.0),  # nothing due for long: the rest bound
        (FOLLOWER, 102.0, 1.0),  # a quiet follower's far election deadline
        (FOLLOWER, 99.0, 0.05),  # overdue and not acted on: looked at again soon
        (LEADER, 99.0, 0.05),
    ],
)
def test_a_resting_tick_sleeps_to_the_next_timer_but_not_past_an_overdue_one(
    state: int, due: float, wait: float
) -> None:
    raft = FakeRaft()
    raft._SyncObj__raftState = state
    raft._SyncObj__newAppendEntriesTime = due  # type: ignore[attr-defined]
    raft._SyncObj__raftElectionDeadline = due
    assert next_tick_in(raft, 99.99, 100.0, 1.0, overdue=0.05) == pytest.approx(wait)
