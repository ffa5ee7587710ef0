"""Nothing leaves a node before what it vouches for is on disk.

Three in-process Raft backends (real files, real threads, no sockets) are
wired through a network that inspects every message at the moment it leaves
its sender, and checks the *sender's files on disk* right then:

* a vote request or vote grant for term T: the sender's term/vote file says
  term >= T and records the vote (for itself, or for the candidate);
* an append-entries acknowledgement up to index i: the sender's journal file
  holds a record with index >= i (it was fsynced, not just buffered).

A control run with the sync and the send swapped must be caught, which shows
the check can fail.
"""

from __future__ import annotations

import os
import pickle
import struct
import threading
import time
import zlib
from typing import Any

import msgpack
import pytest

from consensus.raft.backend import RaftBackend, RaftConfig
from consensus.raft.journal import MAGIC
from consensus.statemachine import PutOp, Txn
from tests.support.raft_cluster import leader_of, settled_leader, start_cluster

pytestmark = pytest.mark.integration

_REC = struct.Struct("<II")


def durable_last_index(path: str) -> int:
    """Highest entry index in the journal file as it is on disk right now."""
    with open(path, "rb") as f:
        data = f.read()
    assert data[: len(MAGIC)] == MAGIC
    pos, last = len(MAGIC), 0
    while pos + _REC.size <= len(data):
        length, crc = _REC.unpack_from(data, pos)
        payload = data[pos + _REC.size : pos + _REC.size + length]
        if len(payload) != length or zlib.crc32(payload) != crc:
            break
        last = struct.unpack_from("<Q", payload)[0]
        pos += _REC.size + length
    return last


