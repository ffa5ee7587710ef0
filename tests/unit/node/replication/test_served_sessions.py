"""``sync.ServedSessions``: when a round may leave a pair to the peer that just synced it."""

from __future__ import annotations

from gossip.messages import SyncBegin, SyncDone, SyncLeaves, SyncMessage, SyncNodes, SyncValues
from node.replication.sync import Members, ServedSessions

LIVE = (("n1", "a1"), ("n2", "a2"), ("n3", "a3"))
SPACE = "population|n1|n2"


def begin(session: int) -> SyncBegin:
    return SyncBegin(SPACE, session, 16, 3, b"r" * 16)


def nodes(session: int) -> SyncNodes:
    return SyncNodes(SPACE, session, 1, (0,), b"h" * 16 * 16)


def values(session: int, *, final: bool) -> SyncValues:
    return SyncValues(SPACE, session, (("k", b"v"),), () if final else ("k",), final)


def served(
    sessions: ServedSessions,
    message: SyncMessage,
    reply: SyncMessage | None,
    *,
    keys: int = 0,
    rounds: int = 0,
    version: int = 1,
    members: Members = LIVE,
    members_after: Members | None = None,
) -> None:
    """One step served, as the driver feeds it: before answering, then after."""
    sessions.begin("population", "n1", message, rounds=rounds, version=version, members=members)
    after = members if members_after is None else members_after
    sessions.step("population", "n1", message, reply, keys=keys, members=after)


def test_a_session_begun_since_the_previous_round_began_covers_the_pair() -> None:
    sessions = ServedSessions()
    served(sessions, begin(7), SyncDone(SPACE, 7), rounds=4, version=9)
    covering = sessions.covering("population", "n1", since=4, members=LIVE)
    assert covering is not None and (covering.keys, covering.version) == (0, 9)
    # Begun before this node's previous round began: a change made here since may
    # be in neither, so this round must sync.
    assert sessions.covering("population", "n1", since=5, members=LIVE) is None
    # Other tiers and other peers have their own sessions.
    assert sessions.covering("agent", "n1", since=0, members=LIVE) is None
    assert sessions.covering("population", "n2", since=0, members=LIVE) is None


def test_what_a_session_says_is_what_was_here_when_it_began() -> None:
    # It ends while 6 rounds have begun here, and the store has moved on meanwhile:
    # a write made during the session may sit in a subtree it had already compared.
    sessions = ServedSessions()
    served(sessions, begin(1), nodes(1), rounds=4, version=10)
    served(sessions, values(1, final=False), values(1, final=True), rounds=6, version=12)
    assert sessions.covering("population", "n1", since=5, members=LIVE) is None
    covering = sessions.covering("population", "n1", since=4, members=LIVE)
    assert covering is not None and (covering.began, covering.version) == (4, 10)


def test_a_session_not_over_yet_covers_nothing() -> None:
    # The peer may fail before its last message; until the session is over here,
    # nothing says the pair was reconciled.
    sessions = ServedSessions()
    served(sessions, begin(1), nodes(1))
    served(sessions, nodes(1), SyncLeaves(SPACE, 1, (5,), ((("k", b"d"),),)))
    assert sessions.covering("population", "n1", since=0, members=LIVE) is None
    served(sessions, values(1, final=False), values(1, final=True), keys=2)
    covering = sessions.covering("population", "n1", since=0, members=LIVE)
    assert covering is not None and covering.keys == 2


def test_the_last_message_received_ends_a_session_too() -> None:
    sessions = ServedSessions()
    served(sessions, begin(1), nodes(1), keys=1)
    served(sessions, values(1, final=True), None, keys=3)
    covering = sessions.covering("population", "n1", since=0, members=LIVE)
    assert covering is not None and covering.keys == 4  # every step's keys counted


def test_a_session_over_another_live_set_covers_nothing() -> None:
    # The live set decides which keys are in the pair's space.
    sessions = ServedSessions()
    served(sessions, begin(1), SyncDone(SPACE, 1))
    assert sessions.covering("population", "n1", since=0, members=LIVE[:2]) is None


def test_a_session_whose_live_set_changed_part_way_covers_nothing() -> None:
    # Its first steps compared trees of the old placement; a key that moved into the
    # pair's space may be in a subtree found equal then.
    sessions = ServedSessions()
    served(sessions, begin(1), nodes(1))
    served(sessions, nodes(1), SyncDone(SPACE, 1), members_after=LIVE[:2])
    assert sessions.covering("population", "n1", since=0, members=LIVE) is None
    assert sessions.covering("population", "n1", since=0, members=LIVE[:2]) is None


def test_steps_of_a_session_whose_beginning_was_not_seen_are_ignored() -> None:
    sessions = ServedSessions()
    served(sessions, values(4, final=True), None)  # began before this node restarted
    assert sessions.covering("population", "n1", since=0, members=LIVE) is None
    served(sessions, begin(5), nodes(5))
    served(sessions, values(4, final=True), None)  # a late step of an older session
    assert sessions.covering("population", "n1", since=0, members=LIVE) is None


def test_a_new_session_replaces_the_last_one() -> None:
    sessions = ServedSessions()
    served(sessions, begin(1), SyncDone(SPACE, 1), rounds=1)
    served(sessions, begin(2), nodes(2), rounds=2)  # still running
    assert sessions.covering("population", "n1", since=1, members=LIVE) is None


def test_sessions_of_members_no_longer_live_are_forgotten() -> None:
    sessions = ServedSessions()
    served(sessions, begin(1), SyncDone(SPACE, 1))
    sessions.keep_only(["n2", "n3"])
    assert sessions.covering("population", "n1", since=0, members=LIVE) is None
