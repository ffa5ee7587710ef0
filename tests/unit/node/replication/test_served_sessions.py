"""``sync.ServedSessions``: when a round may leave a pair to the peer that just synced it."""

from __future__ import annotations

from gossip.messages import SyncBegin, SyncDone, SyncLeaves, SyncNodes, SyncValues
from node.replication.sync import ServedSessions

LIVE = (("n1", "a1"), ("n2", "a2"), ("n3", "a3"))
SPACE = "population|n1|n2"


def begin(session: int) -> SyncBegin:
    return SyncBegin(SPACE, session, 16, 3, b"r" * 16)


def nodes(session: int) -> SyncNodes:
    return SyncNodes(SPACE, session, 1, (0,), b"h" * 16 * 16)


def values(session: int, *, final: bool) -> SyncValues:
    return SyncValues(SPACE, session, (("k", b"v"),), () if final else ("k",), final)


def served(sessions: ServedSessions, message: object, reply: object, **kw: object) -> None:
    args: dict[str, object] = {"keys": 0, "rounds": 0, "version": 1, "members": LIVE}
    args.update(kw)
    sessions.step("population", "n1", message, reply, **args)  # type: ignore[arg-type]


def test_a_session_served_to_its_end_since_the_previous_round_covers_the_pair() -> None:
    sessions = ServedSessions()
    served(sessions, begin(7), SyncDone(SPACE, 7), rounds=4, version=9)
    covering = sessions.covering("population", "n1", since=4, members=LIVE)
    assert covering is not None and (covering.keys, covering.version) == (0, 9)
    # Served before this node's previous round began: that round (or the peer's
    # session) may have missed a change made since, so this round must sync.
    assert sessions.covering("population", "n1", since=5, members=LIVE) is None
    # Other tiers and other peers have their own sessions.
    assert sessions.covering("agent", "n1", since=0, members=LIVE) is None
    assert sessions.covering("population", "n2", since=0, members=LIVE) is None


def test_a_session_not_over_yet_covers_nothing() -> None:
    # The peer may fail before its last message; until the session is over here,
    # nothing says the pair was reconciled.
    sessions = ServedSessions()
    served(sessions, begin(1), nodes(1))
    served(sessions, nodes(1), SyncLeaves(SPACE, 1, (5,), ((("k", b"d"),),)))
    assert sessions.covering("population", "n1", since=0, members=LIVE) is None
    served(sessions, values(1, final=False), values(1, final=True), keys=2, rounds=3)
    covering = sessions.covering("population", "n1", since=3, members=LIVE)
    assert covering is not None and covering.keys == 2  # every step's keys counted


def test_the_last_message_received_ends_a_session_too() -> None:
    sessions = ServedSessions()
    served(sessions, begin(1), nodes(1), keys=0)
    served(sessions, values(1, final=True), None, keys=3, rounds=2)
    covering = sessions.covering("population", "n1", since=2, members=LIVE)
    assert covering is not None and covering.keys == 3


def test_a_session_over_another_live_set_covers_nothing() -> None:
    # The live set decides which keys are in the pair's space.
    sessions = ServedSessions()
    served(sessions, begin(1), SyncDone(SPACE, 1))
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