def durable_meta(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            meta: dict[str, Any] = msgpack.unpackb(f.read(), raw=False)
            return meta
    except FileNotFoundError:
        return {}


class FlushBeforeSync(RaftBackend):
    """The bug the design rules out: messages released before the fsync."""

    def _tick_once(self) -> None:
        obj, transport, journal = self._obj, self._transport, self._journal
        assert obj is not None and transport is not None and journal is not None
        transport.drain()
        self._submit_proposals(obj)
        obj.doTick(0.0)
        transport.flush()
        journal.sync()
        self._publish_status(obj)


class Inspector:
    def __init__(self, root: str) -> None:
        self.root = root
        self.violations: list[str] = []
        self.checked = {"vote": 0, "ack": 0, "max_acked": 0, "committed": 0, "commit_checked": 0}
        self.lock = threading.Lock()

    def check(self, sender: str, frames: list[bytes]) -> None:
        journal = os.path.join(self.root, sender, "raft.journal")
        for frame in frames:
            msg = pickle.loads(frame)
            kind = msg.get("type")
            if kind in ("request_vote", "response_vote"):
                meta = durable_meta(journal + ".meta")
                with self.lock:
                    self.checked["vote"] += 1
                    if meta.get("term", 0) < msg["term"] or meta.get("voted_for") is None:
                        self.violations.append(f"{sender} sent {kind} term {msg['term']}: {meta}")
            elif kind == "next_node_idx" and msg.get("success"):
                acked = msg["next_node_idx"] - 1
                on_disk = durable_last_index(journal)
                with self.lock:
                    self.checked["ack"] += 1
                    self.checked["max_acked"] = max(self.checked["max_acked"], acked)
                    if on_disk < acked:
                        self.violations.append(f"{sender} acked {acked} with {on_disk} on disk")

    def check_commit(self, commit_index: int) -> None:
        """A write is answered only once its entry is on disk on a majority -- the
        leader's own copy counts only after its fsync, although its append-entries
        leave before it."""
        with self.lock:
            if commit_index <= self.checked["commit_checked"]:
                return
        on_disk = [
            durable_last_index(os.path.join(self.root, n, "raft.journal"))
            for n in ("n1", "n2", "n3")
        ]
        with self.lock:
            self.checked["commit_checked"] = max(self.checked["commit_checked"], commit_index)
            if sum(1 for last in on_disk if last >= commit_index) < 2:
                self.violations.append(f"answered at commit {commit_index}, on disk {on_disk}")


def run_cluster(tmp_path: Any, backend_class: type[RaftBackend]) -> Inspector:
    root = str(tmp_path)
    ids = ["n1", "n2", "n3"]
    inspector = Inspector(root)
    alive = set(ids)
    nodes = start_cluster(
        root,
        RaftConfig(election_timeout_min_s=0.15, election_timeout_max_s=0.3),
        deliver_if=lambda src, dst: src in alive and dst in alive,
        wait_for_leader=False,
        on_send=inspector.check,
        backend=backend_class,
    )

    def leader() -> str | None:
        for node_id in alive:
            if nodes[node_id].status().role == "leader":
                return node_id
        return None

    def write_some(count: int) -> None:
        """``count`` writes through the alive nodes, each resent until it commits: a
        write proposed to a follower that has not yet heard the new leader fails
        (not applied), and the check below needs every write in the log."""
        pending = set(range(count))
        deadline = time.monotonic() + 30
        while pending:
            assert time.monotonic() < deadline, f"{len(pending)} writes never committed"
            done = threading.Semaphore(0)
            failed: set[int] = set()

            def landed(
                i: int, failed: set[int], done: threading.Semaphore, target: RaftBackend
            ) -> Any:
                def callback(_result: Any, error: Any) -> None:
                    # Runs in the target's tick thread, where its pysyncobj state is current.
                    if error is None:
                        inspector.check_commit(target._obj.raftCommitIndex)  # type: ignore[union-attr]
                    else:
                        failed.add(i)
                    done.release()

                return callback

            todo = sorted(pending)
            # Waves of 12 (four per node): proposals pending together share an entry,
            # and the checks need many entries, acks and commits.
            for wave in range(0, len(todo), 12):
                batch = todo[wave : wave + 12]
                for i in batch:
                    target = nodes[sorted(alive)[i % len(alive)]]
                    target.propose(
                        Txn(success=(PutOp(f"k{i}", b"v" * 64),)), landed(i, failed, done, target)
                    )
                for _ in batch:
                    assert done.acquire(timeout=10), "a proposal never answered"
            pending = failed
            if pending:
                time.sleep(0.05)

    try:
        deadline = time.monotonic() + 10
        while leader() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        first = leader()
        assert first is not None
        write_some(300)
        # Depose the leader (it stops hearing and being heard) to force votes.
        alive.discard(first)
        for node_id in alive:
            nodes[node_id].peer_down(first)
        deadline = time.monotonic() + 10
        while leader() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        write_some(300)
        leader_now = leader()
        assert leader_now is not None
        status = nodes[leader_now].status()
        inspector.checked["committed"] = status.commit_index
        assert nodes[leader_now].read(lambda sm: sm.revision) == 600  # one per write
    finally:
        for node in nodes.values():
            node.stop()
    return inspector


def test_votes_and_acks_leave_only_after_fsync(tmp_path: Any) -> None:
    inspector = run_cluster(tmp_path, RaftBackend)
    # Acks are batched per tick and writes per entry, so there are few of them;
    # together they must cover every committed entry (the 600 writes are in them)
    # for the check to mean something.
    checked = inspector.checked
    assert checked["vote"] >= 2 and checked["max_acked"] >= checked["committed"] > 0, checked
    assert checked["committed"] >= 50 and checked["commit_checked"] >= checked["committed"] - 1, (
        checked
    )
    assert inspector.violations == []


def test_the_check_catches_messages_sent_before_the_fsync(tmp_path: Any) -> None:
    inspector = run_cluster(tmp_path, FlushBeforeSync)
    assert inspector.violations, "releasing messages before the fsync must be detected"


def test_a_failed_leader_fsync_stops_raft_there_and_answers_nothing(tmp_path: Any) -> None:
    """The leader's append-entries leave before its own fsync; if that fsync fails it
    must not count its copy toward a commit on the next tick -- it stops instead."""
    nodes = start_cluster(str(tmp_path), RaftConfig())
    try:
        leader = settled_leader(nodes)
        journal = leader.journal
        assert journal is not None

        def broken(_fd: int) -> None:
            raise OSError(5, "Input/output error")

        journal._fsync = broken  # type: ignore[method-assign]
        answers: list[Any] = []
        leader.propose(Txn(success=(PutOp("after-eio", b"v"),)), lambda r, e: answers.append(e))
        others = {n: b for n, b in nodes.items() if b is not leader}
        successor = leader_of(others, timeout=10)
        time.sleep(0.3)
        assert leader.failed is not None and leader.status().role == "unknown"
        assert all(error is not None for error in answers), "acknowledged without its fsync"
        assert successor.node_id != leader.node_id
    finally:
        for node in nodes.values():
            node.stop()
