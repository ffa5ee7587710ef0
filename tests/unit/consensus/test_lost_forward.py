"""A follower's forwarded command whose request, or whose answer, is lost.

Two real RaftBackends (tick threads, journals in a temporary directory; a third
configured peer never starts) joined by a network the test controls, which drops
the next ``apply_command`` a follower sends, or the leader's next
``apply_command_response``. A peer link drops what it holds when a call fails, so
either happens when a link call times out. pysyncobj sends neither again: the
caller waited for its own deadline (10 s in a node) and heard "not committed; it
may still be applied". The follower now sends the command again, and the leader
appends it once (consensus/raft/forwarding.py).
"""

from __future__ import annotations

import pickle
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from consensus.raft.forwarding import RESEND_AFTER_S
from tests.support.raft_pair import RaftPair, put, wait_for


class Net(RaftPair):
    """``drop`` names a message type: the next frame of that type is dropped (and
    kept in ``dropped``)."""

    def __init__(self, tmp_path: Path) -> None:
        super().__init__(tmp_path)
        self.lock = threading.Lock()
        self.drop: str | None = None
        self.dropped: list[dict[str, Any]] = []

    def pass_on(self, source: str, target: str, frames: list[bytes]) -> list[bytes]:
        kept = []
        for frame in frames:
            message = pickle.loads(frame)
            with self.lock:
                if self.drop is not None and message["type"] == self.drop:
                    self.drop = None
                    self.dropped.append(message)
                    continue
            kept.append(frame)
        return kept


@pytest.mark.parametrize("lost", ["apply_command", "apply_command_response"])
def test_a_forwarded_write_whose_frame_is_lost_is_applied_once(tmp_path: Path, lost: str) -> None:
    with Net(tmp_path) as net:
        leader, follower = net.leader(), net.follower()
        result, error = put(follower, "warm").get(timeout=10)
        assert error is None and result.revision == 1

        net.drop = lost
        started = time.monotonic()
        result, error = put(follower, "lost").get(timeout=5 * RESEND_AFTER_S + 2)
        assert error is None, error
        assert [m["type"] for m in net.dropped] == [lost]
        assert time.monotonic() - started < 5 * RESEND_AFTER_S + 2
        assert result.revision == 2  # applied once: one revision, not two
        wait_for(lambda: leader._sm.revision == follower._sm.revision == 2)
        assert leader._sm.get("lost") is not None and leader._sm.get("lost").version == 1

        result, error = put(follower, "after").get(timeout=10)
        assert error is None and result.revision == 3
        assert follower._transport is not None and follower._transport.forwards.resent >= 1
        ledger = leader._transport.forward_ledger if leader._transport is not None else None
        assert ledger is not None
        if lost == "apply_command_response":  # the copy got the first send's answer
            assert ledger.copies_answered >= 1


def test_an_answer_meant_for_the_followers_previous_process_is_ignored(tmp_path: Path) -> None:
    """Request ids restart at 1 with the process, so an answer the leader sent to the
    follower's previous process can name a request id the new one is waiting on."""
    with Net(tmp_path) as net:
        leader, follower = net.leader(), net.follower()
        result, error = put(follower, "warm").get(timeout=10)
        assert error is None and result.revision == 1

        net.drop = "apply_command"  # the caller waits: its copy goes in 0.5 s
        answers = put(follower, "new")
        wait_for(lambda: net.dropped)
        assert follower._obj is not None and follower._transport is not None
        (request_id,) = list(follower._obj._SyncObj__commandsWaitingReply)
        stale = {
            "type": "apply_command_response",
            "request_id": request_id,
            "nonce": follower._transport.forwards.nonce ^ 1,
            "log_idx": 1,  # the warm-up write's entry
            "log_term": leader.status().term,
        }
        follower.deliver(leader.node_id, [pickle.dumps(stale)])
        result, error = answers.get(timeout=5 * RESEND_AFTER_S + 2)
        assert error is None, error
        assert result.revision == 2  # its own write's result
