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
import queue
import threading
import time
from pathlib import Path
from typing import Any

from consensus.raft.backend import RaftBackend
from consensus.statemachine import PutOp, Txn

NODES = ("n1", "n2", "n3")


class Net:
    """n1 and n2 on one in-memory network; n3 never answers. While ``hold`` is set,
    the leader's answers to forwarded commands are kept back in ``held``."""

    def __init__(self, tmp_path: Path) -> None:
        self.hold = threading.Event()
        self.held: list[bytes] = []
        self.backends: dict[str, RaftBackend] = {}
        for me in ("n1", "n2"):
            self.backends[me] = RaftBackend(
                me,
                [p for p in NODES if p != me],
                str(tmp_path / me),
                sender=lambda peer, frames, me=me: self.send(me, peer, frames),
            )

    def send(self, source: str, target: str, frames: list[bytes]) -> None:
        backend = self.backends.get(target)
        if backend is None:
            return
        if self.hold.is_set() and source == self.leader().node_id:
            late = [f for f in frames if pickle.loads(f)["type"] == "apply_command_response"]
            self.held.extend(late)
            frames = [f for f in frames if f not in late]
        backend.deliver(source, frames)

    def leader(self) -> RaftBackend:
        return next(b for b in self.backends.values() if b.status().role == "leader")

    def follower(self) -> RaftBackend:
        return next(b for b in self.backends.values() if b.status().role == "follower")

    def __enter__(self) -> Net:
        for backend in self.backends.values():
            backend.start()
        for backend in self.backends.values():
            for peer in self.backends:
                if peer != backend.node_id:
                    backend.peer_up(peer)
        wait_for(lambda: any(b.status().role == "leader" for b in self.backends.values()))
        return self

    def __exit__(self, *exc: object) -> None:
        for backend in self.backends.values():
            backend.stop()


def wait_for(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def put(backend: RaftBackend, key: str) -> queue.Queue[tuple[Any, Any]]:
    answers: queue.Queue[tuple[Any, Any]] = queue.Queue()
    backend.propose(Txn(success=(PutOp(key, b"v"),)), lambda r, e: answers.put((r, e)))
    return answers


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
