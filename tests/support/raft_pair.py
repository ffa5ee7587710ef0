"""Two real RaftBackends (tick threads, journals under a test directory; a third
configured peer never starts) on an in-memory network the test controls, for tests of
what happens to single messages between a leader and a follower."""

from __future__ import annotations

import queue
import time
from pathlib import Path
from typing import Any

from consensus.raft.backend import RaftBackend
from consensus.statemachine import PutOp, Txn

NODES = ("n1", "n2", "n3")


class RaftPair:
    """n1 and n2 joined; n3 never answers. Subclasses decide what gets through by
    overriding :meth:`pass_on` (frames from ``source`` to ``target``)."""

    def __init__(self, tmp_path: Path) -> None:
        self.backends: dict[str, RaftBackend] = {}
        for me in ("n1", "n2"):
            self.backends[me] = RaftBackend(
                me,
                [p for p in NODES if p != me],
                str(tmp_path / me),
                sender=lambda peer, frames, me=me: self.send(me, peer, frames),
            )

    def pass_on(self, source: str, target: str, frames: list[bytes]) -> list[bytes]:
        return frames

    def send(self, source: str, target: str, frames: list[bytes]) -> None:
        backend = self.backends.get(target)
        if backend is not None:
            backend.deliver(source, self.pass_on(source, target, frames))

    def leader(self) -> RaftBackend:
        return next(b for b in self.backends.values() if b.status().role == "leader")

    def follower(self) -> RaftBackend:
        return next(b for b in self.backends.values() if b.status().role == "follower")

    def __enter__(self) -> Any:
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
    """Propose a put of ``key`` on ``backend``; the queue gets ``(result, error)``."""
    answers: queue.Queue[tuple[Any, Any]] = queue.Queue()
    backend.propose(Txn(success=(PutOp(key, b"v"),)), lambda r, e: answers.put((r, e)))
    return answers
