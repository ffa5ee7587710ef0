"""A follower's forwarded command whose answer from the leader arrives late.

Two real RaftBackends (tick threads, journals in a temporary directory; a third
configured peer never starts) joined by a network the test controls. A follower
forwards a write; the leader's ``apply_command_response`` is held back while its
append-entries go through, so the follower has applied the entry before it reads
where the leader put its command. Frames reach a follower by two paths (the
leader's own link, and the answers to the follower's calls), so this happens
under load: 0.3-0.6% of the writes sent to followers came back "outcome unknown"
with no leader change (64 callers, 15 s, ``make cluster``). pysyncobj answers a
late response UNKNOWN_OUTCOME; the follower knows better, because it applied that
entry itself.
"""

from __future__ import annotations

import pickle
import threading
from pathlib import Path

from tests.support.raft_pair import RaftPair, put, wait_for


class Net(RaftPair):
    """While ``hold`` is set, the leader's answers to forwarded commands are kept back
    in ``held``."""

    def __init__(self, tmp_path: Path) -> None:
        super().__init__(tmp_path)
        self.hold = threading.Event()
        self.held: list[bytes] = []

    def pass_on(self, source: str, target: str, frames: list[bytes]) -> list[bytes]:
        if self.hold.is_set() and source == self.leader().node_id:
            late = [f for f in frames if pickle.loads(f)["type"] == "apply_command_response"]
            self.held.extend(late)
            frames = [f for f in frames if f not in late]
        return frames


def test_a_late_answer_to_a_forwarded_write_is_the_entry_the_follower_applied(
    tmp_path: Path,
) -> None:
    with Net(tmp_path) as net:
        leader, follower = net.leader(), net.follower()
        result, error = put(follower, "warm").get(timeout=10)  # answers in order: fine
        assert error is None and result.revision == 1

        net.hold.set()
        answers = put(follower, "late")
        wait_for(lambda: follower._sm.revision == 2 and net.held)
        assert answers.empty()  # the follower applied it, but waits for the leader's word
        net.hold.clear()
        for frame in net.held:
            follower.deliver(leader.node_id, [frame])
        result, error = answers.get(timeout=10)
        assert error is None, error
        assert result.revision == 2
        assert follower._transport is not None and follower._transport.late_answers == 1

        # and the next write goes through as usual
        result, error = put(follower, "after").get(timeout=10)
        assert error is None and result.revision == 3
